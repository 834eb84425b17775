"""Streamed text into the phone WebSocket: a simulated LLM writes its answer at 15 / 30 /
100 tokens per second (a token ~ a word piece: words are sent whole, at the rate of their
tokens), 1 and 8 concurrent calls, ``text_mode`` stream (one running generation per turn)
against clause (a generation per clause), in the same run.

Per call: first audio after the first token, underruns (gaps a 20 ms player would hear:
the player starts at the first audio and plays in real time; each time the audio received
so far runs out before more arrives counts once) and total time. Median over the calls.

    python bench/bench_text_stream.py [--model DIR] [--rates 15,30,100] [--calls 1,8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bridge import start_bridge, stop_bridge

ANSWER = ("well I think the best way to get there is to take the train to the central station and then "
          "walk north for about ten minutes past the old market until you see the museum on your left")
TOKENS_PER_WORD = 1.3
PLAYER_MS = 20
RATE = 8000   # mulaw, 1 byte per sample


async def call(url: str, mode: str, tok_s: float, lookahead: int) -> tuple[float, int, float]:
    import websockets

    async with websockets.connect(url.replace("http", "ws") + "/v1/audio/speech/stream") as ws:
        await ws.send(json.dumps({"type": "session.update", "voice": "ryan", "format": "mulaw", "seed": 1,
                                  "text_mode": mode, "text_lookahead": lookahead, "audio_header": False}))
        arrivals: list[tuple[float, int]] = []
        done = asyncio.Event()

        async def read() -> None:
            async for m in ws:
                if isinstance(m, bytes):
                    arrivals.append((time.monotonic(), len(m)))
                elif json.loads(m)["type"] == "flushed":
                    done.set()
                    return

        reader = asyncio.create_task(read())
        t0 = time.monotonic()
        for w in ANSWER.split():
            await ws.send(json.dumps({"type": "text", "text": w + " "}))
            await asyncio.sleep(TOKENS_PER_WORD / tok_s)
        await ws.send(json.dumps({"type": "flush"}))
        await asyncio.wait_for(done.wait(), 300)
        reader.cancel()
    total = time.monotonic() - t0
    first = arrivals[0][0] - t0 if arrivals else total
    return first, underruns(arrivals), total


def underruns(arrivals: list[tuple[float, int]]) -> int:
    """Times a real-time player (started at the first audio) runs dry for >= 20 ms."""
    if not arrivals:
        return 0
    start, have_s, gaps = arrivals[0][0], 0.0, 0
    for t, n in arrivals:
        if t - start > have_s + PLAYER_MS / 1000:
            gaps += 1
            start += (t - start) - have_s   # the player waited until this chunk came
        have_s += n / RATE
    return gaps


async def run(url: str, mode: str, tok_s: float, calls: int, lookahead: int) -> list[tuple[float, int, float]]:
    return list(await asyncio.gather(*(call(url, mode, tok_s, lookahead) for _ in range(calls))))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="checkpoint directory (default: a tiny random one)")
    ap.add_argument("--rates", default="15,30,100")
    ap.add_argument("--calls", default="1,8")
    ap.add_argument("--lookahead", type=int, default=4)
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    p, url, _ = start_bridge(tmp.name, a.model)
    try:
        asyncio.run(run(url, "clause", 100, 1, a.lookahead))  # cold start: spawn + load
        print(f"{'tok/s':>5} {'calls':>5} {'mode':>7} {'first audio':>12} {'underruns':>9} {'total':>8}")
        for rate in (float(r) for r in a.rates.split(",")):
            for n in (int(c) for c in a.calls.split(",")):
                for mode in ("stream", "clause"):
                    res = asyncio.run(run(url, mode, rate, n, a.lookahead))
                    f = statistics.median(r[0] for r in res)
                    u = statistics.median(r[1] for r in res)
                    t = statistics.median(r[2] for r in res)
                    print(f"{rate:5.0f} {n:5d} {mode:>7} {f * 1000:10.0f}ms {u:9.1f} {t:7.2f}s", flush=True)
    finally:
        stop_bridge(p, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
