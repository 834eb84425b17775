"""Soak: the bridge and daemon under mixed, partly hostile load for a bounded time.

Loopback only. Starts the real bridge as its own activator (so the daemon starts on demand
and idles out) with Wyoming on, over a tiny random-weight checkpoint, then:

1. a burst - ``--burst-http`` plain HTTP requests and ``--burst-calls`` WebSocket calls at
   once (issue 21's "50 HTTP + 10 calls"): calls with missing segments, realtime refusals;
2. ``--minutes`` of everything at once: HTTP in several formats, WebSocket calls, Wyoming
   (whole and streamed), voice uploads and deletes, hostile inputs (bad JSON, deep nesting,
   lone surrogates, over-long input, a 100 KB WebSocket message, garbage on Wyoming) and
   ``--idle-conns`` idle connections held open, while ``/health`` is timed;
3. then nothing: does the daemon exit within idle_timeout + 5 s, are temp folders clean?

Prints requests, losses, bridge/daemon peak RSS and open fds, p99 ``/health`` latency.
Bounded in count too (``--max-requests``). ``make soak`` runs it for 2 minutes.

    python bench/soak.py [--minutes 2] [--queue-max 64] [--idle-timeout 10]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import websockets

from qwen3ttsd.testing import free_port, tinymodel

SENTENCES = ["Thanks for calling.", "How can I help you today?", "Your order ships tomorrow.",
             "Is there anything else?", "Have a nice day."]
FRAMES = 6                                     # per segment: the tiny model never stops by itself


@dataclass
class Tally:
    requests: Counter = field(default_factory=Counter)    # kind -> sent
    ok: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)      # "kind:code" -> count
    calls: int = 0
    calls_missing: int = 0                                # calls with a segment not spoken
    realtime_refusals: int = 0                            # call segments refused busy (after retries)
    daemon_busy: int = 0                                  # call segments the daemon refused busy (retried)
    health_ms: list[float] = field(default_factory=list)
    peak: dict[str, float] = field(default_factory=dict)

    def total(self) -> int:
        return sum(self.requests.values())

    def note_peak(self, key: str, value: float) -> None:
        self.peak[key] = max(self.peak.get(key, 0.0), value)


# --- processes ----------------------------------------------------------------------------


def proc_stats(pid: int) -> tuple[float, int] | None:
    """(RSS MB, open fds) of a process, or None once it is gone."""
    try:
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS"))
        return rss / 1024, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def start_bridge(tmp: Path, model: str, a: argparse.Namespace) -> tuple[subprocess.Popen, str, int]:
    port, wport = free_port(), free_port()
    (tmp / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QWEN3TTSD_", "QWEN3TTS_BRIDGE_"))}
    env.update(QWEN3TTSD_MODEL=model, QWEN3TTSD_STATE_DIR=str(tmp / "state"), QWEN3TTSD_CONFIG="/nonexistent",
               QWEN3TTSD_IDLE_TIMEOUT=str(a.idle_timeout), QWEN3TTSD_QUEUE_MAX=str(a.queue_max),
               QWEN3TTSD_THREADS="1", QWEN3TTSD_PREWARM="0", HF_HUB_OFFLINE="1", TMPDIR=str(tmp / "tmp"),
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    if a.realtime_reserve is not None:
        env["QWEN3TTSD_REALTIME_RESERVE"] = str(a.realtime_reserve)
    p = subprocess.Popen([sys.executable, "-m", "qwen3ttsd.bridge.main", "--activate", "--runtime-dir",
                          str(tmp / "rt"), "--port", str(port), "--wyoming", f"tcp://127.0.0.1:{wport}",
                          "--log-level", "info"], env=env, stdout=subprocess.DEVNULL,
                         stderr=open(tmp / "bridge.log", "wb"))  # noqa: SIM115 - the child owns it
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return p, url, wport
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    p.kill()
    raise RuntimeError("the bridge did not start")


def ref_wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(b"".join(int(8000 * math.sin(i / 20)).to_bytes(2, "little", signed=True)
                               for i in range(48000)))
    return buf.getvalue()


# --- clients ------------------------------------------------------------------------------


async def http_speech(c: httpx.AsyncClient, url: str, t: Tally, text: str, fmt: str = "pcm") -> None:
    t.requests["http"] += 1
    try:
        r = await c.post(url + "/v1/audio/speech", json={"input": text, "voice": "ryan", "response_format": fmt,
                                                         "max_frames": FRAMES})
        if r.status_code == 200 and r.content:
            t.ok["http"] += 1
        else:
            code = r.json().get("error", {}).get("code", r.status_code) if r.content else r.status_code
            t.errors[f"http:{code}"] += 1
    except httpx.HTTPError as e:
        t.errors[f"http:{type(e).__name__}"] += 1


async def ws_call(url: str, t: Tally, turns: int = 1, sentences: int = 4) -> None:
    """One call: each turn's sentences as LLM-like deltas, then flush; every segment must be
    spoken (``segment.done``), none may end in an error."""
    t.calls += 1
    missing = False
    try:
        async with websockets.connect(url.replace("http", "ws") + "/v1/audio/speech/stream",
                                      open_timeout=30, max_size=None) as w:
            await w.send(json.dumps({"type": "session.update", "voice": "ryan", "format": "pcm16",
                                     "max_frames": FRAMES, "text_mode": "clause"}))  # a request per sentence
            for _ in range(turns):
                text = " ".join(random.choice(SENTENCES) for _ in range(sentences))
                t.requests["ws_segment"] += sentences
                for i in range(0, len(text), 12):
                    await w.send(json.dumps({"type": "text", "text": text[i:i + 12]}))
                await w.send(json.dumps({"type": "flush"}))
                queued, done = 0, 0
                while True:
                    msg = await asyncio.wait_for(w.recv(), 180)
                    if isinstance(msg, bytes):
                        continue
                    ev = json.loads(msg)
                    if ev["type"] == "segment":
                        queued += 1
                    elif ev["type"] == "segment.done":
                        done += 1
                        t.ok["ws_segment"] += 1
                    elif ev["type"] == "error":
                        t.errors[f"ws:{ev.get('code')}"] += 1
                        if ev.get("code") == "busy":
                            t.realtime_refusals += 1
                        missing = True
                    elif ev["type"] == "flushed":
                        break
                missing = missing or done < queued
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
        t.errors[f"ws:{type(e).__name__}"] += 1
        missing = True
    t.calls_missing += missing


async def wyoming_say(port: int, t: Tally, streamed: bool) -> None:
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

    t.requests["wyoming"] += 1
    text = " ".join(random.sample(SENTENCES, 2))
    try:
        async with AsyncTcpClient("127.0.0.1", port) as c:
            if streamed:
                for ev in (SynthesizeStart(), SynthesizeChunk(text=text), SynthesizeStop()):
                    await c.write_event(ev.event())
            else:
                await c.write_event(Synthesize(text=text).event())
            until = "synthesize-stopped" if streamed else "audio-stop"
            got = 0
            while (ev := await asyncio.wait_for(c.read_event(), 180)) is not None:
                got += ev.type == "audio-chunk"
                if ev.type == "error":
                    t.errors[f"wyoming:{(ev.data or {}).get('code')}"] += 1
                    return
                if ev.type == until:
                    break
            t.ok["wyoming"] += got > 0
    except (OSError, asyncio.TimeoutError) as e:
        t.errors[f"wyoming:{type(e).__name__}"] += 1


async def upload(c: httpx.AsyncClient, url: str, t: Tally, i: int, wav: bytes) -> None:
    t.requests["upload"] += 1
    name = f"soak{i}"
    try:
        r = await c.post(url + "/v1/audio/voices", files={"file": ("ref.wav", wav, "audio/wav")},
                         data={"name": name, "consent": "synthetic test tone"})
        if r.status_code == 201:
            t.ok["upload"] += 1
            await c.delete(url + f"/v1/audio/voices/{name}")
        else:
            t.errors[f"upload:{r.status_code}"] += 1
    except httpx.HTTPError as e:
        t.errors[f"upload:{type(e).__name__}"] += 1


HOSTILE_JSON = [b'{"input": "x", "seed": Infinity}', b"[" * 50_000, b'{"input": "\\ud800 lone"}',
                b'{"input": "' + b"a" * 30_000 + b'"}', b'{"input": "x", "priority": "realtime"}',
                b'{"input": "<speak>' + b"<s>" * 2000 + b'</speak>"}', b"not json"]


async def hostile(c: httpx.AsyncClient, url: str, wport: int, t: Tally, i: int) -> None:
    """Each must be a clean 4xx (or a closed connection for the raw ones), never a 5xx."""
    t.requests["hostile"] += 1
    kind = i % (len(HOSTILE_JSON) + 2)
    try:
        if kind < len(HOSTILE_JSON):
            r = await c.post(url + "/v1/audio/speech", content=HOSTILE_JSON[kind],
                             headers={"content-type": "application/json"})
            t.ok["hostile"] += 400 <= r.status_code < 500
            if r.status_code >= 500:
                t.errors[f"hostile:{r.status_code}"] += 1
        elif kind == len(HOSTILE_JSON):  # a 100 KB WebSocket message
            async with websockets.connect(url.replace("http", "ws") + "/v1/audio/speech/stream",
                                          max_size=None, open_timeout=30) as w:
                await w.send(json.dumps({"type": "text", "text": "Hi. " * 25_000}))
                await w.send(json.dumps({"type": "cancel"}))
            t.ok["hostile"] += 1
        else:  # garbage on Wyoming
            r_, w_ = await asyncio.open_connection("127.0.0.1", wport)
            w_.write(b'{"type": "synthesize", "data_length": Infinity}\n' + b"[" * 30_000 + b"\n")
            await w_.drain()
            await asyncio.wait_for(r_.read(65536), 10)
            w_.close()
            t.ok["hostile"] += 1
    except (httpx.HTTPError, OSError, asyncio.TimeoutError, websockets.WebSocketException):
        t.ok["hostile"] += 1  # refused by closing: fine, as long as nothing else suffers


async def hold_idle(url: str, n: int, stop: asyncio.Event) -> None:
    """``n`` idle connections: half a partial HTTP request head, half nothing at all."""
    port = int(url.rsplit(":", 1)[1])
    held = []
    for i in range(n):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            if i % 2:
                w.write(b"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            held.append(w)
        except OSError:
            break
    await stop.wait()
    for w in held:
        w.close()


# --- the run ------------------------------------------------------------------------------


async def sample(bridge: int, t: Tally, stop: asyncio.Event, daemons: set[int]) -> None:
    while not stop.is_set():
        if (s := proc_stats(bridge)) is not None:
            t.note_peak("bridge_rss_mb", s[0])
            t.note_peak("bridge_fds", s[1])
        for pid in children(bridge):
            daemons.add(pid)
            if (s := proc_stats(pid)) is not None:
                t.note_peak("daemon_rss_mb", s[0])
                t.note_peak("daemon_fds", s[1])
        await asyncio.sleep(0.5)


async def health(c: httpx.AsyncClient, url: str, t: Tally, stop: asyncio.Event) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            await c.get(url + "/health", timeout=30)
            t.health_ms.append((time.monotonic() - t0) * 1000)
        except httpx.HTTPError:
            t.health_ms.append(30_000.0)
        await asyncio.sleep(0.2)


async def burst(url: str, a: argparse.Namespace) -> Tally:
    t = Tally()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=None)) as c:
        text = " ".join(SENTENCES[:3])
        await asyncio.gather(*(http_speech(c, url, t, text) for _ in range(a.burst_http)),
                             *(ws_call(url, t) for _ in range(a.burst_calls)))
    return t


async def soak(url: str, wport: int, bridge: int, a: argparse.Namespace, daemons: set[int]) -> Tally:
    t = Tally()
    stop = asyncio.Event()
    deadline = time.monotonic() + a.minutes * 60
    wav = ref_wav()

    def going() -> bool:
        return time.monotonic() < deadline and t.total() < a.max_requests

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=None)) as c:
        async def loop(step, pause: float) -> None:
            i = 0
            while going():
                await step(i)
                i += 1
                await asyncio.sleep(pause)

        fmts = ["pcm", "mp3", "wav", "opus"]
        workers = [
            *(loop(lambda i: http_speech(c, url, t, random.choice(SENTENCES), fmts[i % 4]), 0.1) for _ in range(4)),
            *(loop(lambda i: ws_call(url, t, turns=2, sentences=2), 0.5) for _ in range(2)),
            loop(lambda i: wyoming_say(wport, t, streamed=bool(i % 2)), 0.5),
            loop(lambda i: upload(c, url, t, i, wav), 2.0),
            loop(lambda i: hostile(c, url, wport, t, i), 0.3),
        ]
        side = [asyncio.create_task(x) for x in (sample(bridge, t, stop, daemons), health(c, url, t, stop),
                                                 hold_idle(url, a.idle_conns, stop))]
        await asyncio.gather(*workers)
        stop.set()
        await asyncio.gather(*side)
    return t


def idle_exit(daemons: set[int], bridge: int, limit: float) -> float | None:
    """Seconds until every daemon the run started has exited (None: not within ``limit``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        alive = [p for p in daemons | set(children(bridge)) if proc_stats(p) is not None]
        if not alive:
            return time.monotonic() - t0
        time.sleep(0.2)
    return None


def leftovers(tmp: Path) -> list[str]:
    """Temp files and half-written voices the run left."""
    out = [f"{p.relative_to(tmp)} ({p.stat().st_size} B)" for p in (tmp / "tmp").rglob("*")]
    voices = tmp / "state" / "voices"
    if voices.is_dir():
        out += [str(p.relative_to(tmp)) for p in voices.iterdir() if p.name.startswith(".")]
    return out


def busy_retries(tmp: Path) -> int:
    """Call/Wyoming segments the daemon refused as busy so far (the bridge logs each retry)."""
    try:
        return (tmp / "bridge.log").read_bytes().count(b"daemon busy; sending it again")
    except OSError:
        return 0


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else float("nan")


def report(name: str, t: Tally) -> None:
    print(f"\n== {name}")
    print(f"requests {t.total()} ({dict(t.requests)}); ok {dict(t.ok)}")
    print(f"errors {dict(t.errors) or 'none'}")
    print(f"calls {t.calls}: with missing segments {t.calls_missing}, realtime refusals {t.realtime_refusals} "
          f"(the daemon refused {t.daemon_busy} call segments as busy; the bridge sent them again)")
    if t.health_ms:
        print(f"/health: {len(t.health_ms)} probes, p50 {sorted(t.health_ms)[len(t.health_ms) // 2]:.1f} ms, "
              f"p99 {p99(t.health_ms):.1f} ms, max {max(t.health_ms):.1f} ms")
    if t.peak:
        print("peaks: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(t.peak.items())))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the mixed phase")
    ap.add_argument("--max-requests", type=int, default=20_000, help="stop the mixed phase after this many")
    ap.add_argument("--burst-http", type=int, default=50)
    ap.add_argument("--burst-calls", type=int, default=10)
    ap.add_argument("--idle-conns", type=int, default=300, help="idle connections held during the mixed phase")
    ap.add_argument("--queue-max", type=int, default=64, help="the daemon's queue_max")
    ap.add_argument("--realtime-reserve", type=int, help="the daemon's realtime_reserve (default: its own)")
    ap.add_argument("--idle-timeout", type=float, default=10.0, help="the daemon's idle_timeout")
    ap.add_argument("--model", help="checkpoint dir (default: a tiny random custom_voice one)")
    return ap.parse_args()


def main() -> int:
    a = parse_args()
    with tempfile.TemporaryDirectory(prefix="qwen3tts-soak-") as tmpname:
        tmp = Path(tmpname)
        model = a.model or str(tinymodel.build(tmp / "cv", variant="custom_voice"))
        p, url, wport = start_bridge(tmp, model, a)
        daemons: set[int] = set()
        try:
            t0 = time.monotonic()
            httpx.post(url + "/v1/audio/speech", json={"input": "Warm up.", "voice": "ryan",
                                                       "response_format": "pcm", "max_frames": 2}, timeout=300)
            print(f"cold start through the bridge: {time.monotonic() - t0:.1f} s")
            daemons.update(children(p.pid))
            b = asyncio.run(burst(url, a))
            b.daemon_busy = busy_retries(tmp)
            report(f"burst: {a.burst_http} HTTP + {a.burst_calls} calls at once (queue_max {a.queue_max})", b)
            s = asyncio.run(soak(url, wport, p.pid, a, daemons))
            s.daemon_busy = busy_retries(tmp) - b.daemon_busy
            report(f"mixed: {a.minutes:g} min, {a.idle_conns} idle connections held", s)
            exited = idle_exit(daemons, p.pid, a.idle_timeout + 5)
            print(f"\ndaemon idle exit: {'within %.1f s' % exited if exited is not None else 'NOT'} "
                  f"(limit idle_timeout {a.idle_timeout:g} s + 5 s)")
            left = leftovers(tmp)
            print(f"temp folders: {'clean' if not left else 'LEFT ' + ', '.join(left[:10])}")
            bad = exited is None or left or b.calls_missing or s.calls_missing or \
                any(k.startswith("hostile:5") for k in s.errors)
            return 1 if bad else 0
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    raise SystemExit(main())
