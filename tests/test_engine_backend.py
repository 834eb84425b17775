"""The engine seam: choosing a backend (config, env) and falling back when needed."""

from __future__ import annotations

import pytest

from qwen3ttsd import config
from qwen3ttsd.engine.backend import SequentialBackend, make_backend
from qwen3ttsd.errors import TTSError


def test_engine_and_max_batch_settings():
    d = config.load(config.DaemonConfig, "daemon", env={"QWEN3TTSD_CONFIG": "/nonexistent"})
    assert (d.engine, d.max_batch, d.quant, d.batch_decode) == ("batched", 16, "", True)
    env = {"QWEN3TTSD_CONFIG": "/nonexistent", "QWEN3TTSD_ENGINE": "sequential", "QWEN3TTSD_MAX_BATCH": "4",
           "QWEN3TTSD_QUANT": "int8", "QWEN3TTSD_BATCH_DECODE": "0"}
    d = config.load(config.DaemonConfig, "daemon", env=env)
    assert (d.engine, d.max_batch, d.quant, d.batch_decode) == ("sequential", 4, "int8", False)


def test_unknown_engine_is_refused():
    with pytest.raises(TTSError):
        make_backend("turbo", object())
    from qwen3ttsd.daemon.scheduler import Scheduler

    with pytest.raises(ValueError, match="turbo"):
        Scheduler(registry=None, engine="turbo")


def test_checkpoint_the_batched_engine_cannot_run_falls_back_to_sequential(custom_engine, monkeypatch):
    from qwen3ttsd.engine import batched

    def unsupported(self, *a, **k):
        raise NotImplementedError("sliding-window attention")

    monkeypatch.setattr(batched.BatchedBackend, "__init__", unsupported)
    assert isinstance(make_backend("batched", custom_engine), SequentialBackend)
