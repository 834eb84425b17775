"""Cold start: what the first caller after an idle exit waits for, against a bare ``import torch``.

The daemon exits when idle and the next connection starts it again (issue 19). For each
configuration a bridge runs with ``--activate`` (the activator containers use; systemd's
socket activation spawns the same way), and each trial starts with no daemon running:

  import torch      ``python -c "import torch"``: the floor any torch process pays,
  socket            connect to the daemon's socket -> first audio chunk (spawn, imports,
                    model load, prompt, first frames, first codec decode),
  bridge            ``POST /v1/audio/speech`` (streamed pcm) -> first body bytes,
  rss               the daemon's RSS after that first request (admin.status),

for each configuration SIZE[+int8][@WEIGHTS] (``@qwen_tts``: qwen-tts's from_pretrained, the
path before issue 19; the default ``own`` loads the checkpoint without transformers),

with ratios to ``import torch`` printed side by side from one run. The page cache is warm (as
after an idle exit): one first trial runs before the timed ones; with int8 it quantizes and
writes the weight cache (shown on its own line), which the timed trials then start from.

    python bench/bench_cold_start.py           # tiny: qwen-tts's loader, then the default (own)
    python bench/bench_cold_start.py --configs 0.6b+int8@qwen_tts,0.6b+int8 --trials 3
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from qwen3ttsd.client import Client
from qwen3ttsd.testing import free_port, tinymodel

TEXT = "Hello, this is the first sentence after a quiet spell."


def import_torch_s() -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.monotonic() - t0


class ActivatingBridge:
    """``qwen3tts-bridge --activate`` on a loopback port, serving one checkpoint."""

    def __init__(self, root: Path, model: str, quant: str, weights: str) -> None:
        self.rt = root / "rt"
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QWEN3TTSD_", "LISTEN_", "NOTIFY_"))}
        env.update(QWEN3TTSD_MODEL=model, QWEN3TTSD_STATE_DIR=str(root / "state"),
                   QWEN3TTSD_CONFIG="/nonexistent", QWEN3TTSD_IDLE_TIMEOUT="600", QWEN3TTSD_QUANT=quant,
                   QWEN3TTSD_WEIGHTS=weights,
                   HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        self.log = open(root / "bridge.log", "wb")  # noqa: SIM115 - written by the bridge until stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "qwen3ttsd.bridge.main", "--activate",
                                      "--runtime-dir", str(self.rt), "--port", str(self.port)],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait(lambda: self._health() is not None, "bridge up")

    def _health(self) -> dict | None:
        if self.proc.poll() is not None:
            raise RuntimeError(Path(self.log.name).read_text()[-3000:])
        try:
            return httpx.get(self.url + "/health", timeout=2).json()
        except httpx.HTTPError:
            return None

    @staticmethod
    def _wait(pred, what: str, timeout: float = 300) -> None:
        end = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > end:
                raise TimeoutError(what)
            time.sleep(0.05)

    def daemon_pid(self) -> int | None:
        health = self._health() or {}
        return (health.get("daemon") or {}).get("pid")

    def stop_daemon(self) -> None:
        """Ask a running daemon to exit and wait until it has (the next trial starts cold)."""
        if self.daemon_pid() is None:
            return
        with Client(str(self.rt / "admin.sock"), timeout=60) as c:
            c.call("admin.shutdown", {})
        self._wait(lambda: self.daemon_pid() is None, "daemon exit", 120)

    def wait_packed(self, timeout: float = 120) -> None:
        """After a start from the weight cache: wait until its int8 weights are packed (the
        first request is served while they pack: engine/weight_cache.py), so the RSS read
        next is the steady one, not the plain weights' pages beside the packed copies."""
        def packing() -> bool:
            with Client(str(self.rt / "admin.sock"), timeout=60) as c:
                loaded = c.call("admin.status", {}).get("loaded") or {}
            return any((m.get("weight_cache") or {}).get("packed") is False for m in loaded.values())

        end = time.monotonic() + timeout
        while packing() and time.monotonic() < end:
            time.sleep(0.2)

    def wait_weight_cache(self, timeout: float = 300) -> str | None:
        """After a start that quantized: wait until the daemon has written its weight cache
        (idle time; engine/weight_cache.py), so later trials start from it. Its state."""
        def state() -> str | None:
            with Client(str(self.rt / "admin.sock"), timeout=60) as c:
                loaded = c.call("admin.status", {}).get("loaded") or {}
            states = [(m.get("weight_cache") or {}).get("state") for m in loaded.values()]
            return next((s for s in states if s), None)

        end = time.monotonic() + timeout
        while (s := state()) in ("miss", "rebuilt") and time.monotonic() < end:
            time.sleep(0.2)
        return s

    def rss_mb(self) -> float:
        with Client(str(self.rt / "admin.sock"), timeout=60) as c:
            return c.call("admin.status", {})["rss_bytes"] / 2**20

    def first_audio_socket(self) -> float:
        t0 = time.monotonic()
        with Client(str(self.rt / "tts.sock"), timeout=600) as c:
            for ev in c.synthesize(text=TEXT, voice="ryan", language="english",   # no seed: as a call sends
                                   max_frames=8, chunk_frames=2, format="pcm16"):
                if ev.kind == "chunk" and ev.audio:
                    return time.monotonic() - t0
        raise RuntimeError("no audio")

    def first_audio_bridge(self) -> float:
        t0 = time.monotonic()
        body = {"model": "tts-1", "input": TEXT, "voice": "ryan", "response_format": "pcm",
                "stream_format": "audio"}
        with httpx.stream("POST", self.url + "/v1/audio/speech", json=body, timeout=600) as r:
            r.raise_for_status()
            for chunk in r.iter_bytes():
                if chunk:
                    return time.monotonic() - t0
        raise RuntimeError("no audio")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def measure(model: str, quant: str, weights: str, trials: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        b = ActivatingBridge(Path(tmp), model, quant, weights)
        try:
            first_s = b.first_audio_socket()  # page cache warm, as after an idle exit; no weight cache yet
            first_rss = b.rss_mb()
            cache = b.wait_weight_cache()
            socket_s, bridge_s, rss = [], [], []
            for _ in range(trials):
                b.stop_daemon()
                socket_s.append(b.first_audio_socket())
                b.wait_packed()
                rss.append(b.rss_mb())
                b.stop_daemon()
                bridge_s.append(b.first_audio_bridge())
            b.stop_daemon()
        finally:
            b.stop()
    return {"socket": statistics.median(socket_s), "bridge": statistics.median(bridge_s),
            "rss": statistics.median(rss), "socket_all": socket_s, "first": first_s, "first_rss": first_rss,
            "cache": cache}


def torch_rss_mb() -> float:
    out = subprocess.run([sys.executable, "-c", "import torch, resource; "
                          "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                         check=True, capture_output=True, text=True).stdout
    return int(out) / 1024


def quiet_build(path: Path, size: str) -> str:
    """A random-weight CustomVoice checkpoint (qwen-tts's import banners kept off stdout)."""
    from qwen3ttsd.engine.loader import stdout_to_stderr

    with stdout_to_stderr():
        return str(tinymodel.build(path, variant="custom_voice", size=size))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="tiny@qwen_tts,tiny",
                    help="comma list of SIZE[+int8][@WEIGHTS] (sizes: %s; weights: own (the default), "
                    "qwen_tts)" % ", ".join(sorted(tinymodel.SIZES)))
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--checkpoint", action="append", default=[], metavar="SIZE=DIR",
                    help="use this checkpoint for SIZE instead of building one")
    a = ap.parse_args()
    a.model_dir = dict(c.split("=", 1) for c in a.checkpoint)
    import_torch_s()  # warm the page cache
    torch_s = statistics.median(import_torch_s() for _ in range(3))
    torch_mb = torch_rss_mb()
    print(f"import torch: {torch_s:.2f} s, RSS {torch_mb:.0f} MB  (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs)")
    print(f"{'config':<18} {'socket s':>9} {'x torch':>8} {'bridge s':>9} {'x torch':>8} "
          f"{'RSS MB':>8} {'- torch':>8}  socket trials")
    with tempfile.TemporaryDirectory() as tmp:
        built: dict[str, str] = dict(a.model_dir)
        for config in a.configs.split(","):
            spec, _, weights = config.partition("@")
            size, _, quant = spec.partition("+")
            if size not in built:
                built[size] = quiet_build(Path(tmp) / f"cv-{size}", size)
            r = measure(built[size], quant, weights or "own", a.trials)
            print(f"{config:<18} {r['socket']:>9.2f} {r['socket'] / torch_s:>7.2f}x {r['bridge']:>9.2f} "
                  f"{r['bridge'] / torch_s:>7.2f}x {r['rss']:>8.0f} {r['rss'] - torch_mb:>+8.0f}  "
                  + " ".join(f"{s:.2f}" for s in r["socket_all"]), flush=True)
            if r["cache"]:
                print(f"{'':<18} first start (quantizing, no weight cache): {r['first']:.2f} s "
                      f"({r['first'] / torch_s:.2f}x), RSS {r['first_rss']:.0f} MB; cache {r['cache']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
