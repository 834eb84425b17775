"""Which backend implements an engine kind: a table of import paths, chosen by name.

Torch-free until a backend is built, so the daemon validates ``engine = ...`` at start
without importing the model stack. A new backend is one line here plus a class with the
:class:`.backend.Backend` methods and the constructor ``(engine, options)``.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ..errors import TTSError
from .backend import Backend, BackendOptions

log = logging.getLogger("qwen3ttsd.engine")

BACKENDS: dict[str, str] = {
    "batched": "qwen3ttsd.engine.batched:BatchedBackend",         # continuous batching (default)
    "sequential": "qwen3ttsd.engine.sequential:SequentialBackend",  # qwen-tts's generate, one at a time
    "upstream": "qwen3ttsd.upstream.backend:UpstreamBackend",   # other engines do the work (issue 23)
}
FALLBACK = "sequential"   # what runs a checkpoint a backend cannot (NotImplementedError)


def check_kind(kind: str) -> str:
    if kind not in BACKENDS:
        raise TTSError("bad_request", f"unknown engine {kind!r}; choose one of {sorted(BACKENDS)}")
    return kind


def backend_class(kind: str) -> Any:
    module, _, name = BACKENDS[check_kind(kind)].partition(":")
    return getattr(importlib.import_module(module), name)


def make_backend(engine: Any, options: BackendOptions) -> Backend:
    """``options.kind``'s backend over a loaded ``engine``; the fallback where that kind
    cannot run the checkpoint."""
    try:
        backend: Backend = backend_class(options.kind)(engine, options)
    except NotImplementedError as e:
        log.warning("%s engine cannot run %s (%s): using the %s engine", options.kind, engine.model_dir, e, FALLBACK)
        backend = backend_class(FALLBACK)(engine, options)
    return backend


__all__ = ["BACKENDS", "FALLBACK", "backend_class", "check_kind", "make_backend"]
