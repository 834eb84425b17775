"""Issue 24 item 3 on fake CUDA: the default engine takes the bucketed static decode step
(code predictor, talker and sampling: the function a CUDA graph captures per bucket) with
one host sync per step, no CPU/CUDA mixing; graph capture itself is off here
(``cuda_graphs=False``: FakeTensorMode cannot capture; tests/test_gpu.py covers real capture)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from qwen3ttsd.engine.backend import Done
from qwen3ttsd.testing.fake_cuda import fake_cuda_engine, write_shapes_checkpoint
from tests.test_fake_cuda import _step, _stream

pytestmark = pytest.mark.fake_cuda


def test_fake_cuda_static_step_one_sync(tmp_path):
    model = write_shapes_checkpoint(tmp_path / "tiny", "tiny")
    with fake_cuda_engine(model, cuda_graphs=False) as lane:
        b = lane.backend
        assert b.static is not None and b.static.graphs is None
        events: list = []
        for seed in (1, 2, 3):
            b.admit(_stream(events, 5, seed))
        assert _step(lane) <= 2
        n = 0
        while b.active:
            rows = len(b.rows)
            syncs = _step(lane)
            assert syncs <= 1 if rows else syncs == 0
            n += 1
            assert n < 20
        assert b.static.steps >= 3
        assert lane.counter.scalar_reads == 0
        bufs = [t for buf in b.static.buffers.values() for t in vars(buf).values()]
        assert bufs and all(t.device.type == "cuda" for t in bufs)   # the step's state stays on the device


class BlockingUploads(TorchDispatchMode):
    """Counts host -> device copies that wait for the GPU (not ``non_blocking``: torch then
    synchronises the stream, a host sync the SyncCounter does not see)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        aten = torch.ops.aten
        if func is aten._to_copy.default and args[0].device.type == "cpu" and "cuda" in str(kwargs.get("device")):
            self.count += not kwargs.get("non_blocking", False)
        elif func is aten.copy_.default and args[0].device.type == "cuda" and args[1].device.type == "cpu":
            self.count += not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        return func(*args, **kwargs)


def test_fake_cuda_static_step_uploads_without_waiting(tmp_path):
    """The static step's host inputs go up from pinned memory, queued: no stream sync."""
    model = write_shapes_checkpoint(tmp_path / "tiny", "tiny")
    with fake_cuda_engine(model, cuda_graphs=False) as lane:
        b = lane.backend
        events: list = []
        for seed in (1, 2):
            b.admit(_stream(events, 6, seed))
        b.step()   # admission: the prefill's uploads
        steps = b.static.steps
        with BlockingUploads() as uploads:
            for _ in range(3):
                b.step()
        assert b.static.steps - steps == 3 and uploads.count == 0, uploads.count
        while b.active:
            b.step()


def test_fake_cuda_failed_capture_falls_back_to_eager(tmp_path):
    """Graphs on (the CUDA default): FakeTensorMode cannot capture, so the capture path runs
    up to ``torch.cuda`` and its failure leaves the streams running eagerly, not failed."""
    model = write_shapes_checkpoint(tmp_path / "tiny", "tiny")
    with fake_cuda_engine(model) as lane:
        b = lane.backend
        events: list = []
        for seed in (1, 2):
            b.admit(_stream(events, 6, seed))
        while b.active:
            b.step()
        assert b.static.graphs is not None and b.static.graphs.failed
        assert sum(isinstance(e, Done) for e in events) == 2, events
