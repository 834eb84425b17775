"""A tiny socket activator for hosts without systemd (Docker, Synology Container Manager).

It does what PID 1 does for ``qwen3ttsd.socket`` + ``qwen3ttsd-admin.socket``: holds the
listening sockets for ever, and when a connection is pending and no daemon runs, spawns
the daemon with the ``LISTEN_FDS`` protocol (fds 3 and 4, ``LISTEN_FDNAMES=tts:admin``,
``LISTEN_PID`` = the child's pid) and a ``NOTIFY_SOCKET`` it reads READY/STATUS/STOPPING
from. After the daemon's idle exit, connections wait in the kernel backlog until the next
spawn, so none is lost. The daemon code path is the same as under systemd.

A daemon that dies before READY=1 is retried with backoff; while it keeps failing, pending
connections are accepted and closed so clients get an immediate error instead of hanging
(the bridge turns that into a 503). A daemon that crashes after READY=1 is simply started
again by the next connection (the bridge resends a request that got no audio).

Recovery: the daemon gets SIGTERM when the activator dies (``PR_SET_PDEATHSIG``), so a killed
bridge leaves no orphan holding the sockets; and a restarted activator that finds the
sockets still served (a daemon it did not start) asks that daemon to leave over the admin
socket and takes the socket files over. Stale ``.notify-PID`` sockets of dead activators are
removed at start.

Torch-free; used by ``qwen3tts-bridge --activate`` and runnable alone:
``python -m qwen3ttsd.activator --runtime-dir DIR -- qwen3ttsd [args]``.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from . import config
from .errors import TTSError
from .sockets import bind_unix, refuse_pending, socket_in_use

log = logging.getLogger("qwen3ttsd.activator")

NAMES = ("tts", "admin")
PR_SET_PDEATHSIG = 1
RETIRE_TIMEOUT_S = 30.0     # a stray daemon drains its streams, then lets go of the sockets


def die_with_parent() -> None:
    """In the child: SIGTERM when the activator (our parent) dies, however it dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the stray-daemon retirement below still recovers


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Activator:
    def __init__(self, runtime_dir: str | os.PathLike, command: list[str], *,
                 env: dict[str, str] | None = None, tts_mode: int = 0o660, admin_mode: int = 0o660,
                 tts_path: str | None = None, admin_path: str | None = None) -> None:
        rd = Path(runtime_dir)
        self.paths = {"tts": Path(tts_path or rd / "tts.sock"), "admin": Path(admin_path or rd / "admin.sock")}
        self.command = command
        self.env = dict(os.environ if env is None else env)
        self.modes = {"tts": tts_mode, "admin": admin_mode}
        self.sockets: dict[str, socket.socket] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self.state = "stopped"       # stopped | starting | ready | stopping | failed
        self.status = ""
        self.last_status = ""        # the last STATUS a daemon sent (kept after it exits)
        self.spawns = 0
        self.failures = 0
        self.last_exit: int | None = None
        self.error = ""              # why the last daemon could not start (its own words if it said)
        self._backoff_until = 0.0
        self._notify: socket.socket | None = None
        self._notify_path = rd / f".notify-{os.getpid()}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._armed = False
        self._closed = False

    # --- setup -------------------------------------------------------------------------

    def open(self) -> None:
        self._remove_stale_notify_sockets()
        if any(socket_in_use(p) for p in self.paths.values()):
            self._retire_stray_daemon()
        for name in NAMES:
            self.sockets[name] = bind_unix(self.paths[name], self.modes[name], backlog=4096)
        try:
            self._notify_path.unlink()
        except FileNotFoundError:
            pass
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(self._notify_path))
        self._notify.setblocking(False)

    def _remove_stale_notify_sockets(self) -> None:
        for p in self._notify_path.parent.glob(".notify-*"):
            pid = p.name.removeprefix(".notify-")
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                p.unlink(missing_ok=True)

    def _retire_stray_daemon(self) -> None:
        """Someone still serves our sockets (a daemon whose activator died without taking
        it along): ask it to drain and exit, then wait until the sockets are free."""
        from .client import Client

        log.warning("%s is still served by a daemon this activator did not start; asking it to exit",
                    self.paths["tts"])
        try:
            with Client(str(self.paths["admin"]), timeout=5) as c:
                c.call("admin.shutdown", {"drain": True})
        except Exception as e:  # noqa: BLE001 - it may be exiting already; the wait decides
            log.warning("could not ask it over %s: %s", self.paths["admin"], e)
        deadline = time.monotonic() + RETIRE_TIMEOUT_S
        while any(socket_in_use(p) for p in self.paths.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.paths['tts']} is still in use by another process")
            time.sleep(0.1)

    async def start(self) -> None:
        """Begin watching (call from the event loop that will own the activator)."""
        if not self.sockets:
            self.open()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._notify_socket().fileno(), self._on_notify)
        self._arm()

    def _notify_socket(self) -> socket.socket:
        assert self._notify is not None, "open() first"
        return self._notify

    def _arm(self) -> None:
        if self._armed or self._closed:
            return
        loop = asyncio.get_running_loop()
        for name, s in self.sockets.items():
            loop.add_reader(s.fileno(), self._on_pending, name)
        self._armed = True

    def _disarm(self) -> None:
        if not self._armed:
            return
        loop = asyncio.get_running_loop()
        for s in self.sockets.values():
            loop.remove_reader(s.fileno())
        self._armed = False

    # --- events ------------------------------------------------------------------------

    def _on_notify(self) -> None:
        while True:
            try:
                data = self._notify_socket().recv(4096)
            except (BlockingIOError, OSError):
                return
            fields = dict(line.partition("=")[::2] for line in data.decode(errors="replace").splitlines())
            if fields.get("READY") == "1":
                self.state = "ready"
                self.failures = 0
            stopping = fields.get("STOPPING") == "1"
            if stopping:
                self.state = "stopping"
            if "STATUS" in fields:
                self.status = fields["STATUS"]
                if not stopping:
                    self.last_status = fields["STATUS"]  # what it was doing, not that it leaves

    def _on_pending(self, name: str) -> None:
        if self.proc is not None:
            return
        now = time.monotonic()
        if now < self._backoff_until:
            # Daemon keeps failing: fail fast rather than leave clients hanging.
            self._reject_pending()
            return
        self._disarm()  # level-triggered: stop watching while a daemon owns the sockets
        asyncio.get_running_loop().create_task(self._spawn())

    def _reject_pending(self) -> None:
        """Tell the waiting clients why no daemon serves them (each gets a ``$/error``)."""
        refusal = TTSError("unavailable", self.error or "the daemon cannot start")
        for s in self.sockets.values():
            refuse_pending(s, refusal, self._loop)

    async def _spawn(self) -> None:
        fds = [self.sockets[n].fileno() for n in NAMES]

        def child_setup() -> None:
            # fds 3 and 4 without CLOEXEC; via temporaries >= 10 so dup2 never hits itself.
            tmp = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds]
            for i, t in enumerate(tmp):
                os.dup2(t, 3 + i, inheritable=True)
                os.close(t)
            os.setsid()
            die_with_parent()

        env = {k: v for k, v in self.env.items() if not k.startswith("LISTEN_")}
        env.update(LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=":".join(NAMES),
                   NOTIFY_SOCKET=str(self._notify_path))
        # LISTEN_PID must be the daemon's own pid: set it from the shell that execs it.
        argv = ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "qwen3ttsd", *self.command]
        self.state, self.status = "starting", "starting"
        self.spawns += 1
        t0 = time.monotonic()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                preexec_fn=child_setup, pass_fds=(3, 4))
        except OSError as e:
            log.error("cannot start the daemon: %s", e)
            self.proc = None
            self._failed()
            self._arm()
            return
        log.info("spawned daemon pid %d (#%d)", self.proc.pid, self.spawns)
        rc = await self.proc.wait()
        self._on_notify()   # its last STATUS (why it could not start) may still be queued
        self.last_exit = rc
        never_ready = self.state == "starting"
        self.proc = None
        log.info("daemon exited with %s after %.1f s", rc, time.monotonic() - t0)
        if never_ready:
            self._failed()  # it cannot start: back off instead of spawning in a loop
        else:
            if rc != 0:
                log.warning("daemon exited with %s after it was ready; the next connection starts it again", rc)
            self.state, self.status = "stopped", "idle (not running)" if rc == 0 else f"exited with {rc}"
        self._arm()

    def _failed(self) -> None:
        """Back off: until then _on_pending rejects pending clients instead of spawning."""
        said = self.status if self.state == "starting" and self.status != "starting" else ""
        self.error = f"the daemon cannot start (exit {self.last_exit})" + (f": {said}" if said else "")
        self.failures += 1
        self.state = "failed"
        self.status = f"{self.error}; {self.failures} consecutive failures"
        delay = min(30.0, 0.5 * 2 ** min(self.failures, 6))
        self._backoff_until = time.monotonic() + delay

    # --- teardown ----------------------------------------------------------------------

    async def close(self, timeout: float = 30.0) -> None:
        self._closed = True
        if self._loop is not None:
            self._disarm()
            try:
                self._loop.remove_reader(self._notify_socket().fileno())
            except (ValueError, OSError):
                pass
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for s in self.sockets.values():
            s.close()
        if self._notify is not None:
            self._notify.close()
            try:
                self._notify_path.unlink()
            except FileNotFoundError:
                pass

    def info(self) -> dict:
        return {"state": self.state, "status": self.status, "pid": self.proc.pid if self.proc else None,
                "spawns": self.spawns, "failures": self.failures, "last_exit": self.last_exit,
                "last_status": self.last_status, "error": self.error if self.state == "failed" else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qwen3ttsd.activator")
    ap.add_argument("--runtime-dir", help="default: the daemon's runtime_dir setting")
    ap.add_argument("--mode", default="660", help="octal socket mode (both sockets)")
    ap.add_argument("command", nargs="*", help="daemon command (default: qwen3ttsd)")
    a = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cmd = a.command or ["qwen3ttsd"]
    mode = int(a.mode, 8)
    cfg = config.load(config.DaemonConfig, "daemon", {"runtime_dir": a.runtime_dir})
    act = Activator(cfg.runtime_dir, cmd, tts_mode=mode, admin_mode=mode, tts_path=cfg.tts_socket,
                    admin_path=cfg.admin_socket)

    async def run() -> None:
        await act.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await act.close()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
