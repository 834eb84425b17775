"""What admitting a stream costs the batched backend's engine thread, per prompt source.

For every variant (CustomVoice, VoiceDesign, Base ICL and x-vector clones) in one run:
* ``own``: the project's prompt builder on the builder pool; the engine thread pays the job
  submission and, once the prompt is built, the row's setup (codec stream, generator);
* ``qwen-tts``: qwen-tts's ``generate`` captured inline on the engine thread (the path
  before the project's builder);
* the prompt build alone on the calling thread (own builder vs qwen-tts capture).
Medians (p10-p90) in ms. Issue 19's target: an admission well under 0.5 ms of engine time.

    python bench/bench_admission.py                 # tiny random checkpoints, CPU
    python bench/bench_admission.py --size 0.6b --n 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen3ttsd.engine import Engine, SynthesisRequest
from qwen3ttsd.engine.backend import BackendOptions, Stream, VoiceSource
from qwen3ttsd.engine.batched import BatchedBackend
from qwen3ttsd.engine.prompt import build_prompt, own_prompt
from qwen3ttsd.errors import Cancelled
from qwen3ttsd.testing import tinymodel

TEXT = "Hello world, this is a test sentence of ordinary length."


def cases() -> list[tuple[str, SynthesisRequest, VoiceSource | None]]:
    sr = 24000
    t = np.arange(3 * sr) / sr
    wav = (0.3 * np.sin(2 * np.pi * 190 * t)).astype(np.float32)
    return [
        ("custom_voice", SynthesisRequest(text=TEXT, speaker="vivian", language="english", max_frames=4), None),
        ("voice_design", SynthesisRequest(text=TEXT, instruct="a calm narrator", max_frames=4), None),
        ("base", SynthesisRequest(text=TEXT, voice="icl", max_frames=4),
         VoiceSource("icl", wav, "Hello there, friend.")),
        ("base", SynthesisRequest(text=TEXT, voice="xv", max_frames=4), VoiceSource("xv", wav, None)),
    ]


def summary(seconds: list[float]) -> str:
    c = sorted(seconds)
    return f"{statistics.median(c) * 1e3:7.3f} ({c[len(c) // 10] * 1e3:.3f}-{c[9 * len(c) // 10] * 1e3:.3f})"


def admissions(engine: Engine, prompts: str, req: SynthesisRequest, voice: VoiceSource | None, n: int) -> list[float]:
    """Engine-thread seconds per admission: ``admit`` plus taking the built prompt in."""
    b = BatchedBackend(engine, BackendOptions(max_batch=n + 1))
    b.prompts = prompts
    b.warmup()
    costs = []
    for i in range(n + 5):
        s = Stream(req, sink=lambda ev: None, voice=voice)
        t0 = time.perf_counter()
        b.admit(s)
        dt = time.perf_counter() - t0
        for _, job in list(b._building):
            job.result()  # built while the engine thread would be stepping the others
        t0 = time.perf_counter()
        b._take_built(wait=False)
        costs.append(dt + time.perf_counter() - t0)
        if i % 10 == 9:
            b.abort_all(Cancelled())
    b.abort_all(Cancelled())
    return costs[5:]


def builds(engine: Engine, make, req: SynthesisRequest, n: int) -> list[float]:
    out = []
    for _ in range(n + 5):
        t0 = time.perf_counter()
        with torch.inference_mode():
            make(engine, req)
        out.append(time.perf_counter() - t0)
    return out[5:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="dir with custom_voice/, voice_design/, base/ checkpoints (default: build)")
    ap.add_argument("--size", default="tiny", choices=sorted(tinymodel.SIZES))
    ap.add_argument("--n", type=int, default=100, help="admissions per case")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    tmp = None
    root = Path(a.models) if a.models else Path((tmp := tempfile.TemporaryDirectory()).name)
    engines: dict[str, Engine] = {}
    print(f"torch threads {torch.get_num_threads()}; ms per admission / build, median (p10-p90)")
    print(f"{'case':<18} {'engine: own':>24} {'engine: qwen-tts':>24} {'build: own':>24} {'build: qwen-tts':>24}")
    for variant, req, voice in cases():
        if variant not in engines:
            d = root / variant
            if not (d / "model.safetensors").exists():
                tinymodel.build(d, variant=variant, size=a.size)
            engines[variant] = e = Engine(str(d))
            e.load()
        e = engines[variant]
        e.use_voice(voice)
        row = [summary(admissions(e, "own", req, voice, a.n)), summary(admissions(e, "qwen-tts", req, voice, a.n)),
               summary(builds(e, own_prompt, req, a.n)), summary(builds(e, build_prompt, req, a.n))]
        name = variant + (f"/{req.voice}" if req.voice else "")
        print(f"{name:<18} " + " ".join(f"{x:>24}" for x in row), flush=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
