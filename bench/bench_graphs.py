"""The decode step three ways, side by side from one run (issue 24): dynamic (the step's
shapes follow the batch), static (bucketed buffers, run eagerly) and static replayed from
CUDA graphs (CUDA only). Per batch size: ms per step and the ratio to dynamic, and whether
the graphed step gives the eager static step's codes for the same seeded streams.

Each mode keeps one backend for all its runs (graphs are captured once per bucket, in the
untimed warm run), and times ``--reps`` runs of B seeded streams of ``--frames`` frames.

    python bench/bench_graphs.py                                   # tiny, CPU: dynamic vs static
    python bench/bench_graphs.py --device cuda --size 1.7b --batches 1,8,32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_engine import sync
from common import add_model_args, checkpoint

from qwen3ttsd.engine import Engine, LoadOptions, SynthesisRequest
from qwen3ttsd.engine.backend import BackendOptions, Done, Stream
from qwen3ttsd.engine.batched import BatchedBackend
from qwen3ttsd.engine.static_step import StaticStep


def backend(engine: Engine, mode: str, max_batch: int) -> BatchedBackend:
    b = BatchedBackend(engine, BackendOptions(max_batch=max_batch, cuda_graphs=mode == "graphs"))
    b.static = None if mode == "dynamic" else StaticStep(b, graphs=mode == "graphs")
    return b


def run(b: BatchedBackend, n: int, frames: int, seed: int) -> tuple[float, dict[int, list]]:
    """(seconds per step, each stream's codes) for n seeded streams run together."""
    codes: dict[int, list] = {i: [] for i in range(n)}
    done: list[int] = []
    for i in range(n):
        req = SynthesisRequest(text="The quick brown fox jumps over the lazy dog.", speaker="ryan",
                               seed=seed + i, max_frames=frames)
        b.admit(Stream(req, sink=lambda ev: done.append(ev.stats.frames) if isinstance(ev, Done) else None,
                       on_codes=lambda c, i=i: codes[i].append(c.cpu())))
    sync(b.device.type)
    t0 = time.perf_counter()
    while b.active:
        b.step()
    sync(b.device.type)
    return (time.perf_counter() - t0) / max(done), {i: torch.cat(c).tolist() for i, c in codes.items() if c}


def main() -> int:
    ap = argparse.ArgumentParser()
    add_model_args(ap)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--frames", type=int, default=40, help="frames per stream")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batches", default="1,8", help="streams run together, comma-separated")
    a = ap.parse_args()
    model, tmp = checkpoint(a)
    engine = Engine(model, LoadOptions(device=a.device, dtype=a.dtype))
    engine.load()
    info = engine.info
    batches = [int(x) for x in a.batches.split(",")]
    modes = ["dynamic", "static"] + (["graphs"] if info["device"].startswith("cuda") else [])
    times: dict[tuple[str, int], float] = {}
    codes: dict[tuple[str, int], dict] = {}
    notes = []
    for mode in modes:
        b = backend(engine, mode, max(batches))
        for n in batches:
            run(b, n, a.frames, 0)   # warm: kernels, and the graphs' captures
            per = [run(b, n, a.frames, 100 * (r + 1)) for r in range(a.reps)]
            times[mode, n] = statistics.median(t for t, _ in per)
            codes[mode, n] = per[0][1]
        if b.static is not None and b.static.graphs is not None:
            g = b.static.graphs
            notes.append(f"graphs: {g.captures} captured, {'FAILED (ran eagerly)' if g.failed else 'ok'}")
    print(f"\nmodel: {a.size} ({info['device']}, {info['dtype']}); {a.frames} frames per stream, median of {a.reps}")
    print(f"{'streams':>8} " + " ".join(f"{m + ' ms/step':>18}" for m in modes)
          + " " + " ".join(f"{m + '/dynamic':>16}" for m in modes[1:]))
    for n in batches:
        print(f"{n:8d} " + " ".join(f"{times[m, n] * 1000:18.2f}" for m in modes)
              + " " + " ".join(f"{times[m, n] / times['dynamic', n]:15.2f}x" for m in modes[1:]))
    for n in batches:
        for m in modes[1:]:
            ref = "static" if m == "graphs" else "dynamic"
            same = codes[m, n] == codes[ref, n]
            notes.append(f"B={n}: {m} codes == {ref} codes: {same}")
    print("\n".join(notes))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
