"""The torch side: only the daemon (and tests/benchmarks) import this package.

Attributes load lazily so that ``from qwen3ttsd.engine.loader import LoadOptions`` costs
no torch import (admin-only wake-ups of the daemon stay light). qwen-tts is imported only
where it is used (``loader.load_model``, under the stdout guard: its flash-attn banner goes to
stderr); the default serving path never imports it (``Engine`` with ``weights="own"``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Engine", "LoadOptions", "SynthesisRequest", "SynthesisStats", "SAMPLE_RATE", "frame_budget"]


def __getattr__(name: str) -> Any:
    if name == "LoadOptions":
        from .loader import LoadOptions

        return LoadOptions
    if name in ("SynthesisRequest", "SynthesisStats"):  # plain dataclasses: no torch
        from . import request

        return getattr(request, name)
    if name in __all__:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(name)
