"""Which checkpoints exist, which are loaded, and loading them on demand.

Checkpoints are read as plain directories (config.json says the type and the speakers),
so listing models and voices never imports torch or wakes a GPU. Loading happens on the
scheduler's engine thread, and a model is loaded together with the backend that runs it
(:class:`LoadedModel`); at most ``max_loaded`` stay resident (least recently used is
dropped - the full VRAM release is the daemon's idle exit).
"""

from __future__ import annotations

import builtins
import contextlib
import gc
import logging
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import checkpoints, messages as M
from ..checkpoints import ModelEntry  # read from config.json, torch-free; importable from here too
from ..engine import factory
from ..engine.backend import BackendOptions
from ..errors import TTSError

log = logging.getLogger("qwen3ttsd.models")


@dataclass(eq=False)
class LoadedModel:
    """A loaded checkpoint and the backend that runs it: created, held and dropped together."""

    entry: ModelEntry
    model: Any          # engine.Engine
    backend: Any        # engine.backend.Backend
    load_s: float = 0.0
    warmed: bool = False   # the backend's warm-up ran (ModelRegistry.load(warm=True))

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.model.info, load_s=round(self.load_s, 3), backend=self.backend.status)


def no_model_installed() -> TTSError:
    return TTSError("unavailable", checkpoints.NO_MODEL_MESSAGE, retryable=False)


