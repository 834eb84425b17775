"""Concurrency benchmark: the real daemon over its socket, sequential vs batched engine.

For each engine backend a daemon is started on a random-weight checkpoint (all of them at
once: memory for each); after a warm-up (and once its codec kernels are built:
engine/prewarm.py), N = 1, 2, 4, 8 (and 16) clients
each send one sentence at the same moment (unseeded, as calls are; ``--seeded``: seeded,
which int8 computes as if alone), in ``--waves`` waves per N, the engines in turn. Printed, side
by side from one run:

  first audio p50 / p95 over all streams of the waves (client side: request sent -> first
  audio chunk received),
  per-stream x-realtime (audio seconds / that stream's wall seconds; the minimum over streams),
  aggregate x-realtime (all audio seconds / wall seconds of the whole wave),
  and batched / sequential ratios.

    python bench/bench_concurrency.py                   # tiny model, CPU
    python bench/bench_concurrency.py --levels 1,8 --frames 40 --size 0.6b
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import add_model_args, checkpoint

from qwen3ttsd.client import Client

SPEAKERS = ["ryan", "vivian", "serena", "aiden", "eric", "dylan", "uncle_fu", "ono_anna", "sohee"]
BYTES_PER_SECOND = 24000 * 2  # pcm16 mono 24 kHz


def start_daemon(model: str, runtime: Path, engine: str, max_batch: int, device: str = "auto") -> subprocess.Popen:
    """``engine``: sequential | batched (the daemon's defaults: on the CPU int8 linears and the
    codec on its own lane from 2 cores), with options: ``+rowdecode`` (one codec call per
    stream, not one per step), ``+overlap`` / ``+nooverlap`` (the codec lane forced on / off),
    ``+int8`` / ``+int4`` / ``+fp32`` (the linears' QWEN3TTSD_QUANT forced), ``+noprewarm`` (no codec
    kernel prewarm after the load)."""
    engine, *flags = engine.split("+")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QWEN3TTSD_", "LISTEN_", "NOTIFY_"))}
    env.update(QWEN3TTSD_MODEL=model, QWEN3TTSD_STATE_DIR=str(runtime / "state"), QWEN3TTSD_CONFIG="/nonexistent",
               QWEN3TTSD_IDLE_TIMEOUT="-1", QWEN3TTSD_ENGINE=engine, QWEN3TTSD_MAX_BATCH=str(max_batch),
               QWEN3TTSD_QUEUE_MAX="256", QWEN3TTSD_BATCH_DECODE="0" if "rowdecode" in flags else "1",
               QWEN3TTSD_OVERLAP_DECODE="1" if "overlap" in flags else "0" if "nooverlap" in flags else "auto",
               QWEN3TTSD_QUANT=next((q for q in ("int8", "int4") if q in flags), "none" if "fp32" in flags else "auto"),
               QWEN3TTSD_PREWARM="0" if "noprewarm" in flags else "1",
               QWEN3TTSD_DEVICE=device, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    p = subprocess.Popen([sys.executable, "-m", "qwen3ttsd.daemon.main", "--runtime-dir", str(runtime)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    end = time.monotonic() + 120
    while not (runtime / "tts.sock").exists():
        if p.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"daemon did not start: {p.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    return p


def one_stream(sock: str, i: int, frames: int, start: threading.Event, out: list, seeded: bool) -> None:
    with Client(sock, timeout=1200) as c:
        start.wait()
        t0 = time.monotonic()
        first = None
        nbytes = 0
        for ev in c.synthesize(text=f"This is concurrent stream number {i}, speaking one sentence.",
                               voice=SPEAKERS[i % len(SPEAKERS)], language="english", seed=1000 + i if seeded else None,
                               max_frames=frames, chunk_frames=4, format="pcm16"):
            if ev.kind == "chunk" and ev.audio:
                nbytes += len(ev.audio)
                if first is None:
                    first = time.monotonic() - t0
        total = time.monotonic() - t0
    out[i] = (first, total, nbytes / BYTES_PER_SECOND)


def wave(sock: str, n: int, frames: int, seeded: bool = False) -> dict:
    """``n`` streams started together: each one's first-audio delay and x-realtime, and the
    wave's aggregate x-realtime."""
    out: list = [None] * n
    start = threading.Event()
    threads = [threading.Thread(target=one_stream, args=(sock, i, frames, start, out, seeded)) for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # all connected
    t0 = time.monotonic()
    start.set()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    return {"firsts": [r[0] for r in out], "rts": [r[2] / r[1] for r in out],
            "aggregate": sum(r[2] for r in out) / wall}


def summary(runs: list[dict]) -> dict:
    """Waves of one N: first-audio p50/p95 over all their streams (one wave of 8 is too few
    samples for a stable p95), the slowest stream's x-realtime, the median wave's aggregate."""
    firsts = sorted(f for r in runs for f in r["firsts"])
    return {
        "first_p50": statistics.median(firsts),
        "first_p95": firsts[min(len(firsts) - 1, int(round(0.95 * (len(firsts) - 1))))],
        "rt_min": min(x for r in runs for x in r["rts"]),
        "aggregate": statistics.median(r["aggregate"] for r in runs),
    }


def wait_prewarm(runtime: Path, timeout: float = 900) -> None:
    """Measure the steady state: wait until the daemon has built the codec's kernels for
    every batch shape (engine/prewarm.py) and written its weight cache after a first start
    (engine/weight_cache.py: seconds of CPU at 0.6B, at idle); both are in admin.status."""
    end = time.monotonic() + timeout
    with Client(str(runtime / "admin.sock"), timeout=60) as c:
        while time.monotonic() < end:
            loaded = c.call("admin.status", {})["loaded"].values()
            if all((info["backend"].get("codec_prewarm") or {"done": True})["done"]
                   and (info.get("weight_cache") or {}).get("state") not in ("miss", "rebuilt") for info in loaded):
                return
            time.sleep(0.2)


def run_side_by_side(model: str, engines: list[str], levels: dict[str, list[int]], frames: int, max_batch: int,
                     waves: int, device: str = "auto", seeded: bool = False) -> dict[str, dict[int, dict]]:
    """Every engine's daemon started, warmed and settled first; then each wave of each N runs
    on each engine in turn, so that the machine's drift over the minutes of a run (other
    tenants, frequency) falls on all engines alike, not on whichever ran last."""
    runs: dict[str, dict[int, list[dict]]] = {e: {n: [] for n in levels[e]} for e in engines}
    with tempfile.TemporaryDirectory() as tmp:
        daemons = {}
        try:
            for e in engines:
                rt = Path(tmp) / e
                rt.mkdir()
                daemons[e] = start_daemon(model, rt, e, max_batch, device), str(rt / "tts.sock")
                wave(daemons[e][1], 2, 4)  # load the model, warm up kernels
                wait_prewarm(rt)
            for _ in range(waves):
                for n in sorted({n for e in engines for n in levels[e]}):
                    for e in engines:
                        if n in levels[e]:
                            runs[e][n].append(wave(daemons[e][1], n, frames, seeded))
        finally:
            for p, _ in daemons.values():
                p.terminate()
                p.wait(30)
    return {e: {n: summary(r) for n, r in by_n.items()} for e, by_n in runs.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    add_model_args(ap)
    ap.add_argument("--levels", default="1,2,4,8,16")
    ap.add_argument("--frames", type=int, default=40, help="frames per stream (12.5 per audio second)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--waves", type=int, default=3, help="waves per level; statistics pool their streams")
    ap.add_argument("--engines", default="sequential,batched",
                    help="comma list of sequential, batched and batched+FLAG[+FLAG] (rowdecode, overlap, "
                         "nooverlap, int8, fp32, noprewarm; see start_daemon)")
    ap.add_argument("--seeded", action="store_true", help="seeded requests (int8 computes each as if alone)")
    ap.add_argument("--sequential-levels", default="",
                    help="the sequential engine only at these N (default: --levels): it serves one stream "
                         "at a time, so N=8 of the 0.6B model takes minutes per wave")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (the daemon's QWEN3TTSD_DEVICE)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads in the daemon (OMP_NUM_THREADS; 0 = torch's default, one per "
                         "core). 1 is steadiest on a small shared machine (no codec lane then)")
    a = ap.parse_args()
    if a.threads:
        os.environ["OMP_NUM_THREADS"] = str(a.threads)
    levels = [int(x) for x in a.levels.split(",")]
    seq_levels = [int(x) for x in a.sequential_levels.split(",")] if a.sequential_levels else levels
    model, tmp = checkpoint(a)
    engines = a.engines.split(",")
    res = run_side_by_side(model, engines, {e: seq_levels if e == "sequential" else levels for e in engines},
                           a.frames, a.max_batch, a.waves, a.device, a.seeded)
    print(f"\nmodel {a.size}, {a.frames} frames ({a.frames / 12.5:.1f} s audio) per stream, {a.waves} waves per level, "
          f"{os.cpu_count()} CPUs, {a.threads or 'default'} torch threads, chunk 4 frames, "
          f"{'seeded' if a.seeded else 'unseeded'} requests")
    cols = ["first p50 s", "first p95 s", "min x-rt", "aggr x-rt"]
    keys = ["first_p50", "first_p95", "rt_min", "aggregate"]
    w = max(15, *(len(e) + 6 for e in engines))
    print(f"{'N':>3} {'engine':{w}} " + " ".join(f"{c:>12}" for c in cols))
    for n in levels:
        for e in engines:
            r = res[e].get(n)
            if r is not None:
                print(f"{n:>3} {e:{w}} " + " ".join(f"{r[k]:12.3f}" for k in keys))
        for e in engines[1:]:
            s, b = res[engines[0]].get(n), res[e].get(n)
            if s is not None and b is not None:
                print(f"{n:>3} {'ratio ' + e:{w}} " + " ".join(f"{b[k] / s[k]:11.2f}x" for k in keys))
    if 1 in levels:
        for e in engines:
            solo = res[e].get(1)
            if solo is None:
                continue
            print(f"{e}: per-frame time at N=1 {80 / solo['rt_min']:.1f} ms (x-rt {solo['rt_min']:.2f})")
            for n in levels[1:]:
                r = res[e].get(n)
                if r is not None:
                    print(f"{e}: N={n} first-audio p95 {r['first_p95'] / solo['first_p50']:.2f}x solo, "
                          f"aggregate {r['aggregate'] / solo['aggregate']:.2f}x solo")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
