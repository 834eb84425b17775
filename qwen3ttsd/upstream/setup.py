"""The daemon's model registry in ``engine = "upstream"`` mode: its models are what the
upstreams serve (discovered at start, refreshed while serving), "loading" one makes its
:class:`.backend.UpstreamBackend`. Torch-free."""

from __future__ import annotations

import logging

from ..config import DaemonConfig
from ..daemon.models import ModelRegistry
from ..engine.backend import BackendOptions
from . import targets
from .backend import opener
from .fleet import Fleet

log = logging.getLogger("qwen3ttsd.upstream")

MAX_MODELS = 1 << 16   # nothing is resident: every discovered model may stay "loaded"


def build(cfg: DaemonConfig) -> tuple[ModelRegistry, Fleet]:
    """Raises ValueError for a bad ``upstream`` list."""
    ts = targets.parse(cfg.upstream, cfg.upstream_key)
    if not ts:
        raise ValueError("engine = upstream needs QWEN3TTSD_UPSTREAM (comma-separated unix:// or http(s):// URLs)")
    fleet = Fleet(ts)
    registry = ModelRegistry(default=cfg.default_model, max_loaded=MAX_MODELS,
                             backend_options=BackendOptions(kind="upstream"), opener=opener(fleet))

    def on_models(entries: dict) -> None:
        merged = dict(registry.entries)
        merged.update(entries)        # a model a down upstream served stays listed (it may come back)
        registry.entries = merged
        if registry.default not in merged:
            registry.default = cfg.default_model if cfg.default_model in merged else next(iter(merged), "")

    fleet.on_models = on_models
    registry.when_empty = fleet.none_up
    on_models(fleet.discover())
    log.info("upstream mode: %s; models %s", fleet.summary(), sorted(registry.entries))
    return registry, fleet
