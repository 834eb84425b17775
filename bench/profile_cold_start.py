"""Where a cold start's time goes, stage by stage, in one fresh process per trial.

bench_cold_start.py measures what a caller waits for (spawn -> first audio through the
socket); this splits the daemon's part of it, with the daemon's defaults (batched engine,
own weights, QUANT=auto, a weight cache), each trial a fresh ``python`` (page cache warm):

  import torch      ``import torch`` inside the trial (the floor: compare with the total)
  import engine     the engine and backend modules (qwen3ttsd.engine.*)
  load              Engine.load(): the checkpoint, the codec; the weight cache read beside it
  cache read        of which: WeightCache.load on its own thread (check, unpickle; the repacking
                    it starts goes on into the backend stage)
  backend           the backend: int8 layers from the cache, prompts, the codec's first push
  warm-up           the backend's warm-up (what a load for a waiting request now skips)
  first audio       a request admitted -> its first Audio (prompt, first steps, first codec)
  codec             of which: StreamingDecoder pushes before that first audio

    python bench/profile_cold_start.py --checkpoint /tmp/ck06 --trials 3
    python bench/profile_cold_start.py --checkpoint /tmp/ck06 --tree before+warm=/tmp/old-checkout --tree after=.

``--tree LABEL=DIR`` profiles that checkout's package (repeatable; trials alternate between the
trees, side by side in one run; ``+warm`` in a label runs the load warm-up, as every load did
before issue 19). Each tree's first trial fills its weight cache (a miss: it quantizes, then
writes) and is not counted. Ratios are to ``import torch`` measured in the same trials;
"codec" counts the pushes of the thread that serves (not the prewarm's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("PROFILE_TREE") or str(Path(__file__).resolve().parents[1]))

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

    main = threading.current_thread()

    def timed(key: str, fn: Any, main_only: bool = True) -> Any:  # a wrapper for any signature
        def wrapper(*a: Any, **k: Any) -> Any:
            s = time.monotonic()
            try:
                return fn(*a, **k)
            finally:
                here = threading.current_thread()
                if here is main or not (main_only or "prewarm" in here.name):
                    spent[key] += time.monotonic() - s
        return wrapper

    WeightCache.load = timed("cache read", WeightCache.load, main_only=False)   # on a thread of its own: timed there
    spent["cache read"] = 0.0
    StreamingDecoder.push = timed("codec", StreamingDecoder.push, main_only=False)   # not the prewarm's
    StreamingDecoder.push_many = classmethod(timed("codec", StreamingDecoder.push_many.__func__, main_only=False))

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
    req.seed = None   # as a call sends it (a seeded request waits for the int8 packing: batched.py)
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
    if engine.weight_cache is not None:
        engine.weight_cache.packed()   # the steady RSS: the plain weights' pages gone once packed
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
    ap.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR",
                    help="profile this checkout (repeatable; '+warm' in LABEL: with the load warm-up)")
    ap.add_argument("--trial", help=argparse.SUPPRESS)   # internal: one trial, JSON on stdout
    a = ap.parse_args()
    if a.trial:
        print(json.dumps(trial(a.checkpoint, a.trial, a.warm)), flush=True)
        os._exit(0)   # the prewarm's daemon thread may be mid-decode: no interpreter teardown
    here = str(Path(__file__).resolve().parents[1])
    trees = [tuple(t.split("=", 1)) for t in a.tree] or [("this tree" + "+warm" * a.warm, here)]
    with tempfile.TemporaryDirectory() as tmp:
        def run(label: str, tree: str) -> dict:
            cmd = [sys.executable, __file__, "--checkpoint", a.checkpoint, "--trial", f"{tmp}/{label}"]
            env = dict(os.environ, PROFILE_TREE=str(Path(tree).resolve()), PYTHONPATH=str(Path(tree).resolve()))
            out = subprocess.run(cmd + ["--warm"] * ("+warm" in label), check=True, capture_output=True,
                                 text=True, env=env).stdout
            return json.loads(out.strip().splitlines()[-1])

        first = {label: run(label, tree) for label, tree in trees}
        runs: dict[str, list[dict]] = {label: [] for label, _ in trees}
        for _ in range(a.trials):
            for label, tree in trees:
                runs[label].append(run(label, tree))
    meds = {label: {k: statistics.median(r[k] for r in rs) for k in [*STAGES, "total", "rss"]}
            for label, rs in runs.items()}
    print(f"{a.checkpoint}: median of {a.trials} trials each, alternating; seconds (x import torch)")
    print(f"  {'stage':<14}" + "".join(f"{label:>24}" for label in meds))
    for k in [*STAGES, "total"]:
        print(f"  {k:<14}" + "".join(f"{m[k]:>13.2f} ({m[k] / m['import torch']:>5.2f}x)" for m in meds.values()))
    print(f"  {'RSS MB':<14}" + "".join(f"{m['rss']:>24.0f}" for m in meds.values()))
    print("  weight cache: " + ", ".join(f"{label}: first trial {first[label]['cache']} "
                                         f"{first[label]['total']:.2f} s, then {rs[-1]['cache']}"
                                         for label, rs in runs.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
