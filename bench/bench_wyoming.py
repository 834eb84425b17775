"""Wyoming benchmark: what the bridge's Wyoming server adds to first audio, and its memory.

Starts the real bridge (activator mode, tiny random checkpoint unless --model) with
``--wyoming``, then prints side by side from one run:
  * the bridge's RSS idle with Wyoming enabled (budget: <= 40 MB) and after the runs;
  * time to the first audio of the same request (same text, voice, chunking) straight over
    the daemon socket vs Wyoming ``synthesize`` vs the Wyoming streaming flow
    (``synthesize-start`` / ``-chunk`` / ``-stop``), warm, median of N (bar: <= 1.2x);
  * the streaming flow as an LLM drives it: an answer word by word (a word per
    ``WORD_GAP_S``, its first clause long), first audio after the first chunk (one running
    generation per turn starts after a few words; clauses wait for the first comma/stop).
Each run stops at the first audio chunk and hangs up (which cancels the generation).

    python bench/bench_wyoming.py [--model DIR] [-n 10]
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid

from bench_bridge import parse_args, rss_mb, start_bridge, stop_bridge
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from qwen3ttsd.client import AsyncClient
from qwen3ttsd.testing import free_port

TEXT = "Turning on the lights in the kitchen now."  # one clause: the streaming flow sends it whole
ANSWER = ("Sure thing I have switched on the lights in the kitchen and in the living room and the heating "
          "is set to twenty one degrees.")  # an LLM's answer: its first clause is the whole answer
WORD_GAP_S = 0.05                            # an LLM writing about twenty words a second
# what the bridge's Wyoming server asks the daemon for
PARAMS = {"text": TEXT, "voice": "ryan", "language": "auto", "format": "pcm16", "sample_rate": 24000,
          "priority": "realtime", "first_chunk_frames": 1, "chunk_frames": 2}


async def direct(sock: str) -> float:
    t0 = time.monotonic()
    async with AsyncClient(sock) as c:
        async for ev in c.synthesize(**PARAMS, session=uuid.uuid4().hex):  # as the bridge sends it
            if ev.kind == "chunk" and ev.audio:
                return time.monotonic() - t0
    raise RuntimeError("no audio")


async def wyoming(port: int, streaming: bool) -> float:
    voice = SynthesizeVoice(name="ryan")
    t0 = time.monotonic()
    async with AsyncTcpClient("127.0.0.1", port) as c:
        if streaming:
            for ev in (SynthesizeStart(voice=voice), SynthesizeChunk(text=TEXT), Synthesize(text=TEXT, voice=voice),
                       SynthesizeStop()):
                await c.write_event(ev.event())
        else:
            await c.write_event(Synthesize(text=TEXT, voice=voice).event())
        while (ev := await c.read_event()) is not None:
            if ev.type == "audio-chunk":
                return time.monotonic() - t0
            if ev.type == "error":
                raise RuntimeError(ev.data)
    raise RuntimeError("no audio")


async def wyoming_words(port: int) -> float:
    """First audio after the first ``synthesize-chunk`` when ``ANSWER`` comes word by word."""
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name="ryan")).event())

        async def write() -> None:
            for i, word in enumerate(ANSWER.split(" ")):
                await c.write_event(SynthesizeChunk(text=word if i == 0 else " " + word).event())
                await asyncio.sleep(WORD_GAP_S)
            await c.write_event(SynthesizeStop().event())

        t0 = time.monotonic()
        writer = asyncio.create_task(write())
        try:
            while (ev := await c.read_event()) is not None:
                if ev.type == "audio-chunk":
                    return time.monotonic() - t0
                if ev.type == "error":
                    raise RuntimeError(ev.data)
        finally:
            writer.cancel()
    raise RuntimeError("no audio")


def main() -> int:
    a = parse_args()
    tmp = tempfile.TemporaryDirectory()
    port = free_port()
    p, url, rt = start_bridge(tmp.name, a.model, "--wyoming", f"tcp://127.0.0.1:{port}")
    sock = str(rt / "tts.sock")
    rows: dict[str, list[float]] = {"daemon socket (direct)": [], "Wyoming synthesize": [],
                                    "Wyoming streaming": [], "Wyoming word by word": []}

    async def run() -> float:
        t0 = time.monotonic()
        await wyoming(port, False)  # cold start: spawn + load
        cold = time.monotonic() - t0
        paths = [("daemon socket (direct)", lambda: direct(sock)),
                 ("Wyoming synthesize", lambda: wyoming(port, False)),
                 ("Wyoming streaming", lambda: wyoming(port, True)),
                 ("Wyoming word by word", lambda: wyoming_words(port))]
        for i in range(a.n):
            for name, fn in paths[i % len(paths):] + paths[:i % len(paths)]:  # rotated: no path always goes first
                rows[name].append(await fn())
                await asyncio.sleep(0.5)  # let the cancelled generation wind down
        return cold

    try:
        idle = rss_mb(p.pid)
        cold = asyncio.run(run())
        busy = rss_mb(p.pid)
    finally:
        stop_bridge(p, tmp)

    print(f"\nbridge RSS with Wyoming enabled: idle {idle:.1f} MB (budget 40 MB), after {len(rows) * a.n + 1} "
          f"requests {busy:.1f} MB")
    print(f"cold start through Wyoming (spawn + model load + first audio): {cold:.2f} s\n")
    d0 = statistics.median(rows["daemon socket (direct)"])
    print(f"{'path':26} {'first audio':>12} {'vs direct':>10}   (bar: <= 1.20x)")
    for name, vals in rows.items():
        f = statistics.median(vals)
        print(f"{name:26} {f * 1000:10.1f}ms {f / d0:9.2f}x")
    words = len(ANSWER.split())
    print(f"(word by word: {words} words, one per {WORD_GAP_S * 1000:.0f} ms, the last at "
          f"{(words - 1) * WORD_GAP_S * 1000:.0f} ms; timed from the first chunk)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
