"""``qwen3ttsd``: the daemon's entry point.

Started by systemd socket activation (or the bridge's activator, or by hand), it serves
RPC at once, loads models lazily (or before READY=1 with --preload, heart-beating
EXTEND_TIMEOUT_USEC; or at once when a caller on the speech socket woke it), and exits 0
after ``idle_timeout`` with nothing to do, which gives all of its RAM and VRAM back. Logs
go to stderr; stdout carries nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from typing import Any

from .. import __version__, checkpoints, config
from ..errors import TTSError
from ..sockets import bind_unix, refuse_pending
from .activation import caller_waiting, listen_fds
from .models import ModelRegistry
from .notify import Notifier
from .scheduler import Scheduler
from .server import Server
from .service import Service
from .state import DaemonState
from .voices import VoiceStore

log = logging.getLogger("qwen3ttsd")


def parse_args(argv: list[str] | None) -> dict:
    ap = argparse.ArgumentParser(prog="qwen3ttsd", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint directory")
    ap.add_argument("--models-dir", help="directory of checkpoint directories")
    ap.add_argument("--default-model")
    ap.add_argument("--runtime-dir", help="where tts.sock/admin.sock live when not activated")
    ap.add_argument("--state-dir", help="saved voices")
    ap.add_argument("--idle-timeout", type=float, help="seconds idle before exit (<0: never)")
    ap.add_argument("--device")
    ap.add_argument("--dtype")
    ap.add_argument("--attn")
    ap.add_argument("--compile", action="store_true", default=None)
    ap.add_argument("--preload", action="store_true", default=None)
    ap.add_argument("--log-level")
    ap.add_argument("--version", action="version", version=__version__)
    return vars(ap.parse_args(argv))


def writing_weight_cache(registry: Any) -> bool:
    """A loaded model's weight cache is being written (after a miss, at idle time): an idle
    exit waits for it, else a short idle timeout ends every start before its cache exists."""
    return any(w is not None and w.is_alive() for w in (getattr(b, "cache_writer", None) for b in registry.backends()))


def weight_cache_dir(cfg: config.DaemonConfig) -> str:
    """Where quantized weights are kept between starts ("" = not kept)."""
    from ..engine.backend import quant_setting  # torch-free

    keep = cfg.weight_cache and quant_setting(cfg.quant) != "none"
    return os.path.join(cfg.state_dir, config.WEIGHT_CACHE_DIR) if keep else ""


def load_for_the_waiting_caller(registry: ModelRegistry, scheduler: Scheduler) -> None:
    """A caller on the speech socket woke us: it is about to ask for speech, so the default
    model starts loading now, while its request is still being written and read (issue 19:
    overlap). Requests run after this load on the engine thread; one for another model
    loads that one as usual."""
    entry = registry.pick(None)
    log.info("a caller is waiting: loading %s", entry.name)

    def report(fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("loading %s failed: %s", entry.name, fut.exception())

    scheduler.run_call(lambda: registry.load(entry), asyncio.get_running_loop()).add_done_callback(report)


def cannot_start(why: str, sockets: dict[str, socket.socket], notifier: Notifier) -> int:
    """A setting this daemon cannot run with: said on stderr, as its sd_notify STATUS
    (``systemctl status``; the activator's ``/health``) and to every caller already waiting
    (a ``$/error``: a client hears why, not "closed the connection"). Exit status 2."""
    print(f"qwen3ttsd: {why}", file=sys.stderr)
    notifier.status(why)
    refusal = TTSError("unavailable", f"the daemon cannot start: {why}", retryable=False)
    for listener in sockets.values():
        refuse_pending(listener, refusal)
    return 2


def main(argv: list[str] | None = None) -> int:
    overrides = parse_args(argv)
    notifier = Notifier()
    sock_info: dict[str, dict] = {}
    sockets = listen_fds(info=sock_info)
    try:
        cfg = config.load(config.DaemonConfig, "daemon", overrides)
    except (ValueError, OSError) as e:
        return cannot_start(f"bad configuration: {e}", sockets, notifier)
    logging.basicConfig(stream=sys.stderr, level=cfg.log_level.upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    speaker_waiting = caller_waiting(sockets.get("tts"))
    from ..engine.backend import BackendOptions  # torch-free
    from ..engine.loader import LoadOptions  # torch-free dataclass

    fleet = None
    try:
        if cfg.engine == "upstream":  # other engines do the work: no model, no torch here
            from ..upstream.setup import build

            registry, fleet = build(cfg)
        else:
            registry = ModelRegistry(
                cfg.model, cfg.models_dir, cfg.default_model, cfg.max_loaded_models,
                LoadOptions(cfg.device, cfg.dtype, cfg.attn, cfg.compile, cfg.threads,
                            weights=cfg.weights if cfg.engine == "batched" else "qwen_tts",
                            quant=cfg.quant if cfg.engine == "batched" else "none",
                            cache_dir=weight_cache_dir(cfg)),
                BackendOptions.from_config(cfg))
    except ValueError as e:
        return cannot_start(f"bad configuration: {e}", sockets, notifier)
    if not sockets:   # bound only once the settings are known to be good
        sockets = {"tts": bind_unix(cfg.tts_socket, 0o660), "admin": bind_unix(cfg.admin_socket, 0o660)}
        sock_info = {n: {"fd": s.fileno(), "identified_by": "bound"} for n, s in sockets.items()}
        log.info("not socket-activated; listening on %s and %s", cfg.tts_socket, cfg.admin_socket)
    if not registry.entries:
        log.warning("%s (models_dir %r): synthesis requests will fail", checkpoints.NO_MODEL_MESSAGE,
                    cfg.models_dir)
    scheduler = Scheduler(registry, cfg.queue_max, cfg.realtime_reserve)
    state = DaemonState(cfg, registry, scheduler, VoiceStore(cfg.state_dir), notifier, fleet=fleet)
    service = Service(state)
    server = Server(sockets, service.handle, notifier=notifier, idle_timeout=cfg.idle_timeout,
                    conn_idle_timeout=cfg.conn_idle_timeout, admin_group=cfg.admin_group,
                    is_busy=lambda: scheduler.busy, drain_timeout=cfg.drain_timeout,
                    max_connections=cfg.max_connections, finishing=lambda: writing_weight_cache(registry))
    state.server = server
    state.sockets_info = sock_info

    async def run() -> str:
        if cfg.preload and registry.entries:
            entry = registry.pick(None)
            notifier.status(f"loading {entry.name}")
            fut = scheduler.run_call(lambda: registry.load(entry), asyncio.get_running_loop())
            while not fut.done():
                notifier.extend_timeout(30)
                await asyncio.wait([fut], timeout=10)
            try:
                fut.result()
            except TTSError as e:
                log.error("preload failed: %s", e.message)
        elif speaker_waiting and registry.entries:
            load_for_the_waiting_caller(registry, scheduler)
        notifier.ready(state.status_line())
        return await server.serve()

    reason = asyncio.run(run())
    scheduler.stop()
    log.info("exiting (%s) after serving %d requests", reason, state.served)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)  # do not wait for torch's worker threads: exit frees RAM and VRAM now


if __name__ == "__main__":
    raise SystemExit(main())
