"""One CUDA graph per batch bucket around :func:`.static_step.decode_step` (the whole step:
code predictor, talker, sampling).

Why a thin wrapper: the step itself (static buffers in, static buffers out) is tested
eagerly on CPU and under fake CUDA; this module only decides when to capture and replays.
Capture is lazy: a bucket's first ``WARM_RUNS`` steps run eagerly (kernels, cuBLAS
workspaces and the first audio come before any capture cost), then the step is captured
on a side stream and replayed from then on. Graphs are dropped when the KV tensors they
were captured on are reallocated (``RowKV.reserve`` grew them) or cleared.

Per-row generators: a graph draws its random numbers from generators registered with it
(``CUDAGraph.register_generator_state``): their seed and Philox offset are host values
that each replay reads afresh. So a graph owns a "carrier" generator per slot and head
(predictor, talker); before a replay each carrier takes its row's seed and offset (the
talker's carrier past the predictor's draws when the row samples those), and after it the
row's generator moves on by what its sampling heads drew. A row thus draws the numbers
an eager step would (same kernels, same Philox counters), whatever slot it sits in, and
the host never reads the device for it. A head a row does not sample still draws in the
graph (static shape), from its carrier only: the row's offset is not moved for it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

WARM_RUNS = 2   # eager runs of a bucket before its capture (the first audio is out by then)

log = logging.getLogger("qwen3ttsd.engine")

Gens = tuple[list, list]          # per slot: the predictor's and the talker's generator (or None)
Step = Callable[[Gens], None]     # the step, drawing from the given generators
RowRng = list[tuple[torch.Generator, bool, bool]]   # per row: its generator, samples predictor / talker


class Captured:
    """One bucket's graph and its carrier generators."""

    def __init__(self, step: Step, slots: int, device: torch.device) -> None:
        self.sub = [torch.Generator(device=device) for _ in range(slots)]
        self.talk = [torch.Generator(device=device) for _ in range(slots)]
        self.graph = torch.cuda.CUDAGraph()
        for gen in self.sub + self.talk:
            self.graph.register_generator_state(gen)
        start = (self.sub[0].get_offset(), self.talk[0].get_offset())
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step((self.sub, self.talk))   # a warm run on the capture stream
        torch.cuda.current_stream().wait_stream(side)
        # what one step draws from a slot's carriers: the same per call eagerly or replayed
        self.d_sub, self.d_talk = self.sub[0].get_offset() - start[0], self.talk[0].get_offset() - start[1]
        # thread_local: the prompt builder threads may use the device during a capture
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            step((self.sub, self.talk))

    def replay(self, rows: RowRng) -> None:
        """The step for ``rows`` (slots 0..B-1), each drawing from its own generator's state."""
        moved = []
        for (gen, sub, talk), c_sub, c_talk in zip(rows, self.sub, self.talk):
            seed, offset = gen.initial_seed(), gen.get_offset()
            c_sub.manual_seed(seed).set_offset(offset)
            after_sub = offset + (self.d_sub if sub else 0)
            c_talk.manual_seed(seed).set_offset(after_sub)
            moved.append((gen, after_sub + (self.d_talk if talk else 0)))
        self.graph.replay()
        for gen, offset in moved:
            gen.set_offset(offset)


class BucketGraphs:
    """The graphs of one backend, by key (bucket, warpers in use); see the module docstring."""

    def __init__(self) -> None:
        self.graphs: dict[Any, Any] = {}
        self.runs: dict[Any, int] = {}
        self.captures = 0
        self.failed = False   # a capture raised: every step runs eagerly from then on

    def run(self, key: Any, step: Step, eager: Gens, rows: RowRng) -> None:
        """The step for ``key``: replayed, captured (then replayed) or run eagerly with the
        rows' own generators (``eager``)."""
        g = self.graphs.get(key)
        if g is not None:
            g.replay(rows)
            return
        self.runs[key] = self.runs.get(key, 0) + 1
        if self.failed or self.runs[key] <= WARM_RUNS:
            step(eager)
            return
        try:
            g = self.capture(step, len(eager[0]), rows[0][0].device)
        except Exception as e:  # noqa: BLE001 - graphs are an optimisation: fall back to eager
            log.warning("CUDA graph capture failed (%s); the decode step runs eagerly", e)
            self.failed = True
            step(eager)
            return
        self.graphs[key] = g
        self.captures += 1
        g.replay(rows)   # the captured step has not run yet for this call's inputs

    def capture(self, step: Step, slots: int, device: torch.device) -> Any:
        return Captured(step, slots, device)

    def clear(self) -> None:
        self.graphs.clear()
        self.runs.clear()


__all__ = ["WARM_RUNS", "BucketGraphs", "Captured"]
