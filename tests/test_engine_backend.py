"""The engine seam: choosing a backend (config, env) and falling back when needed."""

from __future__ import annotations

import pytest

from qwen3ttsd import config
from qwen3ttsd.engine.backend import BackendOptions
from qwen3ttsd.engine.factory import make_backend
from qwen3ttsd.engine.sequential import SequentialBackend
from qwen3ttsd.errors import TTSError


def test_engine_and_max_batch_settings():
    d = config.load(config.DaemonConfig, "daemon", env={"QWEN3TTSD_CONFIG": "/nonexistent"})
    assert (d.engine, d.max_batch, d.quant, d.batch_decode, d.overlap_decode, d.threads) == (
        "batched", 16, "auto", True, "auto", 0)
    env = {"QWEN3TTSD_CONFIG": "/nonexistent", "QWEN3TTSD_ENGINE": "sequential", "QWEN3TTSD_MAX_BATCH": "4",
           "QWEN3TTSD_QUANT": "int8", "QWEN3TTSD_BATCH_DECODE": "0", "QWEN3TTSD_OVERLAP_DECODE": "1",
           "QWEN3TTSD_THREADS": "3"}
    d = config.load(config.DaemonConfig, "daemon", env=env)
    assert (d.engine, d.max_batch, d.quant, d.batch_decode, d.overlap_decode, d.threads) == (
        "sequential", 4, "int8", False, "1", 3)


def test_cuda_graphs_setting_reaches_the_backend_options():
    """Issue 24: ``cuda_graphs`` is a daemon setting (``QWEN3TTSD_CUDA_GRAPHS``), on by default."""
    base = {"QWEN3TTSD_CONFIG": "/nonexistent"}
    assert BackendOptions.from_config(config.load(config.DaemonConfig, "daemon", env=base)).cuda_graphs
    d = config.load(config.DaemonConfig, "daemon", env={**base, "QWEN3TTSD_CUDA_GRAPHS": "0"})
    assert d.cuda_graphs is False and BackendOptions.from_config(d).cuda_graphs is False


