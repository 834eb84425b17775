"""engine=upstream: what the front hop costs, and what two upstreams give (issue 23).

Real processes on the tiny model: upstream daemons (each with one torch thread: this is
CPU-bound) and a front daemon with ``engine = "upstream"`` over their sockets.

1. first audio, warm, one request at a time: front socket vs the upstream directly (p50/p90
   of the difference is the hop's cost; target <= 5 ms p50);
2. ``--concurrency`` streams at once: aggregate audio seconds per second through the front
   vs directly (target >= 0.95x);
3. the same through a front over two upstreams vs one (target >= 1.5x; needs >= 2 free cores).

    python bench/bench_upstream.py [--n 20] [--concurrency 16] [--frames 96]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import add_model_args, checkpoint

from qwen3ttsd.client import Client

PY = sys.executable
TEXT = "The quick brown fox jumps over the lazy dog."


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("QWEN3TTSD_", "LISTEN_", "NOTIFY_"))}
    e.update(QWEN3TTSD_CONFIG="/nonexistent", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", QWEN3TTSD_THREADS="1",
             QWEN3TTSD_IDLE_TIMEOUT="-1", TOKENIZERS_PARALLELISM="false", QWEN3TTSD_PREWARM="0")
    e.update(extra)
    return e


def start(rt: Path, e: dict[str, str]) -> subprocess.Popen:
    p = subprocess.Popen([PY, "-m", "qwen3ttsd.daemon.main", "--runtime-dir", str(rt)], env=e,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        if (rt / "tts.sock").exists():
            return p
        time.sleep(0.05)
    raise RuntimeError("daemon did not start")


def one(sock: Path, frames: int) -> tuple[float, float]:
    """(first audio s, audio s) of one request."""
    t0 = time.monotonic()
    first = None
    with Client(str(sock)) as c:
        for ev in c.synthesize(text=TEXT, voice="ryan", format="pcm16", max_frames=frames, seed=1):
            if ev.kind == "chunk" and first is None:
                first = time.monotonic() - t0
            elif ev.kind == "result":
                return first or 0.0, ev.duration_s
    raise RuntimeError("no result")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split(procs: dict[str, int], run) -> tuple[float, str]:
    """``run()``'s aggregate, and the CPU seconds each process spent per audio second."""
    before = {k: cpu_s(pid) for k, pid in procs.items()}
    t0 = time.monotonic()
    agg = run()
    audio = agg * (time.monotonic() - t0)
    spent = {k: cpu_s(pid) - before[k] for k, pid in procs.items()}
    return agg, ", ".join(f"{k} {1000 * v / audio:.1f}" for k, v in spent.items())


def aggregate(sock: Path, n: int, frames: int) -> float:
    """Audio seconds per wall second with ``n`` concurrent streams."""
    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as ex:
        audio = sum(d for _, d in ex.map(lambda _: one(sock, frames), range(n)))
    return audio / (time.monotonic() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--frames", type=int, default=96)   # 7.7 s each: the ramp-up does not dominate
    a = ap.parse_args()
    model, tmp = checkpoint(a)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        try:
            ups = []
            for i in range(2):
                rt = root / f"up{i}"
                procs.append(start(rt, env(QWEN3TTSD_MODEL=model, QWEN3TTSD_STATE_DIR=str(root / f"s{i}"),
                                           QWEN3TTSD_PRELOAD="1")))
                ups.append(rt / "tts.sock")
            fronts = {}
            for name, spec in (("one", f"unix://{ups[0]}"), ("two", f"unix://{ups[0]},unix://{ups[1]}")):
                rt = root / f"front-{name}"
                procs.append(start(rt, env(QWEN3TTSD_ENGINE="upstream", QWEN3TTSD_UPSTREAM=spec,
                                           QWEN3TTSD_STATE_DIR=str(root / f"sf-{name}"))))
                fronts[name] = rt / "tts.sock"
            for s in (*ups, *fronts.values()):   # warm every path
                one(s, 4)
            direct, front = [], []
            for _ in range(a.n):
                direct.append(one(ups[0], 4)[0])
                front.append(one(fronts["one"], 4)[0])
            diffs = sorted(f - d for f, d in zip(front, direct))
            p50 = statistics.median(diffs) * 1000
            p90 = diffs[int(0.9 * (len(diffs) - 1))] * 1000
            print(f"first audio: direct p50 {statistics.median(direct) * 1000:.1f} ms, front p50 "
                  f"{statistics.median(front) * 1000:.1f} ms; front hop p50 {p50:+.1f} ms, p90 {p90:+.1f} ms")
            for s in (ups[0], ups[1]):   # every batch shape built once (prewarm is off)
                aggregate(s, a.concurrency, a.frames)
            pids = {"up0": procs[0].pid, "up1": procs[1].pid, "front-one": procs[2].pid,
                    "front-two": procs[3].pid, "client": os.getpid()}
            agg_direct, cpu_direct = cpu_split(pids, lambda: aggregate(ups[0], a.concurrency, a.frames))
            agg_front, cpu_front = cpu_split(pids, lambda: aggregate(fronts["one"], a.concurrency, a.frames))
            print(f"{a.concurrency} concurrent: direct {agg_direct:.2f} audio-s/s, through the front "
                  f"{agg_front:.2f} ({agg_front / agg_direct:.2f}x)")
            agg_two, cpu_two = cpu_split(pids, lambda: aggregate(fronts["two"], a.concurrency, a.frames))
            print(f"{a.concurrency} concurrent through a front over two upstreams: {agg_two:.2f} audio-s/s "
                  f"({agg_two / agg_front:.2f}x one upstream; cores here: {os.cpu_count()}, "
                  f"load average {os.getloadavg()[0]:.1f})")
            for name, split in (("direct", cpu_direct), ("front, one upstream", cpu_front),
                                ("front, two upstreams", cpu_two)):
                print(f"  CPU ms per audio s, {name}: {split}")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
