"""The predictor's frame, two source trees side by side (issue 25 item 3): one worker process
per tree (its own ``PYTHONPATH``), the same checkpoint, timed alternately so a shared box's
noise falls on both; per frame: torch-profiler ops (top-level and with children), ATen
``empty``/``empty_strided`` calls, dispatched ops and allocating ops (:class:`OpCounter`),
CPU time of the thread (``time.thread_time``: less swayed by other processes than wall time),
and whether the two trees give the same codes (greedy and seeded, B=1 and B=8).

    python bench/bench_predictor_ab.py --model /tmp/ck06 --old /work/main --new . --rounds 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def worker(model: str, quant: str) -> None:
    """Loads the backend from this process's ``qwen3ttsd``; answers commands on stdin."""
    import torch

    from qwen3ttsd.engine import Engine, LoadOptions
    from qwen3ttsd.engine.backend import BackendOptions
    from qwen3ttsd.engine.batched import BatchedBackend
    from qwen3ttsd.engine.sampling import Sampler, Sampling, row_generator
    from qwen3ttsd.testing.op_count import OpCounter

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

    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        with torch.inference_mode():
            if cmd == "codes":
                out = [frame(n, s)().tolist() for n in (1, 8) for s in (False, True) for _ in range(2)]
            elif cmd == "count":
                run = frame(int(args[0]))
                run(), run()
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    run()
                with OpCounter() as oc:
                    run()
                events = list(prof.events())
                out = {"top-level": sum(e.cpu_parent is None for e in events), "all": len(events),
                       "empty": sum(e.name in ("aten::empty", "aten::empty_strided") for e in events),
                       "dispatched": sum(oc.ops.values()), "allocating": oc.allocs}
            else:  # time BATCH REPS
                run = frame(int(args[0]))
                run(), run()
                times = []
                for _ in range(int(args[1])):
                    t = time.thread_time()
                    run()
                    times.append(time.thread_time() - t)
                out = statistics.median(times) * 1000
        print(json.dumps(out), flush=True)


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
    trees = {"old": str(Path(a.old).resolve()), "new": str(Path(a.new).resolve())}
    procs = {name: subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", a.model, "--quant", a.quant,
         "--old", "-"], cwd=tree, env={**os.environ, "PYTHONPATH": tree},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for name, tree in trees.items()}
    for p in procs.values():
        if p.stdout.readline().strip() != "ready":
            raise SystemExit("a worker failed to start")

    def ask(name: str, cmd: str):
        procs[name].stdin.write(cmd + "\n")
        procs[name].stdin.flush()
        return json.loads(procs[name].stdout.readline())

    print(f"model {a.model}, quant {a.quant}, 1 thread; old {trees['old']}, new {trees['new']}")
    print("codes identical (greedy+seeded, B=1,8):", ask("old", "codes") == ask("new", "codes"))
    for batch in (1, 8):
        counts = {name: ask(name, f"count {batch}") for name in procs}
        for key in counts["old"]:
            print(f"B={batch} {key:11} ops/frame: old {counts['old'][key]:6}  new {counts['new'][key]:6}")
    for batch in (1, 8):
        t: dict[str, list[float]] = {name: [] for name in procs}
        for _ in range(a.rounds):
            for name in procs:
                t[name].append(ask(name, f"time {batch} {a.reps}"))
        old, new = statistics.median(t["old"]), statistics.median(t["new"])
        ratios = [round(n / o, 3) for o, n in zip(t["old"], t["new"])]
        print(f"B={batch} CPU ms/frame: old {old:.2f}  new {new:.2f}  new/old {new / old:.3f}  per round {ratios}")
    for p in procs.values():
        p.stdin.close()
        p.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
