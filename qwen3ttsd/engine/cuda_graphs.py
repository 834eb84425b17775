"""One CUDA graph per batch bucket around :func:`.static_step.static_talker_step`.

Why a thin wrapper: the step itself (static buffers in, static buffers out) is tested
eagerly on CPU and under fake CUDA; this module only decides when to capture and replays.
Capture is lazy: a bucket's first ``WARM_RUNS`` steps run eagerly (kernels, cuBLAS
workspaces and the first audio come before any capture cost), then the step is captured
on a side stream and replayed from then on. Graphs are dropped when the KV tensors they
were captured on are reallocated (``RowKV.reserve`` grew them) or cleared.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import torch

WARM_RUNS = 2   # eager runs of a bucket before its capture (the first audio is out by then)
ENV = "QWEN3TTSD_CUDA_GRAPHS"   # "0": static steps run eagerly on CUDA too

log = logging.getLogger("qwen3ttsd.engine")


def graphs_wanted(device: torch.device) -> bool:
    """CUDA graphs on CUDA unless ``QWEN3TTSD_CUDA_GRAPHS=0``."""
    return device.type == "cuda" and os.environ.get(ENV, "1") not in ("0", "false", "no")


class BucketGraphs:
    def __init__(self) -> None:
        self.graphs: dict[int, Any] = {}
        self.runs: dict[int, int] = {}
        self.captures = 0
        self.failed = False   # a capture raised: every step runs eagerly from then on

    def run(self, bucket: int, step: Callable[[], None]) -> None:
        g = self.graphs.get(bucket)
        if g is not None:
            g.replay()
            return
        self.runs[bucket] = self.runs.get(bucket, 0) + 1
        if self.failed or self.runs[bucket] <= WARM_RUNS:
            step()
            return
        try:
            self._capture(bucket, step)
        except Exception as e:  # noqa: BLE001 - graphs are an optimisation: fall back to eager
            log.warning("CUDA graph capture failed (%s); the talker steps eagerly", e)
            self.failed = True
            step()

    def _capture(self, bucket: int, step: Callable[[], None]) -> None:
        g = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()   # a warm run on the capture stream
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(g):
            step()
        self.graphs[bucket] = g
        self.captures += 1
        g.replay()   # the captured step has not run yet for this call's inputs

    def clear(self) -> None:
        self.graphs.clear()
        self.runs.clear()


__all__ = ["ENV", "BucketGraphs", "graphs_wanted"]