def test_threads_setting_caps_torchs_cpu_threads(tiny_models):
    import torch

    from qwen3ttsd.engine.loader import LoadOptions, load_model

    before = torch.get_num_threads()
    try:
        load_model(tiny_models["custom_voice"], LoadOptions(device="cpu", threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_unknown_engine_is_refused():
    with pytest.raises(TTSError):
        make_backend(object(), BackendOptions(kind="turbo"))
    from qwen3ttsd.daemon.models import ModelRegistry

    with pytest.raises(ValueError, match="turbo"):
        ModelRegistry(backend_options=BackendOptions(kind="turbo"))


def test_backend_options_come_from_the_config_with_one_default_each():
    d = config.load(config.DaemonConfig, "daemon", env={"QWEN3TTSD_CONFIG": "/nonexistent"})
    # the engine's own default is exact (none: equal to qwen-tts); the service's is auto
    assert BackendOptions.from_config(d) == BackendOptions(prewarm_frames=4, quant="auto")
    d = config.load(config.DaemonConfig, "daemon", env={"QWEN3TTSD_CONFIG": "/nonexistent", "QWEN3TTSD_PREWARM": "0",
                                                         "QWEN3TTSD_ENGINE": "sequential", "QWEN3TTSD_MAX_BATCH": "0"})
    assert BackendOptions.from_config(d) == BackendOptions(kind="sequential", max_batch=1, quant="auto")


@pytest.mark.parametrize("value, want", [("auto", None), ("1", True), ("on", True), ("0", False), ("false", False)])
def test_overlap_decode_is_auto_or_on_or_off(value, want):
    d = config.load(config.DaemonConfig, "daemon", env={"QWEN3TTSD_CONFIG": "/nonexistent",
                                                         "QWEN3TTSD_OVERLAP_DECODE": value})
    assert BackendOptions.from_config(d).overlap_decode is want


def test_a_bad_overlap_decode_value_is_a_clear_error():
    """A ValueError: the daemon's start reports it as a bad configuration (exit 2), no traceback."""
    d = config.load(config.DaemonConfig, "daemon", env={"QWEN3TTSD_CONFIG": "/nonexistent",
                                                         "QWEN3TTSD_OVERLAP_DECODE": "sometimes"})
    with pytest.raises(ValueError, match="overlap_decode: expected auto, 1 or 0"):
        BackendOptions.from_config(d)


@pytest.mark.parametrize("cores", [1, 2, 4, 16])
def test_the_codec_lane_is_chosen_from_the_core_count(custom_engine, monkeypatch, cores):
    import torch

    from qwen3ttsd.engine import batched, codec_lane
    from qwen3ttsd.engine.batched import BatchedBackend

    monkeypatch.setattr(batched, "cpu_threads", lambda: cores)
    before = torch.get_num_threads()
    try:
        b = BatchedBackend(custom_engine, BackendOptions(max_batch=2))
        assert b.lane.overlaps == (cores > 1 and codec_lane.overlap_by_default(cores))
        assert b.status["threads"] == b.lane.split and ("overlapped" in b.lane.split) == b.lane.overlaps
        assert BatchedBackend(custom_engine, BackendOptions(max_batch=2, overlap_decode=False)).lane.overlaps is False
    finally:
        torch.set_num_threads(before)
    assert codec_lane.overlap_by_default(codec_lane.OVERLAP_MIN_CORES)
    assert not codec_lane.overlap_by_default(codec_lane.OVERLAP_MIN_CORES - 1)


def test_checkpoint_the_batched_engine_cannot_run_falls_back_to_sequential(custom_engine, monkeypatch):
    from qwen3ttsd.engine import batched

    def unsupported(self, *a, **k):
        raise NotImplementedError("sliding-window attention")

    monkeypatch.setattr(batched.BatchedBackend, "__init__", unsupported)
    backend = make_backend(custom_engine, BackendOptions())
    assert isinstance(backend, SequentialBackend) and backend.capacity == 1


def test_quant_setting_auto_is_int8_on_the_cpu_and_none_on_a_gpu():
    """Issue 25: int8 is the CPU default (``auto``); ``none`` is fp32/bf16; a typo is refused
    at start, not served as fp32."""
    from qwen3ttsd.engine.backend import serving_quant

    d = config.load(config.DaemonConfig, "daemon", env={"QWEN3TTSD_CONFIG": "/nonexistent"})
    assert BackendOptions.from_config(d).quant == "auto"
    assert [serving_quant(s, "cpu") for s in ("auto", "int8", "int4", "none", "", "INT8")] == \
        ["int8", "int8", "int8", "", "", "int8"]   # int4: int8 plus the predictor's int4 copies
    assert [serving_quant(s, "cuda") for s in ("auto", "int8", "int4", "none")] == ["", "", "", ""]
    bad = config.load(config.DaemonConfig, "daemon",
                      env={"QWEN3TTSD_CONFIG": "/nonexistent", "QWEN3TTSD_QUANT": "int2"})
    with pytest.raises(ValueError, match="quant must be one of auto, int8, int4, none"):
        BackendOptions.from_config(bad)


def test_helper_threads_start_no_openmp_team_of_their_own(custom_engine):
    """The prompt builders, the weight cache's packers and the codec lane run torch on the
    threads they were given, never on a team of their own: libgomp counts every team's
    threads, and once they outnumber the cores it stops spinning between parallel regions,
    so each of the stepping thread's hundreds of small parallel ops a frame waits for a
    futex wake-up (measured: the 0.6B predictor frame 80 -> 130 ms at 2 threads while one
    idle builder thread held a team). The stepping thread keeps its own count."""
    import threading

    import torch

    from qwen3ttsd.engine.batched import BatchedBackend
    from qwen3ttsd.engine.thread_priority import IDLE_NICE, background_thread, on_own_team

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        b = BatchedBackend(custom_engine, BackendOptions(max_batch=2, overlap_decode=False))
        assert b._builder_pool().submit(torch.get_num_threads).result() == 1
        assert torch.get_num_threads() == 2

        seen: list[int] = []

        def helper() -> None:
            background_thread(IDLE_NICE)
            seen.append(torch.get_num_threads())

        t = threading.Thread(target=helper)
        t.start()
        t.join()
        assert seen == [1] and torch.get_num_threads() == 2
        # work that needs a team (the prewarm's decodes) gets one on a thread that ends with it
        assert on_own_team(2, IDLE_NICE, torch.get_num_threads) == 2 and torch.get_num_threads() == 2
        with pytest.raises(ZeroDivisionError):
            on_own_team(1, IDLE_NICE, lambda: 1 / 0)
    finally:
        torch.set_num_threads(before)
