"""First ICL clone on a cold daemon: what registering it costs on the own weights (issue 19).

Each trial is a fresh process with a Base checkpoint already loaded on the own weights (as
the daemon holds it); timed is the first registration of an ICL clone (reference audio at
16 kHz + reference text), then a second one (other audio):

  qwen-tts   ``Engine.add_voice`` as before: qwen-tts's whole model loaded (transformers,
             librosa imports, a second copy of the weights), ``create_voice_clone_prompt``
  own        ``Engine.add_voice`` now: soxr resampling, the own speaker encoder and the own
             codec encoder (loaded on that first ICL clone)

(both then prime the clone's codec decoder state with its reference codes), and

  kept       ``Engine.add_voice`` of a saved voice whose registration an earlier process
             kept in its directory (engine/voice_cache.py): what a start after an idle
             exit pays now

with the ratio printed side by side from one run: wall time, and the process's CPU time
(steadier than wall time on a shared box), and how much the peak RSS grew over the
loaded engine's.

    python bench/bench_clone.py                       # tiny random-weight Base checkpoint
    python bench/bench_clone.py --size 0.6b --trials 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen3ttsd.testing import tinymodel

TRIAL = r"""
import json, resource, sys, time
import numpy as np
from qwen3ttsd.engine import Engine, LoadOptions
model, path = sys.argv[1], sys.argv[2]
keep = sys.argv[3] if len(sys.argv) > 3 else None   # voice directories' root (kept registrations)
e = Engine(model, LoadOptions(weights="own"))
e.load()
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if path == "qwen-tts":   # the engine's _clone_item before the own codec encoder
    from qwen3ttsd.engine.loader import load_model
    def clone_item(wav, sr, ref_text, xvec):
        e.tts = e.tts or load_model(model, LoadOptions(weights="own"))
        return e.tts.create_voice_clone_prompt(ref_audio=(wav, sr), ref_text=ref_text, x_vector_only_mode=xvec)[0]
    e._clone_item = clone_item
rng = np.random.default_rng(0)
clips = [(0.1 * rng.standard_normal(16000 * 5)).astype(np.float32) for _ in range(2)]
times = []
for i, wav in enumerate(clips):
    t0, c0 = time.perf_counter(), time.process_time()
    e.add_voice(f"v{i}", wav, 16000, ref_text="A reference sentence.", keep_dir=keep and f"{keep}/v{i}")
    times += [time.perf_counter() - t0, time.process_time() - c0]
print(json.dumps(times + [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0]))
"""


def trial(model: str, path: str, keep: str | None = None) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, "-c", TRIAL, model, path, *([keep] if keep else [])], capture_output=True,
                       text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a Base checkpoint dir (default: build a random one of --size)")
    ap.add_argument("--size", default="tiny", choices=sorted(tinymodel.SIZES))
    ap.add_argument("--trials", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model or str(tinymodel.build(Path(tmp) / f"base-{a.size}", variant="base", size=a.size))
        keep = Path(tmp) / "voices"
        for i in range(2):
            (keep / f"v{i}").mkdir(parents=True)
        trial(model, "own", str(keep))   # page cache warm for all, as after an idle exit; keeps both voices
        runs = {path: [trial(model, path) for _ in range(a.trials)] for path in ("qwen-tts", "own")}
        runs["kept"] = [trial(model, "own", str(keep)) for _ in range(a.trials)]
    cols = ("first wall s", "first cpu s", "second wall s", "second cpu s", "+peak RSS MB")
    print(f"{'path':<14}" + "".join(f"{c:>15}" for c in cols) + f"   (median of {a.trials}, {a.size})")
    med = {p: [statistics.median(r[i] for r in runs[p]) for i in range(len(cols))] for p in runs}
    for p, row in med.items():
        print(f"{p:<14}" + "".join(f"{v:>15.2f}" for v in row))
    for new, old in (("own", "qwen-tts"), ("kept", "own")):
        ratios = (n / o if o else float("nan") for n, o in zip(med[new], med[old]))
        print(f"{new + ' / ' + old:<14}" + "".join(f"{r:>14.2f}x" for r in ratios))
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
