"""Issue 24 item 3 on fake CUDA: the default engine takes the bucketed static decode step
(code predictor, talker and sampling: the function a CUDA graph captures per bucket) with
one host sync per step, no CPU/CUDA mixing; graph capture itself is off here
(``cuda_graphs=False``: FakeTensorMode cannot capture; tests/test_gpu.py covers real capture)."""

from __future__ import annotations

import pytest

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
