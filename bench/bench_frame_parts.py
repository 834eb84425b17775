"""Where a frame's CPU time goes (issue 25 items 2 and 4): the batched backend's real steps,
timed by part - the predictor's 15 lm heads, its 15 codebook-embedding lookups, the rest of
the predictor, the talker's codebook-embedding sum, its codec head, the rest of the talker,
and the codec - at B=1 and B=8, side by side for each ``--quants`` mode (fp32 first), unseeded as calls are.

The parts are timed by wrapping the backend's own callables (``lm_heads``, ``codec_head``,
``F.embedding`` as :mod:`qwen3ttsd.engine.batched` calls it, ``predict``, ``talker_step``,
the codec lane's job), so they run inside the real loop, caches and all.

    python bench/bench_frame_parts.py --size 0.6b --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import add_model_args, checkpoint

from qwen3ttsd.engine import Engine, LoadOptions, SynthesisRequest, batched as batched_mod
from qwen3ttsd.engine.backend import BackendOptions, Stream
from qwen3ttsd.engine.batched import BatchedBackend

PARTS = ("lm heads", "pred embeds", "pred rest", "talker embeds", "codec head", "talker rest", "codec")


class Clock:
    """Seconds per named part; ``inside`` names the enclosing part (predictor or talker)."""

    def __init__(self) -> None:
        self.s: dict[str, float] = defaultdict(float)
        self.inside = ""

    def wrap(self, name: str | Callable[[], str], fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.s[name() if callable(name) else name] += time.perf_counter() - t
        return timed

    def section(self, name: str, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.inside = name
            try:
                return self.wrap(name + " total", fn)(*args, **kwargs)
            finally:
                self.inside = ""
        return timed


def instrument(b: BatchedBackend, clock: Clock) -> None:
    b.lm_heads = [clock.wrap("lm heads", h) for h in b.lm_heads]
    b.codec_head = clock.wrap("codec head", b.codec_head)
    b.predict = clock.section("pred", b.predict)          # type: ignore[method-assign]
    b.talker_step = clock.section("talker", b.talker_step)  # type: ignore[method-assign]
    b.lane._run = clock.wrap("codec", b.lane._run)         # type: ignore[method-assign]
    b.static = None  # the dynamic talker step (CPU's default path)


def patched_embedding(clock: Clock) -> SimpleNamespace:
    """``F`` for :mod:`.batched` with ``embedding`` timed by its caller (predictor / talker)."""
    f = torch.nn.functional
    ns = SimpleNamespace(**{k: getattr(f, k) for k in dir(f) if not k.startswith("__")})
    ns.embedding = clock.wrap(lambda: f"{clock.inside or 'other'} embeds", f.embedding)
    return ns


INT4_ROWS: dict[str, int] = {}   # per quant mode: up to how many rows its int4 copies serve (engine/int4.py)


def run(engine: Engine, quant: str, batch: int, frames: int, seed: int | None) -> dict[str, float]:
    """ms per step (= per frame of every row) of each part, over ``frames`` steps."""
    b = BatchedBackend(engine, BackendOptions(max_batch=batch, quant=quant, prewarm_frames=0))
    INT4_ROWS[quant] = b.status["int4_rows"]
    clock = Clock()
    instrument(b, clock)
    batched_mod.F = patched_embedding(clock)  # type: ignore[assignment]
    for i in range(batch):
        req = SynthesisRequest(text="The quick brown fox jumps over the lazy dog. " * 4, speaker="ryan",
                               seed=None if seed is None else seed + i, max_frames=frames)
        b.admit(Stream(req, sink=lambda ev: None))
    b.step()  # the prefill and the first frame: not timed
    clock.s.clear()
    steps = 0
    t0 = time.perf_counter()
    while b.active:
        b.step()
        steps += 1
    total = time.perf_counter() - t0
    s = clock.s
    out = {"lm heads": s["lm heads"], "pred embeds": s["pred embeds"],
           "pred rest": s["pred total"] - s["lm heads"] - s["pred embeds"],
           "talker embeds": s["talker embeds"], "codec head": s["codec head"],
           "talker rest": s["talker total"] - s["talker embeds"] - s["codec head"],
           "codec": s["codec"], "step": total}
    return {k: v * 1000 / steps for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    add_model_args(ap)
    ap.add_argument("--threads", default="1", help="torch threads, e.g. 1,2 (each mode at each count)")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quants", default="int8", help="e.g. none,int8,int4 (QWEN3TTSD_QUANT's values)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--seeded", action="store_true",
                    help="seeded requests (int8 then computes each row as if alone: B=8 costs ~8 rows' M=1 time)")
    a = ap.parse_args()
    threads = [int(x) for x in a.threads.split(",")]
    model, tmp = checkpoint(a)
    quants = sorted(("" if q == "none" else q for q in a.quants.split(",")), key=bool)  # fp32 first
    engines = {}
    for quant in quants:  # one each: int8 and int4 release the fp32 linears they are built from
        engines[quant] = Engine(model, LoadOptions(device="cpu", dtype="float32", weights="own"))
        engines[quant].load()
    batches = [int(x) for x in a.batches.split(",")]
    results: dict[tuple[str, int, int], list[dict[str, float]]] = defaultdict(list)
    loads = [os.getloadavg()[0]]
    modes = [(q, b, n) for q in quants for b in batches for n in threads]
    for rep in range(a.reps + 1):  # rep 0 warms up (kernels for every shape); modes alternate: side by side
        for quant, batch, n in modes:
            torch.set_num_threads(n)
            r = run(engines[quant], quant, batch, a.frames, 100 * rep if a.seeded else None)
            if rep:
                results[(quant, batch, n)].append(r)
        loads.append(os.getloadavg()[0])
    print(f"model {a.model or a.size}, {a.frames} frames, {'seeded' if a.seeded else 'unseeded'} requests, "
          f"median of {a.reps}; load average {min(loads):.2f}-{max(loads):.2f}; int4 copies serve up to "
          + ", ".join(f"{q or 'none'} {r} rows" for q, r in INT4_ROWS.items()))
    cols = (*PARTS, "step")
    print(f"{'quant':6} {'B':>2} {'thr':>3} " + " ".join(f"{c:>13}" for c in cols) + "   ms per step (% of step)")
    for (quant, batch, n), rs in results.items():
        med = {c: statistics.median(r[c] for r in rs) for c in cols}
        cells = [f"{med[c]:6.2f} ({100 * med[c] / med['step']:3.0f}%)" if c != "step" else f"{med[c]:13.2f}"
                 for c in cols]
        print(f"{quant or 'none':6} {batch:2} {n:3} " + " ".join(f"{x:>13}" for x in cells), flush=True)
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
