"""Shared fixtures: tiny random-weight checkpoints built once per test session through the
project's own builder, and loaded through the real qwen-tts loader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from qwen3ttsd.testing import tinymodel

    root = Path(os.environ.get("QWEN3TTSD_TEST_MODELS") or tmp_path_factory.mktemp("models"))
    out = {}
    for variant in tinymodel.VARIANTS:
        d = root / variant
        if not (d / "model.safetensors").exists():
            tinymodel.build(d, variant=variant)
        out[variant] = d
    return out


def _engine(path):
    from qwen3ttsd.engine import Engine

    e = Engine(str(path))
    e.load()
    return e


@pytest.fixture(scope="session")
def custom_engine(tiny_models):
    return _engine(tiny_models["custom_voice"])


@pytest.fixture(scope="session")
def base_engine(tiny_models):
    return _engine(tiny_models["base"])


@pytest.fixture(scope="session")
def design_engine(tiny_models):
    return _engine(tiny_models["voice_design"])


@pytest.fixture(scope="module")
def custom_voice_daemon(tiny_models, tmp_path_factory) -> Path:
    """A real daemon serving the tiny CustomVoice checkpoint, never idling out: its runtime
    directory (tts.sock, admin.sock)."""
    from .helpers import daemon_env, start_daemon

    rt = tmp_path_factory.mktemp("rt")
    p = start_daemon(rt, daemon_env(tiny_models["custom_voice"], rt / "state", idle_timeout=-1))
    yield rt
    p.terminate()
    p.wait(30)
