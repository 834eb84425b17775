"""Issue 24 item 3: the bucketed static decode step (engine/static_step.py: code predictor,
talker and sampling, the step a CUDA graph replays per bucket) gives the dynamic step's
codes on CPU, greedy and seeded, for mixed batches whose rows join and leave across bucket
boundaries; and the graph bookkeeping (keys, KV reallocations) on CPU with a stand-in graph."""

from __future__ import annotations

import dataclasses

import torch

from qwen3ttsd.engine import cuda_graphs, static_step
from qwen3ttsd.engine.static_step import bucket_of
from tests.test_engine_batched import Run, backend, mixed_requests, run_batched


def test_buckets():
    assert [bucket_of(n) for n in (1, 2, 3, 5, 8, 9, 33, 64, 65)] == [1, 2, 4, 8, 8, 16, 64, 64, None]


def _requests() -> tuple[list, list[int]]:
    reqs = mixed_requests()[:6]
    greedy = [dataclasses.replace(r, top_k=1, seed=7) for r in reqs[:2]]  # argmax codebook 0
    # joins at steps 3 and 6, capped rows leave: the batch crosses buckets 1, 2 and 4 both ways
    return reqs + greedy, [0, 0, 0, 3, 3, 6, 0, 6]


def _counting(monkeypatch) -> list[int]:
    steps: list[int] = []
    orig = static_step.StaticStep.step

    def counting(self, rows):
        steps.append(len(rows))
        return orig(self, rows)

    monkeypatch.setattr(static_step.StaticStep, "step", counting)
    return steps


def _codes(engine, reqs, admit_at, static: bool, monkeypatch, **options) -> list:
    monkeypatch.setattr(static_step, "CPU_STATIC", static)
    return [r.all_codes for r in run_batched(engine, reqs, admit_at=admit_at, **options)]


def test_bucketed_static_equals_dynamic_codes(custom_engine, monkeypatch):
    reqs, admit_at = _requests()
    steps = _counting(monkeypatch)
    dyn = _codes(custom_engine, reqs, admit_at, False, monkeypatch)
    assert not steps
    sta = _codes(custom_engine, reqs, admit_at, True, monkeypatch)
    assert {bucket_of(n) for n in steps} >= {1, 2, 4}, steps  # crosses bucket boundaries both ways
    for i, (a, b) in enumerate(zip(dyn, sta)):
        assert a.shape[0] > 0 and torch.equal(a, b), i


def test_sampling_off_per_head_keeps_the_rows_generator_in_step(custom_engine, monkeypatch):
    """A row that samples one head and not the other: the static step draws nothing from
    its generator for the greedy head (as the dynamic step), so its later draws agree."""
    reqs = mixed_requests()[:4]
    settings = [{"subtalker_dosample": False}, {"do_sample": False}, {}, {"subtalker_temperature": 0.0}]
    orig = __import__("qwen3ttsd.engine.batched", fromlist=["Row"]).Row.__init__

    def row_init(self, stream, prompt, *a):
        i = int(stream.request.seed) - 1000
        prompt.settings = {**prompt.settings, **settings[i % 4]}
        orig(self, stream, prompt, *a)

    monkeypatch.setattr("qwen3ttsd.engine.batched.Row.__init__", row_init)
    steps = _counting(monkeypatch)
    dyn = _codes(custom_engine, reqs, [0, 0, 2, 2], False, monkeypatch)
    sta = _codes(custom_engine, reqs, [0, 0, 2, 2], True, monkeypatch)
    assert steps
    for i, (a, b) in enumerate(zip(dyn, sta)):
        assert a.shape[0] > 0 and torch.equal(a, b), i


class _Graph:
    """A stand-in capture on CPU: 'replays' the captured step eagerly with the rows' own
    generators (CPU generators have no Philox offset to lend to a carrier)."""

    def __init__(self, step, slots: int, log: list) -> None:
        self.step, self.slots, self.log = step, slots, log

    def replay(self, rows) -> None:
        self.log.append(len(rows))
        pad = [None] * (self.slots - len(rows))
        self.step(([g if s else None for g, s, _ in rows] + pad, [g if t else None for g, _, t in rows] + pad))


def _stand_in_graphs(monkeypatch) -> tuple[list, list]:
    """BucketGraphs capture _Graph stand-ins; (captures: (slots, runs per key), replays)."""
    replays: list[int] = []
    captured: list[tuple] = []

    def capture(self, step, slots, device):
        captured.append((slots, tuple(self.runs.values())))
        return _Graph(step, slots, replays)

    monkeypatch.setattr(cuda_graphs.BucketGraphs, "capture", capture)
    return captured, replays


def test_graphs_survive_a_quiet_spell(custom_engine, monkeypatch):
    """With graphs, the KV is kept when the last row leaves: the next request replays the
    graphs captured for the one before (no KV reallocation, no capture)."""
    captured, replays = _stand_in_graphs(monkeypatch)
    monkeypatch.setattr(static_step, "CPU_STATIC", True)
    b = backend(custom_engine, 4)
    b.static = static_step.StaticStep(b, graphs=True)
    req = dataclasses.replace(mixed_requests()[0], max_frames=8)
    for spell in range(2):
        run = Run(req)
        b.admit(run.stream)
        while b.active:
            b.step()
        assert run.result[0] == "done"
        if spell == 0:
            generation, first = b.kv.generation, len(captured)
            assert first == 1 and replays, (captured, replays)
    assert b.kv.generation == generation and len(captured) == first
    assert b.kv.k[0] is not None and b.kv.slots == 4


def test_graph_bookkeeping_on_cpu(custom_engine, monkeypatch):
    """Graphs on (a stand-in capture): the KV holds a slot per row the backend may hold from
    its first reservation (joins never reallocate it, which would drop the graphs), each
    (bucket, warpers) key is captured once per KV generation after WARM_RUNS eager steps,
    and the codes equal the dynamic step's."""
    from qwen3ttsd.engine import batched
    from qwen3ttsd.engine.kv_cache import RowKV

    reqs, admit_at = _requests()
    captured, replays = _stand_in_graphs(monkeypatch)
    sizes: list[tuple[int, int]] = []   # (slots, cap) after each reallocation
    graphs: list = []

    def static_on(backend, on):
        s = static_step.StaticStep(backend, graphs=True)
        graphs.append(s.graphs)
        return s

    orig_reserve = RowKV.reserve

    def reserve(self, slots, length):
        gen = self.generation
        orig_reserve(self, slots, length)
        if self.generation != gen:
            sizes.append((self.slots, self.cap))

    monkeypatch.setattr(RowKV, "reserve", reserve)
    dyn = _codes(custom_engine, reqs, admit_at, False, monkeypatch)
    sizes.clear()
    monkeypatch.setattr(batched, "static_step", static_on)
    sta = _codes(custom_engine, reqs, admit_at, True, monkeypatch, max_batch=8)
    for i, (a, b) in enumerate(zip(dyn, sta)):
        assert torch.equal(a, b), i
    assert sizes and all(slots == 8 for slots, _ in sizes), sizes   # the bucket of max_batch, at once
    assert [cap for _, cap in sizes] == sorted(set(cap for _, cap in sizes)), sizes  # only growth reallocates
    assert captured and replays, (captured, replays)
    assert all(runs and max(runs) == cuda_graphs.WARM_RUNS + 1 for _, runs in captured), captured
    (g,) = graphs
    assert g.captures == len(captured) and not g.failed
