"""Process-level helpers for end-to-end tests: real daemons, real sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from qwen3ttsd.client import Client

PY = sys.executable
DAEMON = [PY, "-m", "qwen3ttsd.daemon.main"]


def daemon_env(model: Path | str, state_dir: Path | str, **extra: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QWEN3TTSD_", "LISTEN_", "NOTIFY_"))}
    env.update(QWEN3TTSD_MODEL=str(model), QWEN3TTSD_STATE_DIR=str(state_dir), HF_HUB_OFFLINE="1",
               QWEN3TTSD_CONFIG="/nonexistent", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    env.update({f"QWEN3TTSD_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def wait_for(pred, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def synth(path: str | Path, timeout: float = 300, **params) -> tuple[dict, bytes, list]:
    audio = bytearray()
    events = []
    with Client(str(path), timeout=timeout) as c:
        result = None
        for ev in c.synthesize(**params):
            events.append(ev.kind)
            if ev.kind == "chunk":
                audio += ev.audio
            elif ev.kind == "result":
                result = ev.to_wire()  # the SynthesizeResult as its wire map
    return result, bytes(audio), events


class NotifyListener:
    """A fake $NOTIFY_SOCKET: collects sd_notify datagrams."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except (socket.timeout, BlockingIOError):
                return self.messages

    def close(self) -> None:
        self.sock.close()


def start_daemon(runtime: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    p = subprocess.Popen(DAEMON + ["--runtime-dir", str(runtime), *args], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Both sockets: the daemon binds them one after the other, and a loaded box can run the
    # test between the two binds (CI, stop 33: admin.sock missing right after tts.sock).
    wait_for(lambda: all((runtime / s).exists() for s in ("tts.sock", "admin.sock")) or p.poll() is not None,
             30, what="daemon sockets")
    if p.poll() is not None:
        raise RuntimeError(p.stderr.read().decode()[-3000:])
    return p


async def wyoming_audio_bytes(port: int, synthesize, timeout: float = 120) -> int:
    """Send one Wyoming ``Synthesize`` to ``port``; the audio bytes that came before audio-stop."""
    import asyncio

    from wyoming.audio import AudioChunk, AudioStop
    from wyoming.client import AsyncTcpClient

    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(synthesize.event())
        n = 0
        while True:
            ev = await asyncio.wait_for(c.read_event(), timeout)
            if AudioChunk.is_type(ev.type):
                n += len(AudioChunk.from_event(ev).audio)
            elif AudioStop.is_type(ev.type):
                return n
