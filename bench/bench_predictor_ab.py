"""The predictor's frame, two source trees side by side (issue 25 item 3): one worker process
per tree (its own ``PYTHONPATH``), the same checkpoint, timed alternately (:mod:`ab`) so a shared box's
noise falls on both; per frame: torch-profiler ops (top-level and with children), ATen
``empty``/``empty_strided`` calls, dispatched ops and allocating ops (:class:`OpCounter`),
CPU time of the thread (``time.thread_time``: less swayed by other processes than wall time),
and whether the two trees give the same codes (greedy and seeded, B=1 and B=8).

    python bench/bench_predictor_ab.py --model /tmp/ck06 --old /work/main --new . --rounds 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ab import TreeWorkers, op_counts, ratio_line, serve, thread_ms


def worker(model: str, quant: str) -> None:
    """Loads the backend from this process's ``qwen3ttsd``; answers commands on stdin."""
    import torch

    from qwen3ttsd.engine import Engine, LoadOptions
    from qwen3ttsd.engine.backend import BackendOptions
    from qwen3ttsd.engine.batched import BatchedBackend
    from qwen3ttsd.engine.sampling import Sampler, Sampling, row_generator

    torch.set_num_threads(1)
    engine = Engine(model, LoadOptions(device="cpu", dtype="float32"))
    engine.load()
    b = BatchedBackend(engine, BackendOptions(max_batch=8, quant=quant, batch_decode=False))

    def frame(batch: int, seeded: bool = False):
        g = torch.Generator().manual_seed(batch)
        hidden = torch.randn(batch, 1, b.code_tables[0].shape[1], generator=g)
        c0 = torch.randint(0, b.code_tables[1].shape[0], (batch,), generator=g)
        rule = Sampling(True, 0.9, 50, 1.0) if seeded else Sampling(False, 1.0, 0, 1.0)
        sub = Sampler([rule] * batch, [row_generator("cpu", 5 + i) for i in range(batch)],
                      b.predictor.vocab_size, "cpu")
        return lambda: b.predict(hidden, c0, lambda j, logits: sub(logits))

    def handle(cmd: str, args: list[str]) -> object:
        if cmd == "codes":
            return [frame(n, s)().tolist() for n in (1, 8) for s in (False, True) for _ in range(2)]
        run = frame(int(args[0]))
        run(), run()
        if cmd == "count":
            return op_counts(run)
        return thread_ms(run, int(args[1]))  # time BATCH REPS

    serve(handle)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="checkpoint dir (qwen3ttsd/testing/tinymodel.py)")
    ap.add_argument("--old", required=True, help="source tree to compare against (e.g. /work/main)")
    ap.add_argument("--new", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--quant", default="int8")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5, help="frames per timing, median")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.model, a.quant)
        return 0
    w = TreeWorkers(__file__, {"old": a.old, "new": a.new}, ["--model", a.model, "--quant", a.quant, "--old", "-"])
    print(f"model {a.model}, quant {a.quant}, 1 thread; old {w.trees['old']}, new {w.trees['new']}")
    print("codes identical (greedy+seeded, B=1,8):", w.ask("old", "codes") == w.ask("new", "codes"))
    for batch in (1, 8):
        counts = w.ask_all(f"count {batch}")
        for key in counts["old"]:
            print(f"B={batch} {key:11} ops/frame: old {counts['old'][key]:6}  new {counts['new'][key]:6}")
    for batch in (1, 8):
        print(ratio_line(f"B={batch} CPU ms/frame", w.alternate(f"time {batch} {a.reps}", a.rounds)))
    w.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
