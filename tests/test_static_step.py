"""Issue 24 item 3: the bucketed static talker step (engine/static_step.py, the step a CUDA
graph replays per bucket) gives the dynamic step's codes on CPU, greedy and seeded, for
mixed batches whose rows join and leave across bucket boundaries."""

from __future__ import annotations

import dataclasses

import torch

from qwen3ttsd.engine import static_step
from qwen3ttsd.engine.static_step import bucket_of
from tests.test_engine_batched import mixed_requests, run_batched


def test_buckets():
    assert [bucket_of(n) for n in (1, 2, 3, 5, 8, 9, 33, 64, 65)] == [1, 2, 4, 8, 8, 16, 64, 64, None]


def _codes(engine, reqs, admit_at, static: bool, monkeypatch) -> list:
    monkeypatch.setattr(static_step, "CPU_STATIC", static)
    return [r.all_codes for r in run_batched(engine, reqs, admit_at=admit_at)]


def test_bucketed_static_equals_dynamic_codes(custom_engine, monkeypatch):
    reqs = mixed_requests()[:6]
    greedy = [dataclasses.replace(r, top_k=1, seed=7) for r in reqs[:2]]  # argmax codebook 0
    reqs = reqs + greedy
    # joins at steps 3 and 6, capped rows leave: the batch crosses buckets 1, 2 and 4 both ways
    admit_at = [0, 0, 0, 3, 3, 6, 0, 6]
    steps = []
    orig = static_step.StaticTalker.step

    def counting(self, *a):
        steps.append(len(a[2]))
        return orig(self, *a)

    monkeypatch.setattr(static_step.StaticTalker, "step", counting)
    dyn = _codes(custom_engine, reqs, admit_at, False, monkeypatch)
    assert not steps
    sta = _codes(custom_engine, reqs, admit_at, True, monkeypatch)
    assert {bucket_of(n) for n in steps} >= {1, 2, 4}, steps  # crosses bucket boundaries both ways
    for i, (a, b) in enumerate(zip(dyn, sta)):
        assert a.shape[0] > 0 and torch.equal(a, b), i
