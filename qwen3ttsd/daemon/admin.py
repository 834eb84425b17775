"""Admin RPC methods (admin socket only): status, load/unload, keepalive, settings,
shutdown, and the model/prompt caches."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .. import __version__, messages as M
from ..errors import TTSError
from .server import Connection, Server
from .state import DaemonState

# What the default serving path never imports (issue 19): only the sequential engine, the
# qwen-tts weights loader and a Base checkpoint's clone prompts bring them in.
HEAVY_MODULES = ("transformers", "qwen_tts", "librosa")


class Admin:
    def __init__(self, svc: DaemonState) -> None:
        self.svc = svc

    @property
    def srv(self) -> Server:
        if self.svc.server is None:
            raise TTSError("unavailable", "the daemon is still starting")
        return self.svc.server

    async def status(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.AdminStatusResult:
        svc = self.svc
        srv = svc.server
        registry = svc.registry
        infos = {name: lm.info for name, lm in registry.loaded.items()}
        state = "loading" if registry.loading else ("ready" if infos else "idle")
        if srv is not None and srv.stopping:
            state = "draining"
        return M.AdminStatusResult(
            state=state, pid=os.getpid(), version=__version__, models=registry.list(),
            loaded=infos, vram_bytes=_vram_bytes(), rss_bytes=_rss_bytes(),
            max_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            active_streams=svc.active_streams, queue_len=svc.scheduler.queued,
            connections=len(srv.connections) if srv else 0, served=svc.served,
            idle_timeout=srv.idle_timeout if srv else None,
            idle_exit_in_s=srv.idle_exit_in() if srv else None,
            uptime_s=round(time.time() - svc.started, 3), torch_imported="torch" in sys.modules,
            heavy_imports=[m for m in HEAVY_MODULES if m in sys.modules],
            sockets=svc.sockets_info, python=sys.version.split()[0],
            upstreams=svc.fleet.status() if svc.fleet is not None else [])

    async def load(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.AdminLoadResult:
        svc = self.svc
        entry = svc.registry.pick(M.AdminLoad.from_wire(params).model)
        svc.notifier.status(f"loading {entry.name}")
        lm = await svc.scheduler.run_call(lambda: svc.registry.load(entry), asyncio.get_running_loop())
        svc.publish_status()
        return M.AdminLoadResult(entry.name, extra=lm.info)

    async def unload(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.AdminUnloadResult:
        svc = self.svc
        msg = M.AdminUnload.from_wire(params)
        if msg.exit:
            self.srv.request_stop("admin.unload exit", drain=True)
            return M.AdminUnloadResult(exiting=True)
        name = msg.model
        svc.sessions.drop_decoders()  # a call's codec state would pin the unloaded model
        dropped = await svc.scheduler.run_call(lambda: svc.registry.unload(name), asyncio.get_running_loop())
        svc.publish_status()
        return M.AdminUnloadResult(unloaded=dropped)

    async def keepalive(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.AdminKeepaliveResult:
        secs = M.AdminKeepalive.from_wire(params, limits={"seconds": self.svc.cfg.max_keepalive}).seconds
        self.srv.keepalive_until = time.monotonic() + secs if secs else 0.0
        return M.AdminKeepaliveResult(secs, self.srv.idle_exit_in())

    async def set(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.AdminSetResult:
        msg = M.AdminSet.from_wire(params)
        cfg = self.svc.cfg
        if msg.idle_timeout is not None:
            self.srv.idle_timeout = msg.idle_timeout
        if msg.queue_timeout is not None:
            cfg.queue_timeout = msg.queue_timeout
        return M.AdminSetResult(self.srv.idle_timeout, cfg.queue_timeout)

    async def shutdown(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.AdminShutdownResult:
        self.srv.request_stop("admin.shutdown", drain=M.AdminShutdown.from_wire(params).drain)
        return M.AdminShutdownResult(stopping=True)

    async def cache_list(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.AdminCacheListResult:
        registry = self.svc.registry

        def sizes() -> list[M.CachedModel]:
            return [M.CachedModel(e.name, e.path, sum(f.stat().st_size for f in Path(e.path).rglob("*") if f.is_file()),
                                  e.name in registry.loaded) for e in registry.entries.values()]

        prompts = sum(lm.model.prompt_count for lm in registry.loaded.values())
        return M.AdminCacheListResult(await asyncio.to_thread(sizes), prompts, len(self.svc.voices.list()))

    async def cache_clear(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.AdminCacheClearResult:
        svc = self.svc
        msg = M.AdminCacheClear.from_wire(params)
        if msg.what == "prompts":
            n = sum(lm.model.clear_prompts() for lm in svc.registry.loaded.values())
            return M.AdminCacheClearResult(cleared_prompts=n)
        if msg.what == "model":
            entry = svc.registry.pick(msg.model)
            root = Path(svc.cfg.models_dir).resolve() if svc.cfg.models_dir else None
            path = Path(entry.path).resolve()
            if root is None or root not in path.parents:
                raise TTSError("forbidden", "only checkpoints inside models_dir can be removed")
            if entry.name in svc.registry.loaded:
                raise TTSError("busy", f"{entry.name} is loaded; unload it first")
            if msg.confirm != entry.name:
                raise TTSError("bad_request", f"pass confirm={entry.name!r} to delete {path}")
            await asyncio.to_thread(shutil.rmtree, path)
            svc.registry.entries.pop(entry.name, None)
            return M.AdminCacheClearResult(removed=entry.name)
        raise TTSError("bad_request", "what must be 'prompts' or 'model'")


def _vram_bytes() -> int | None:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return int(torch.cuda.memory_allocated())
    except (AttributeError, ImportError):
        pass  # torch is half-imported on the engine thread right now: no figure yet
    return None


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
