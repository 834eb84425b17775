"""Which checkpoints exist, which are loaded, and loading them on demand.

Checkpoints are read as plain directories (config.json says the type and the speakers),
so listing models and voices never imports torch or wakes a GPU. Loading happens on the
scheduler's GPU thread; at most ``max_loaded`` engines stay resident (least recently used
is dropped - the full VRAM release is the daemon's idle exit).
"""

from __future__ import annotations

import builtins
import contextlib
import gc
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import checkpoints
from ..checkpoints import ModelEntry  # read from config.json, torch-free; importable from here too
from ..errors import TTSError

log = logging.getLogger("qwen3ttsd.models")


class ModelRegistry:
    def __init__(self, model: str = "", models_dir: str = "", default: str = "",
                 max_loaded: int = 2, load_options=None) -> None:
        self.entries: dict[str, ModelEntry] = {}
        if model:
            p = Path(model)
            if (p / "config.json").is_file():
                e = ModelEntry.read(p)
                self.entries[e.name] = e
            else:
                log.error("QWEN3TTSD_MODEL=%s has no config.json", model)
        for p in checkpoints.checkpoint_dirs(models_dir):  # never a pull's hidden staging dir
            if p.name not in self.entries:
                try:
                    self.entries[p.name] = ModelEntry.read(p)
                except (OSError, ValueError) as ex:
                    log.warning("skipping %s: %s", p, ex)
        for e in self.entries.values():
            if checkpoints.has_random_weights(e.path):
                log.warning("%s has RANDOM WEIGHTS: audio is noise (for real voices %s)",
                            e.name, checkpoints.pull_hint())
        self.default = default if default in self.entries else (next(iter(self.entries), ""))
        self.max_loaded = max(1, max_loaded)
        self.load_options = load_options
        self.engines: OrderedDict[str, Any] = OrderedDict()   # name -> engine.Engine (imported lazily)
        self.loading: str | None = None
        self._lock = threading.Lock()

    def list(self) -> list[dict]:
        return [e.public(e.name in self.engines) for e in self.entries.values()]

    def pick(self, name: str | None = None, want: str | None = None) -> ModelEntry:
        """The model for a request: by name, else the default if it can serve ``want``,
        else the first of type ``want``."""
        if not self.entries:
            raise TTSError("unavailable", checkpoints.NO_MODEL_MESSAGE, retryable=False)
        if name:
            e = self.entries.get(name)
            if e is None:
                # accept the HF repo id or any suffix of it ("Qwen/Qwen3-TTS-12Hz-1.7B-Base")
                matches = [x for x in self.entries.values() if name.endswith(x.name) or x.name.endswith(name)]
                e = matches[0] if len(matches) == 1 else None
            if e is None:
                raise TTSError("not_found", f"unknown model {name!r}; available: {sorted(self.entries)}")
            return e
        d = self.entries.get(self.default)
        if want is None or (d is not None and d.type == want):
            return d or next(iter(self.entries.values()))
        for e in self.entries.values():
            if e.type == want:
                return e
        raise TTSError("unsupported", f"no {want} model is installed ({checkpoints.pull_hint(want)}); "
                       f"available: {[(e.name, e.type) for e in self.entries.values()]}")

    def engine(self, entry: ModelEntry, on_loading: Callable[[], None] | None = None):
        """Loaded engine for ``entry`` (GPU thread only)."""
        with self._lock:
            eng = self.engines.get(entry.name)
            if eng is not None:
                self.engines.move_to_end(entry.name)
                return eng
        if on_loading:
            on_loading()
        while len(self.engines) >= self.max_loaded:
            old, _ = self.engines.popitem(last=False)
            log.info("unloading %s to make room", old)
            self.free_memory()
        self.loading = entry.name
        t0 = time.monotonic()
        try:
            with _collector_paused():
                from ..engine import Engine, LoadOptions

                eng = Engine(entry.path, self.load_options or LoadOptions())
                eng.load()
        finally:
            self.loading = None
        log.info("loaded %s in %.1f s", entry.name, time.monotonic() - t0)
        with self._lock:
            self.engines[entry.name] = eng
        return eng

    def unload(self, name: str | None = None) -> builtins.list[str]:  # (list: the method above)
        with self._lock:
            names = [name] if name else list(self.engines)
            dropped = [n for n in names if self.engines.pop(n, None) is not None]
        self.free_memory()
        return dropped

    @staticmethod
    def free_memory() -> None:
        """Collect what unloaded models left (their objects were frozen at load), then
        freeze what is still loaded again."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No automatic garbage collection while a model loads; afterwards what it created is
    frozen (``gc.freeze``), so later collections do not scan it again.

    Why: importing torch, transformers and qwen-tts and building the model creates millions
    of objects, and every full collection scans them all: a cold start of the tiny model ran
    7 full collections, ~0.6 s of its ~6 s from connect to first audio, and a full collection
    while serving would stall every stream for as long."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
