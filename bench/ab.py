"""Two source trees side by side in one run: what the A/B benchmarks share
(bench_predictor_ab.py, bench_codec_ab.py).

One worker process per tree (the benchmark script itself with ``--worker``, ``PYTHONPATH``
set to that tree, so each imports its own ``qwen3ttsd``), fed one command per line on stdin
and answering one JSON line each; timings alternate between the trees, round by round and
in turn-about order, so a shared box's noise falls on both. Nothing here imports torch or
``qwen3ttsd`` at module level: the workers import their tree's.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class TreeWorkers:
    """A worker process per tree (``{"old": dir, "new": dir}``), each started as
    ``python SCRIPT --worker ARGS...`` and ready once it printed ``ready``."""

    def __init__(self, script: str, trees: dict[str, str], args: list[str],
                 env: dict[str, dict[str, str]] | None = None) -> None:
        self.trees = {name: str(Path(tree).resolve()) for name, tree in trees.items()}
        self.procs = {name: subprocess.Popen(
            [sys.executable, str(Path(script).resolve()), "--worker", *args], cwd=tree,
            env={**os.environ, "PYTHONPATH": tree, **(env or {}).get(name, {})},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for name, tree in self.trees.items()}
        for p in self.procs.values():
            if p.stdout.readline().strip() != "ready":
                raise SystemExit("a worker failed to start")

    def ask(self, name: str, cmd: str) -> Any:
        """One command to one worker, its JSON answer."""
        p = self.procs[name]
        p.stdin.write(cmd + "\n")
        p.stdin.flush()
        return json.loads(p.stdout.readline())

    def ask_all(self, cmd: str) -> dict[str, Any]:
        return {name: self.ask(name, cmd) for name in self.procs}

    def alternate(self, cmd: str, rounds: int) -> dict[str, list[float]]:
        """``cmd`` (a timing) asked of every worker ``rounds`` times, the order turned about
        each round; the answers by worker."""
        t: dict[str, list[float]] = {name: [] for name in self.procs}
        for r in range(rounds):
            for name in (self.procs if r % 2 == 0 else reversed(list(self.procs))):
                t[name].append(self.ask(name, cmd))
        return t

    def close(self) -> None:
        for p in self.procs.values():
            p.stdin.close()
            p.wait()


def ratio_line(label: str, t: dict[str, list[float]]) -> str:
    """``old``'s and ``new``'s median timings, their ratio, and the ratio of every round."""
    old, new = statistics.median(t["old"]), statistics.median(t["new"])
    ratios = [round(n / o, 3) for o, n in zip(t["old"], t["new"])]
    return (f"{label}: old {old:.2f}  new {new:.2f}  new/old {new / old:.3f}  "
            f"(median of per-round ratios {statistics.median(ratios):.3f})  per round {ratios}")


def serve(handle: Callable[[str, list[str]], Any]) -> None:
    """A worker's loop: ``ready``, then ``handle(cmd, args)`` per stdin line (in inference
    mode), its result as one JSON line."""
    import torch

    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        with torch.inference_mode():
            out = handle(cmd, args)
        print(json.dumps(out), flush=True)


def op_counts(run: Callable[[], Any], ops: tuple[str, ...] = ()) -> dict[str, int]:
    """One call of ``run`` under torch's profiler and one under :class:`OpCounter`: top-level
    and all profiled ops, ATen ``empty``/``empty_strided`` calls, dispatched and allocating
    ops, and the dispatch count of each op named in ``ops``."""
    import torch

    from qwen3ttsd.testing.op_count import OpCounter

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    with OpCounter() as oc:
        run()
    events = list(prof.events())
    return {"top-level": sum(e.cpu_parent is None for e in events), "all": len(events),
            "empty": sum(e.name in ("aten::empty", "aten::empty_strided") for e in events),
            **{op: oc.ops[op] for op in ops}, "dispatched": sum(oc.ops.values()), "allocating": oc.allocs}


def thread_ms(run: Callable[[], Any], reps: int) -> float:
    """The median CPU time of this thread over ``reps`` calls of ``run``, in ms
    (``time.thread_time``: less swayed by other processes than wall time)."""
    times = []
    for _ in range(reps):
        t = time.thread_time()
        run()
        times.append(time.thread_time() - t)
    return statistics.median(times) * 1000
