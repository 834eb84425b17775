"""Engine benchmark: streaming vs one-shot, the decode strategies, and the two backends.

Prints, side by side from one run:
  0. per-frame time of the sequential backend (qwen-tts ``generate``, one stream) against
     the batched step engine at B=1 and B=8 (per step and per stream-frame);
  1. time-to-first-audio and total time: streamed (chunk 1/4/12 frames) vs plain
     ``generate_custom_voice`` (whose first audio is its total time);
  2. per-chunk decode cost at frame 10 vs frame 300 for the stateful decoder (must be flat),
     for peers' fixed 25-frame left-context re-decode, and for a full re-decode;
  3. the seam error of each strategy against the one-shot decode.

    python bench/bench_engine.py                      # tiny random model, CPU
    python bench/bench_engine.py --size 0.6b --only backends --frames 16
    python bench/bench_engine.py --size 1.7b --device cuda --frames 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import add_model_args, checkpoint

from qwen3ttsd.engine import Engine, LoadOptions, SynthesisRequest, sequential
from qwen3ttsd.engine.backend import BackendOptions, Done, Stream
from qwen3ttsd.engine.batched import BatchedBackend
from qwen3ttsd.engine.codec_lane import cpu_threads, overlap_by_default
from qwen3ttsd.engine.streaming_decoder import StreamingDecoder


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_backends(engine: Engine, frames: int, reps: int, quants: tuple[str, ...] = ("",),
                   sequential_too: bool = True, seeded: bool = False) -> list[tuple[str, float, int]]:
    """(label, seconds per step, streams per step): sequential vs batched B=1 / B=8, the
    codec decoded in the step (``serial``, all torch threads) or on its own lane
    (``overlap``, the threads split between generation and the codec); each label names
    the thread split it ran with, and ``default`` marks the split this host gets by default
    (:func:`.codec_lane.overlap_by_default`). The batched rows are unseeded, as calls are
    (``seeded``: int8 then computes each row as if alone, ~8 rows' M=1 time at B=8)."""
    device = engine.info["device"]
    threads = cpu_threads()

    def reqs(n: int, rep: int) -> list[SynthesisRequest]:
        return [SynthesisRequest(text="The quick brown fox jumps over the lazy dog.", speaker="ryan",
                                 seed=100 * rep + i if seeded else None, max_frames=frames) for i in range(n)]

    rows = []
    if sequential_too:
        seq = []
        for r in range(reps):
            st = sequential.generate(engine, reqs(1, r)[0], lambda pcm: None)  # seeded or not: the same work
            seq.append(st.total_s / st.frames)
        rows.append(("sequential (qwen-tts generate)", statistics.median(seq), 1))
    overlaps = (False, True) if device == "cpu" and threads > 1 else (False,)
    configs = [(q, o, b) for q in quants for o in overlaps for b in (1, 8)]
    per_step: dict[tuple, list[float]] = {c: [] for c in configs}
    splits: dict[tuple, str] = {}
    for r in range(reps):  # the configurations alternate within each rep: side by side on a noisy box
        for quant, overlap, b in configs:
            torch.set_num_threads(threads)  # an overlapping lane takes its share of them
            backend = BatchedBackend(engine, BackendOptions(max_batch=b, quant=quant, overlap_decode=overlap))
            splits[(quant, overlap, b)] = backend.lane.split
            done: list[int] = []
            for q in reqs(b, r):
                backend.admit(Stream(q, sink=lambda ev: done.append(ev.stats.frames) if isinstance(ev, Done) else None))
            sync(device)
            t0 = time.perf_counter()
            while backend.active:
                backend.step()
            sync(device)
            per_step[(quant, overlap, b)].append((time.perf_counter() - t0) / max(done))  # a step: a frame per row
    for (quant, overlap, b), times in per_step.items():
        default = overlap == (threads > 1 and overlap_by_default(threads))
        label = (f"batched B={b}" + (f" {quant}" if quant else "") + (" overlap" if overlap else "")
                 + f" ({splits[(quant, overlap, b)]}{', default' if default else ''})")
        rows.append((label, statistics.median(times), b))
    torch.set_num_threads(threads)
    return rows


def bench_stream(engine: Engine, frames: int, reps: int) -> list[tuple[str, float, float]]:
    text = "The quick brown fox jumps over the lazy dog. " * 3
    rows = []
    for chunk in (1, 4, 12):
        ttfa, total = [], []
        for r in range(reps):
            st = sequential.generate(engine, SynthesisRequest(text=text, speaker="ryan", seed=r, max_frames=frames,
                                                              chunk_frames=chunk), lambda pcm: None)
            ttfa.append(st.first_audio_s)
            total.append(st.total_s)
        rows.append((f"streamed, chunk {chunk}", statistics.median(ttfa), statistics.median(total)))
    tot = []
    for r in range(reps):
        torch.manual_seed(r)
        t0 = time.perf_counter()
        engine.tts.generate_custom_voice(text=text, speaker="ryan", language="auto", max_new_tokens=frames + 1)
        sync(engine.info["device"])
        tot.append(time.perf_counter() - t0)
    rows.append(("generate_custom_voice", statistics.median(tot), statistics.median(tot)))
    return rows


def bench_decode(engine: Engine, frames: int, chunk: int, reps: int) -> dict:
    dec = engine.tts.model.speech_tokenizer.model.decoder
    device = engine.info["device"]
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (frames, 16), generator=g).to(device)
    with torch.inference_mode():
        ref = dec(codes.T.unsqueeze(0)).squeeze(1)[0].float().cpu()
    spf = int(dec.total_upsample)

    def timed(fn) -> float:
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0

    out: dict[str, dict] = {}
    # stateful
    costs: dict[int, list[float]] = {10: [], 300: []}
    for _ in range(reps):
        sd = StreamingDecoder(dec)
        pcs = []
        for s in range(0, frames, chunk):
            dt = timed(lambda: pcs.append(sd.push(codes[s:s + chunk])[0].float().cpu()))
            for at in costs:
                if s <= at < s + chunk:
                    costs[at].append(dt)
    err = float((torch.cat(pcs) - ref).abs().max())
    out["stateful (ours)"] = dict(c10=statistics.median(costs[10]), c300=statistics.median(costs[300]), err=err)

    def redecode(left: int | None, name: str) -> None:
        costs = {10: [], 300: []}
        for _ in range(reps):
            pcs = []
            for s in range(0, frames, chunk):
                lo = 0 if left is None else max(0, s - left)

                def run():
                    with torch.inference_mode():
                        w = dec(codes[lo:s + chunk].T.unsqueeze(0)).squeeze(1)[0]
                    pcs.append(w[(s - lo) * spf:].float().cpu())
                dt = timed(run)
                for at in costs:
                    if s <= at < s + chunk:
                        costs[at].append(dt)
        err = float((torch.cat(pcs) - ref).abs().max())
        out[name] = dict(c10=statistics.median(costs[10]), c300=statistics.median(costs[300]), err=err)

    redecode(25, "left context 25 (peers)")
    redecode(None, "full re-decode")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    add_model_args(ap)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    ap.add_argument("--frames", type=int, default=60, help="frames per generation for part 1")
    ap.add_argument("--decode-frames", type=int, default=320)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", choices=["backends"], help="run only part 0")
    ap.add_argument("--int8", action="store_true", help="part 0 also with int8 weights (CPU)")
    ap.add_argument("--quants", help="part 0's weights, e.g. int8 or none,int8 (default: none, or none,int8 "
                    "with --int8)")
    ap.add_argument("--no-sequential", action="store_true", help="part 0 without the sequential backend "
                    "(ratios against batched B=1's first row)")
    ap.add_argument("--seeded", action="store_true", help="part 0's batched requests seeded")
    a = ap.parse_args()

    model, tmp = checkpoint(a)
    engine = Engine(model, LoadOptions(device=a.device, dtype=a.dtype))
    engine.load()
    info = engine.info
    print(f"\nmodel: {a.model or a.size} ({info['device']}, {info['dtype']}, attn={info['attn']}, "
          f"{torch.get_num_threads()} torch threads)")

    quants = a.quants.split(",") if a.quants else ["none", "int8"] if a.int8 else ["none"]
    rows = bench_backends(engine, a.frames, a.reps, tuple("" if q == "none" else q for q in quants),
                          not a.no_sequential, a.seeded)
    seq = rows[0][1]
    print(f"\n0) per-frame time, {a.frames} frames per stream (80 ms of audio per frame), median of {a.reps}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'backend':58} {'ms/step':>9} {'ms/stream-frame':>16} {'vs ' + rows[0][0][:10]:>14} "
          f"{'x-realtime aggr':>16}")
    for name, per_step, b in rows:
        print(f"{name:58} {per_step * 1000:9.1f} {per_step / b * 1000:16.1f} {per_step / b / seq:13.2f}x "
              f"{0.08 * b / per_step:16.2f}")
    if a.only == "backends":
        if tmp:
            tmp.cleanup()
        return 0

    rows = bench_stream(engine, a.frames, a.reps)
    base_total = rows[-1][2]
    print(f"\n1) streaming vs one-shot, {a.frames} frames ({a.frames / 12.5:.1f} s audio), median of {a.reps}")
    print(f"{'mode':28} {'first audio':>12} {'total':>9} {'first/one-shot':>15} {'total/one-shot':>15}")
    for name, ttfa, total in rows:
        print(f"{name:28} {ttfa * 1000:10.1f}ms {total:8.2f}s {ttfa / base_total:14.3f}x {total / base_total:14.2f}x")

    dec = bench_decode(engine, a.decode_frames, a.chunk, a.reps)
    print(f"\n2+3) per-chunk decode cost ({a.chunk}-frame chunks) and error vs one-shot decode"
          f" of {a.decode_frames} frames")
    print(f"{'strategy':26} {'@frame 10':>10} {'@frame 300':>11} {'300/10':>7} {'max |err|':>10}")
    for name, d in dec.items():
        print(f"{name:26} {d['c10'] * 1000:8.2f}ms {d['c300'] * 1000:9.2f}ms "
              f"{d['c300'] / d['c10']:6.2f}x {d['err']:10.2e}")
    ours = dec["stateful (ours)"]
    print(f"\nstateful decode at frame 300 costs {ours['c300'] / ours['c10']:.2f}x frame 10; "
          f"its error is {dec['left context 25 (peers)']['err'] / max(ours['err'], 1e-12):.0f}x "
          f"smaller than a 25-frame left context")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
