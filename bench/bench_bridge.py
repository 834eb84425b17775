"""Bridge benchmark: idle memory, and what the bridge adds to first-audio latency.

Starts the real bridge in activator mode with a tiny random checkpoint, then prints side by
side from one run:
  * the bridge's RSS idle, after traffic, and a bare ``python -c 'import uvicorn, starlette'``
    baseline (budget: < 35 MB);
  * first audio and total time for the same request through the daemon socket directly vs
    through HTTP (chunked) vs the WebSocket, warm, median of N.

    python bench/bench_bridge.py [--model DIR] [-n 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from qwen3ttsd.testing import free_port

TEXT = "Thanks for calling, how can I help you today?"  # the WebSocket splits it into 2 x 12 frames


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def direct(sock: str) -> tuple[float, float]:
    t0 = time.monotonic()
    first = None
    with Client(sock) as c:
        for ev in c.synthesize(text=TEXT, voice="ryan", format="pcm16", max_frames=24, seed=1):
            if ev.kind == "chunk" and ev.audio and first is None:
                first = time.monotonic() - t0
    return first, time.monotonic() - t0


_HTTP = httpx.Client(timeout=120)  # a real client keeps its connection; building one costs ~30 ms


def http(url: str) -> tuple[float, float]:
    t0 = time.monotonic()
    first = None
    with _HTTP.stream("POST", url + "/v1/audio/speech", json={
            "input": TEXT, "voice": "ryan", "response_format": "pcm", "max_frames": 24, "seed": 1}) as r:
        for ch in r.iter_raw():
            if ch and first is None:
                first = time.monotonic() - t0
    return first, time.monotonic() - t0


def ws(url: str) -> tuple[float, float]:
    import websockets

    async def go():
        async with websockets.connect(url.replace("http", "ws") + "/v1/audio/speech/stream") as w:
            await w.recv()
            await w.send(json.dumps({"type": "session.update", "voice": "ryan", "format": "pcm16", "seed": 1,
                                     "max_frames": 12, "text_mode": "clause"}))  # as the earlier figures
            await w.recv()
            t0 = time.monotonic()
            first = None
            await w.send(json.dumps({"type": "text", "text": TEXT}))
            await w.send(json.dumps({"type": "flush"}))
            while True:
                m = await w.recv()
                if isinstance(m, bytes):
                    first = first or time.monotonic() - t0
                elif json.loads(m)["type"] == "flushed":
                    return first, time.monotonic() - t0

    return asyncio.run(go())


def start_bridge(tmp: str, model: str | None, *args: str) -> tuple[subprocess.Popen, str, Path]:
    """The real bridge in activator mode (a tiny checkpoint unless ``model``), up and settled:
    (process, base URL, runtime dir)."""
    if model is None:
        from qwen3ttsd.testing import tinymodel

        model = str(tinymodel.build(Path(tmp) / "cv", variant="custom_voice"))
    rt = Path(tmp) / "rt"
    port = free_port()
    env = dict(os.environ, QWEN3TTSD_MODEL=model, QWEN3TTSD_STATE_DIR=str(Path(tmp) / "st"),
               QWEN3TTSD_IDLE_TIMEOUT="120", HF_HUB_OFFLINE="1")
    p = subprocess.Popen([sys.executable, "-m", "qwen3ttsd.bridge.main", "--activate", "--runtime-dir", str(rt),
                          "--port", str(port), "--log-level", "warning", *args], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    time.sleep(1.0)
    return p, url, rt


def stop_bridge(p: subprocess.Popen, tmp: tempfile.TemporaryDirectory) -> None:
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    tmp.cleanup()


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="checkpoint directory (default: a tiny random one)")
    ap.add_argument("-n", type=int, default=10, help="runs per path")
    return ap.parse_args()


def main() -> int:
    a = parse_args()
    tmp = tempfile.TemporaryDirectory()
    p, url, rt = start_bridge(tmp.name, a.model)
    try:
        idle = rss_mb(p.pid)
        base = subprocess.run([sys.executable, "-c", "import uvicorn, starlette, msgpack, os;"
                               "print(open('/proc/self/status').read())"], capture_output=True, text=True).stdout
        base_mb = int(next(line for line in base.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024
        t0 = time.monotonic()
        http(url)  # cold start: spawn + load
        cold = time.monotonic() - t0
        rows = {"daemon socket (direct)": [], "bridge HTTP": [], "bridge WebSocket": []}
        for _ in range(a.n):
            rows["daemon socket (direct)"].append(direct(str(rt / "tts.sock")))
            rows["bridge HTTP"].append(http(url))
            rows["bridge WebSocket"].append(ws(url))
        busy = rss_mb(p.pid)
    finally:
        stop_bridge(p, tmp)

    print(f"\nbridge RSS: idle {idle:.1f} MB, after {3 * a.n + 1} requests {busy:.1f} MB; "
          f"bare uvicorn+starlette+msgpack import {base_mb:.1f} MB (budget 35 MB)")
    print(f"cold start through the bridge (spawn + model load + first request): {cold:.2f} s\n")
    d0 = statistics.median(f for f, _ in rows["daemon socket (direct)"])
    print(f"{'path':26} {'first audio':>12} {'total':>9} {'first vs direct':>16}")
    for name, vals in rows.items():
        f = statistics.median(v[0] for v in vals)
        t = statistics.median(v[1] for v in vals)
        print(f"{name:26} {f * 1000:10.1f}ms {t:8.2f}s {f / d0:15.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
