"""The streaming codec decode, two source trees side by side (issue 25, "a cheaper codec"):
one worker process per tree (its own ``PYTHONPATH``), the same checkpoint's codec decoder,
timed alternately so a shared box's noise falls on both. Per push of a chunk as the daemon
sends it (``chunk_frames`` = 4; B streams through ``StreamingDecoder.push_many``): CPU time
of the thread (``time.thread_time``) per stream-frame, median; torch-profiler ops, ATen
``empty``/``empty_strided`` calls, dispatched and allocating ops (:class:`OpCounter`); and
whether the two trees decode the same codes to the same bits (B=1 and B=8; streamed as the
daemon does - a first chunk of 1 frame, then 4 - in chunks of 3, and in one shot).

    python bench/bench_codec_ab.py --model /tmp/ck06 --old /work/main --new . --rounds 8

``--new-env KEY=VALUE`` (repeatable) sets environment variables for the new tree's worker
only, e.g. glibc's ``MALLOC_TRIM_THRESHOLD_`` with ``--new /work/main`` to see what an
allocator setting alone does.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from ab import TreeWorkers, op_counts, ratio_line, serve, thread_ms

CHUNK = 4       # frames per push (the daemon's chunk_frames default)
FRAMES = 24     # codes per stream for the bit-identity check


def worker(model: str) -> None:
    """Loads the codec decoder from this process's ``qwen3ttsd``; answers commands on stdin."""
    import torch

    from qwen3ttsd.engine.codec_model import load_codec_decoder
    from qwen3ttsd.engine.streaming_decoder import StreamingDecoder

    torch.set_num_threads(1)
    dec = load_codec_decoder(model)
    q, size = dec.config.num_quantizers, dec.config.codebook_size

    def codes(batch: int, frames: int, seed: int) -> torch.Tensor:
        return torch.randint(0, size, (batch, frames, q), generator=torch.Generator().manual_seed(seed))

    def decode(batch: int, chunks: list[int]) -> str:
        c = codes(batch, sum(chunks), 11 + batch)
        streams = [StreamingDecoder(dec) for _ in range(batch)]
        out, at = [], 0
        for n in chunks:
            out.append(StreamingDecoder.push_many(streams, c[:, at:at + n]))
            at += n
        return hashlib.sha256(torch.cat(out, dim=1).contiguous().numpy().tobytes()).hexdigest()[:16]

    class Streams:
        """B streams pushed chunk after chunk (fresh codes each push; past the attention
        window a push costs the same at every frame)."""

        def __init__(self, batch: int) -> None:
            self.batch, self.n = batch, 0
            self.streams = [StreamingDecoder(dec) for _ in range(batch)]
            for _ in range(20):   # fill the 72-frame attention window
                self()

        def __call__(self) -> None:
            self.n += 1
            StreamingDecoder.push_many(self.streams, codes(self.batch, CHUNK, self.n))

    live: dict[int, Streams] = {}

    def streams(batch: int) -> Streams:
        if batch not in live:
            live[batch] = Streams(batch)
        return live[batch]

    def handle(cmd: str, args: list[str]) -> object:
        if cmd == "audio":
            plans = {"daemon": [1] + [CHUNK] * ((FRAMES - 1) // CHUNK) + [(FRAMES - 1) % CHUNK],
                     "by3": [3] * (FRAMES // 3), "one-shot": [FRAMES]}
            return {f"B={b} {name}": decode(b, [n for n in plan if n]) for b in (1, 8)
                    for name, plan in plans.items()}
        batch = int(args[0])
        if cmd == "count":
            return op_counts(streams(batch), ops=("cat",))
        return thread_ms(streams(batch), int(args[1])) / (batch * CHUNK)  # time BATCH REPS

    serve(handle)


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="checkpoint dir (qwen3ttsd/testing/tinymodel.py --size 0.6b)")
    ap.add_argument("--old", required=True, help="source tree to compare against (e.g. /work/main)")
    ap.add_argument("--new", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--new-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for the new tree's worker only")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3, help="pushes per timing, median")
    ap.add_argument("--no-check", action="store_true", help="timings only: skip the bits and the op counts")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.model)
        return 0
    w = TreeWorkers(__file__, {"old": a.old, "new": a.new}, ["--model", a.model, "--old", "-"],
                    env={"new": dict(kv.split("=", 1) for kv in a.new_env)})
    batches = [int(b) for b in a.batches.split(",")]
    print(f"model {a.model}, 1 thread, {CHUNK}-frame pushes; old {w.trees['old']}, new {w.trees['new']} "
          f"{a.new_env}")
    audio = {} if a.no_check else w.ask_all("audio")
    for case in audio.get("old", ()):
        print(f"audio bits identical, {case:14}: {audio['old'][case] == audio['new'][case]}")
    for batch in [] if a.no_check else batches:
        counts = w.ask_all(f"count {batch}")
        for key in counts["old"]:
            print(f"B={batch} {key:11} ops/push: old {counts['old'][key]:6}  new {counts['new'][key]:6}")
    for batch in batches:
        print(ratio_line(f"B={batch} CPU ms/stream-frame", w.alternate(f"time {batch} {a.reps}", a.rounds)))
    w.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
