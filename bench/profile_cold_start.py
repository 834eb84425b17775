"""Where a cold start's time goes, stage by stage, in one fresh process per trial.

bench_cold_start.py measures what a caller waits for (spawn -> first audio through the
socket); this splits the daemon's part of it, with the daemon's defaults (batched engine,
own weights, QUANT=auto, a weight cache), each trial a fresh ``python`` (page cache warm):

  import torch      ``import torch`` inside the trial (the floor: compare with the total)
  import engine     the engine and backend modules (qwen3ttsd.engine.*)
  load              Engine.load(): the checkpoint, the codec; the weight cache read beside it
  cache read        of which: WeightCache._read on its own thread (check, unpickle, repack)
  backend           the backend: int8 layers from the cache, prompts, the codec's first push
  warm-up           the backend's warm-up (what a load for a waiting request now skips)
  first audio       a request admitted -> its first Audio (prompt, first steps, first codec)
  codec             of which: StreamingDecoder pushes before that first audio

    python bench/profile_cold_start.py --checkpoint /tmp/ck06 --trials 3

The first trial fills the weight cache (a miss: it quantizes, then writes) and is not
counted. Ratios are to ``import torch`` measured in the same trials.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ["import torch", "import engine", "load", "cache read", "backend", "warm-up", "first audio", "codec"]


def trial(checkpoint: str, cache_dir: str, warm: bool) -> dict[str, float]:
    """One cold start in this (fresh) process: seconds per stage, and RSS after it."""
    t0 = time.monotonic()
    import torch  # noqa: F401

    t_torch = time.monotonic()
    from qwen3ttsd.config import DaemonConfig, load
    from qwen3ttsd.engine import Engine, LoadOptions, factory
    from qwen3ttsd.engine.backend import Audio, BackendOptions, Stream
    from qwen3ttsd.engine.engine import warmup_request
    from qwen3ttsd.engine.streaming_decoder import StreamingDecoder
    from qwen3ttsd.engine.weight_cache import WeightCache

    t_import = time.monotonic()
    spent = {"cache read": 0.0, "codec": 0.0}

    def timed(key: str, fn):  # noqa: ANN001, ANN202 - a wrapper for any signature
        def wrapper(*a, **k):  # noqa: ANN002, ANN003, ANN202
            s = time.monotonic()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.monotonic() - s
        return wrapper

    WeightCache._read = timed("cache read", WeightCache._read)
    StreamingDecoder.push = timed("codec", StreamingDecoder.push)
    StreamingDecoder.push_many = classmethod(timed("codec", StreamingDecoder.push_many.__func__))

    cfg = load(DaemonConfig, "daemon", env={})
    engine = Engine(checkpoint, LoadOptions(cfg.device, cfg.dtype, cfg.attn, cfg.compile, cfg.threads,
                                            weights=cfg.weights, quant=cfg.quant, cache_dir=cache_dir))
    engine.load()
    t_load = time.monotonic()
    spent["codec"] = 0.0
    backend = factory.make_backend(engine, BackendOptions.from_config(cfg))
    t_backend = time.monotonic()
    if warm:
        backend.warmup()
    t_warm = time.monotonic()
    spent["codec"] = 0.0
    req = warmup_request(engine)
    req.text, req.max_frames, req.first_chunk_frames = "Hello, this is the first sentence after a quiet spell.", 8, 1
    got: list[float] = []
    backend.admit(Stream(req, sink=lambda ev: got.append(time.monotonic()) if isinstance(ev, Audio) else None))
    while not got and backend.active:
        backend.step()
    t_audio = got[0] if got else float("nan")
    codec = spent["codec"]
    while backend.active:
        backend.step()
    writer = getattr(backend, "cache_writer", None)
    if writer is not None:
        writer.join(300)
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    return {"import torch": t_torch - t0, "import engine": t_import - t_torch, "load": t_load - t_import,
            "cache read": spent["cache read"], "backend": t_backend - t_load, "warm-up": t_warm - t_backend,
            "first audio": t_audio - t_warm, "codec": codec, "total": t_audio - t0, "rss": rss,
            "cache": (engine.weight_cache.status if engine.weight_cache is not None else {}).get("state", "-")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True, help="a checkpoint dir (qwen3ttsd.testing.tinymodel)")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--warm", action="store_true", help="run the load warm-up too (as before issue 19)")
    ap.add_argument("--trial", help=argparse.SUPPRESS)   # internal: one trial, JSON on stdout
    a = ap.parse_args()
    if a.trial:
        print(json.dumps(trial(a.checkpoint, a.trial, a.warm)), flush=True)
        os._exit(0)   # the prewarm's daemon thread may be mid-decode: no interpreter teardown
    with tempfile.TemporaryDirectory() as cache:
        def run() -> dict:
            cmd = [sys.executable, __file__, "--checkpoint", a.checkpoint, "--trial", cache] + (["--warm"] * a.warm)
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            return json.loads(out.strip().splitlines()[-1])

        first = run()
        runs = [run() for _ in range(a.trials)]
    med = {k: statistics.median(r[k] for r in runs) for k in [*STAGES, "total", "rss"]}
    torch_s = med["import torch"]
    print(f"{a.checkpoint}: {a.trials} trials (median), weight cache {runs[-1]['cache']}; "
          f"first trial ({first['cache']}): {first['total']:.2f} s")
    for k in STAGES:
        print(f"  {k:<14} {med[k]:>7.2f} s  {med[k] / torch_s:>6.2f}x torch")
    print(f"  {'total':<14} {med['total']:>7.2f} s  {med['total'] / torch_s:>6.2f}x torch   RSS {med['rss']:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
