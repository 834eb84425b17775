"""Code-predictor benchmark (issue 25 item 3): the 15 predictor steps of one frame with the
growing ``torch.cat`` cache (:class:`StepKV`) vs the preallocated one
(:mod:`qwen3ttsd.engine.predictor_loop`): ms per frame, aten ops and allocating ops per
frame (ops that are neither views nor in-place), at B=1 and B=8, fp32 and int8.

    python bench/bench_predictor.py --size 0.6b --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import add_model_args, checkpoint

from qwen3ttsd.engine import Engine, LoadOptions
from qwen3ttsd.engine.backend import BackendOptions
from qwen3ttsd.engine.batched import BatchedBackend
from qwen3ttsd.engine.kv_cache import StepKV
from qwen3ttsd.testing.op_count import OpCounter


def frame(b: BatchedBackend, hidden, c0):
    return b.predict(hidden, c0, lambda j, logits: logits.argmax(-1))


def measure(b: BatchedBackend, batch: int, reps: int) -> tuple[float, int, int, int]:
    hidden = torch.randn(batch, 1, b.code_tables[0].shape[1])
    c0 = torch.randint(0, b.code_tables[1].shape[0], (batch,))
    for _ in range(3):
        frame(b, hidden, c0)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        frame(b, hidden, c0)
        times.append(time.perf_counter() - t)
    with OpCounter() as ops:
        frame(b, hidden, c0)
    return statistics.median(times), sum(ops.ops.values()), ops.allocs, ops.ops["cat"]


def main() -> int:
    ap = argparse.ArgumentParser()
    add_model_args(ap)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--quants", default="none,int8")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, tmp = checkpoint(a)
    engine = Engine(model, LoadOptions(device="cpu", dtype="float32"))
    engine.load()
    print(f"model {a.size}, {torch.get_num_threads()} thread(s), median of {a.reps} frames")
    print(f"{'quant':6} {'B':>2} {'cache':8} {'ms/frame':>9} {'ops':>6} {'allocs':>7} {'cats':>5}")
    for quant in a.quants.split(","):
        b = BatchedBackend(engine, BackendOptions(max_batch=8, quant="" if quant == "none" else quant))
        static = b.step_kv
        for batch in (1, 8):
            for name, cache in (("cat", StepKV), ("static", static)):
                b.step_kv = cache
                ms, ops, allocs, cats = measure(b, batch, a.reps)
                print(f"{quant:6} {batch:2} {name:8} {ms * 1000:9.2f} {ops:6} {allocs:7} {cats:5}", flush=True)
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