class ModelRegistry:
    """The one owner of live model state. ``loaded`` holds at most ``max_loaded`` models (least
    recently used first); a model unloaded while its backend still has streams in flight
    is *retiring*: still stepped until they finish, then dropped (:meth:`reap`)."""

    def __init__(self, model: str = "", models_dir: str = "", default: str = "",
                 max_loaded: int = 2, load_options: Any = None, backend_options: BackendOptions | None = None,
                 opener: Callable[[ModelEntry], tuple[Any, Any]] | None = None) -> None:
        """``opener(entry) -> (model, backend)`` loads a checkpoint (default: the engine and
        the backend the options name; tests pass fakes)."""
        self._open = opener or self._open_checkpoint
        self.backend_options = backend_options or BackendOptions()
        try:
            factory.check_kind(self.backend_options.kind)
        except TTSError as err:
            raise ValueError(err.message) from None
        self.entries: dict[str, ModelEntry] = {}
        self.when_empty: Callable[[], TTSError] = no_model_installed   # the error while there is no model
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
        self.loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self.retiring: list[LoadedModel] = []
        self.loading: str | None = None
        self._lock = threading.Lock()

    def list(self) -> list[M.ModelInfo]:
        return [M.ModelInfo(**e.public(e.name in self.loaded)) for e in self.entries.values()]

    def pick(self, name: str | None = None, want: str | None = None) -> ModelEntry:
        """The model for a request: by name, else the default if it can serve ``want``,
        else the first of type ``want``."""
        if not self.entries:
            raise self.when_empty()
        if name:
            e = self.entries.get(name)
            if e is None:
                # accept the HF repo id or any suffix of it ("Qwen/Qwen3-TTS-12Hz-1.7B-Base")
                matches = [x for x in self.entries.values() if name.endswith(x.name) or x.name.endswith(name)]
                e = matches[0] if len(matches) == 1 else None
            if e is None:
                raise TTSError("not_found", f"unknown model {name!r}; available: {sorted(self.entries)}")
            return self._on_disk(e)
        d = self.entries.get(self.default)
        if want is None or (d is not None and d.type == want):
            return self._on_disk(d or next(iter(self.entries.values())))
        for e in self.entries.values():
            if e.type == want:
                return self._on_disk(e)
        raise TTSError("unsupported", f"no {want} model is installed ({checkpoints.pull_hint(want)}); "
                       f"available: {[(e.name, e.type) for e in self.entries.values()]}")

    def _on_disk(self, entry: ModelEntry) -> ModelEntry:
        """``entry``, unless it is not loaded and its checkpoint was removed since the daemon
        started (``models remove``): then ``not_found``, naming the model, not its path."""
        remote = "://" in entry.path   # an upstream's model (engine=upstream) has no files here
        if entry.name not in self.loaded and not remote and not (Path(entry.path) / "config.json").is_file():
            raise TTSError("not_found", f"model {entry.name!r} is no longer installed (removed from disk); "
                           f"{checkpoints.pull_hint(entry.type)}, or ask for another model")
        return entry

    # --- engine thread -----------------------------------------------------------------

    def load(self, entry: ModelEntry, on_loading: Callable[[], None] | None = None,
             warm: bool = True) -> LoadedModel:
        """``entry`` loaded with its backend (loading it now if needed; engine thread only).

        ``warm``: run the backend's warm-up (a 2-frame stream that builds the kernels) after
        a load. A load that a waiting request triggers passes False: the request's own first
        steps build the same kernels, and the warm-up only delayed its first audio (issue
        19: a cold start's time to first audio); admin load, preload and tts.warmup warm."""
        with self._lock:
            lm = self.loaded.get(entry.name)
            if lm is not None:
                self.loaded.move_to_end(entry.name)
        if lm is not None:
            if warm and not lm.warmed and not lm.backend.active:  # loaded for a caller, unwarmed:
                lm.backend.warmup()          # a tts.warmup / admin load still leaves it warm
                lm.warmed = True
            return lm
        if on_loading:
            on_loading()
        while len(self.loaded) >= self.max_loaded:
            old = next(iter(self.loaded))
            log.info("unloading %s to make room", old)
            self.unload(old)
        self.loading = entry.name
        t0 = time.monotonic()
        try:
            with _collector_paused():
                engine, backend = self._open(entry)
                if warm:
                    backend.warmup()
        finally:
            self.loading = None
        lm = LoadedModel(entry, engine, backend, load_s=time.monotonic() - t0, warmed=warm)
        log.info("loaded %s in %.1f s (%s engine)", entry.name, lm.load_s, backend.status.get("kind"))
        with self._lock:
            self.loaded[entry.name] = lm
        return lm

    def _open_checkpoint(self, entry: ModelEntry) -> tuple[Any, Any]:
        from ..engine import Engine, LoadOptions

        engine = Engine(entry.path, self.load_options or LoadOptions())
        engine.load()
        return engine, factory.make_backend(engine, self.backend_options)

    def unload(self, name: str | None = None) -> builtins.list[str]:  # (list: the method above)
        """Drop ``name`` (or every model); one with streams in flight retires first."""
        with self._lock:
            names = [name] if name else builtins.list(self.loaded)
            dropped = [lm for lm in (self.loaded.pop(n, None) for n in names) if lm is not None]
            self.retiring += [lm for lm in dropped if lm.backend.active]
        gone = [lm.entry.name for lm in dropped]
        dropped.clear()  # the last references to idle ones: free_memory collects them
        self.free_memory()
        return gone

    def backends(self) -> builtins.list[Any]:
        """Every backend to step: the loaded models' and the retiring ones'."""
        with self._lock:
            return [lm.backend for lm in (*self.loaded.values(), *self.retiring)]

    def reap(self) -> None:
        """Drop retiring models whose last stream has finished: a backend holds its whole model."""
        with self._lock:
            done = [lm for lm in self.retiring if not lm.backend.active]
            self.retiring = [lm for lm in self.retiring if lm.backend.active]
        if done:
            done.clear()  # the last references: free_memory collects them
            self.free_memory()

    @staticmethod
    def free_memory() -> None:
        """Collect what unloaded models left (their objects were frozen at load), then
        freeze what is still loaded again."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        torch = sys.modules.get("torch")   # never imported here (engine=upstream has none)
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No automatic garbage collection while a model loads; afterwards what it created is
    frozen (``gc.freeze``), so later collections do not scan it again.

    Why: importing torch, transformers and qwen-tts and building the model creates millions
    of objects, and every full collection scans them all: a cold start ran several, a
    tenth of its time to first audio (bench/RESULTS.md (Design measurements)), and a full collection while serving
    would stall every stream for as long."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
