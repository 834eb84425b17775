"""The default engine on fake CUDA (issue 24): load, prefill, batched steps, join/leave and
batched codec decode run under ``FakeTensorMode`` on ``cuda`` in bf16, for the tiny and the
0.6B/1.7B-shaped configs, with one host synchronisation per step (qwen3ttsd/testing/fake_cuda.py)."""

from __future__ import annotations

import pytest
import torch

from qwen3ttsd.engine.backend import Done, Failed, Stream
from qwen3ttsd.engine.request import SynthesisRequest
from qwen3ttsd.testing.fake_cuda import fake_cuda_engine, write_shapes_checkpoint

pytestmark = pytest.mark.fake_cuda

ADMISSION_BUDGET = 2   # a step that prefills newcomers reads their first ids too
STEP_BUDGET = 1        # every other step: all rows' sampled ids, once


def _stream(events: list, frames: int, seed: int | None) -> Stream:
    req = SynthesisRequest(text="Hello there, world.", language="auto", speaker="ryan",
                           max_frames=frames, seed=seed)
    return Stream(req, sink=events.append)


def _step(lane) -> int:
    before = lane.syncs()
    lane.backend.step()
    return lane.syncs() - before


@pytest.mark.parametrize("size", ["tiny", "0.6b", "1.7b"])
def test_fake_cuda_engine_steps_with_one_sync(size, tmp_path):
    model = write_shapes_checkpoint(tmp_path / size, size)
    with fake_cuda_engine(model, cache_dir=str(tmp_path / "weight-cache")) as lane:   # the daemon's defaults
        b = lane.backend
        talker = b.talker
        for name, p in talker.named_parameters():
            if name != "model.text_embedding.weight":  # mmap'd on the CPU by design
                assert p.device.type == "cuda" and p.dtype == torch.bfloat16, name
        assert all(p.device.type == "cuda" and p.dtype == torch.bfloat16
                   for p in lane.engine.own[1].parameters())
        assert b.quant == "" and lane.engine.weight_cache is None   # auto: bf16 on a GPU, nothing cached
        events: list = []
        b.admit(_stream(events, 4, 1))
        b.admit(_stream(events, 6, None))
        assert _step(lane) <= ADMISSION_BUDGET
        assert len(b.rows) == 2
        assert _step(lane) == STEP_BUDGET
        b.admit(_stream(events, 3, 3))                       # joins a running batch
        assert _step(lane) <= ADMISSION_BUDGET
        assert len(b.rows) == 3
        steps = 0
        while b.active:
            n = len(b.rows)
            syncs = _step(lane)
            assert syncs <= STEP_BUDGET if n else syncs == 0
            steps += 1
            assert steps < 20
        assert not [e for e in events if isinstance(e, Failed)], events
        assert sum(isinstance(e, Done) for e in events) == 3
        assert lane.audio_reads >= 3
        assert lane.counter.scalar_reads == 0


def test_fake_cuda_eos_leaves_from_the_host_copy(tmp_path):
    """A row sampling EOS leaves, decided from the step's one read."""
    model = write_shapes_checkpoint(tmp_path / "tiny", "tiny")
    with fake_cuda_engine(model) as lane:
        b = lane.backend
        events: list = []
        b.admit(_stream(events, 50, 1))
        b.admit(_stream(events, 50, 2))
        lane.backend.step()
        lane.ids_for = lambda n: [b.eos] + [0] * (n - 1)     # row 0 ends now
        assert _step(lane) == STEP_BUDGET
        assert len(b.rows) == 1
        lane.ids_for = lambda n: [b.eos] * n
        while b.active:
            lane.backend.step()
        assert sum(isinstance(e, Done) for e in events) == 2
        assert not [e for e in events if isinstance(e, Failed)]


def test_fake_cuda_catches_a_cpu_tensor_and_a_host_read(tmp_path):
    """The lane fails what a GPU would: CPU tensors in CUDA math, value reads."""
    model = write_shapes_checkpoint(tmp_path / "tiny", "tiny")
    with fake_cuda_engine(model):
        x = torch.zeros(2, 4, device="cuda", dtype=torch.bfloat16)
        with pytest.raises(RuntimeError, match="two different devices"):
            x + torch.zeros(2, 4, dtype=torch.bfloat16)
        with pytest.raises(Exception, match="_local_scalar_dense"):
            x.sum().item()


def test_fake_cuda_loads_the_real_tiny_checkpoint(tiny_models):
    """The tiny checkpoint's own safetensors, converted to fake CUDA bf16 on load."""
    with fake_cuda_engine(tiny_models["custom_voice"]) as lane:
        b = lane.backend
        assert b.device.type == "cuda" and b.dtype == torch.bfloat16
        events: list = []
        b.admit(_stream(events, 3, 5))
        while b.active:
            assert _step(lane) <= ADMISSION_BUDGET
        assert sum(isinstance(e, Done) for e in events) == 1, events
