"""int8 and int4 serving against fp32 (issue 25 item 2): int8 with per-tensor vs per-channel
weight scales, and int4 (``QWEN3TTSD_QUANT=int4``: the predictor's int4 copies, here serving
every batch of up to 4 rows whatever this CPU's timing would choose).

For each mode, the predictor's 15 steps of a few frames (random talker states, B=4),
teacher-forced on the fp32 backend's greedy codes: the largest logit error over the logits'
std, how often the int8 logits pick fp32's code, and how often free-running greedy codes
equal fp32's; then the talker's codec head and the lm heads alone on the same inputs.
``--spread`` scales each weight row of every linear by a log-uniform factor in [1/spread, 1]
(seeded), a stand-in for trained weights' unequal row norms (random weights have none).

    python bench/bench_int8_quality.py --size 0.6b
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import add_model_args, checkpoint

from qwen3ttsd.engine import Engine, LoadOptions, int4, lean
from qwen3ttsd.engine.backend import BackendOptions
from qwen3ttsd.engine.batched import BatchedBackend
from qwen3ttsd.testing.teacher_forcing import predictor_frame


def load(model: str, spread: float) -> Engine:
    e = Engine(model, LoadOptions(device="cpu", dtype="float32", weights="own"))
    e.load()
    if spread > 1:
        g = torch.Generator().manual_seed(0)
        for m in e.serving_model.talker.modules():
            if type(m) is torch.nn.Linear and m.weight.device.type == "cpu":
                rows = torch.rand(m.weight.shape[0], generator=g) * -torch.log(torch.tensor(spread))
                m.weight.data *= rows.exp().unsqueeze(1)
    return e


def main() -> int:
    ap = argparse.ArgumentParser()
    add_model_args(ap)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--spread", type=float, default=1.0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, tmp = checkpoint(a)
    ref = BatchedBackend(load(model, a.spread), BackendOptions(max_batch=8))
    g = torch.Generator().manual_seed(0)
    cases = [(torch.randn(4, 1, ref.code_tables[0].shape[1], generator=g),
              torch.randint(0, ref.code_tables[1].shape[0], (4,), generator=g)) for _ in range(a.frames)]
    with torch.inference_mode():
        want = [predictor_frame(ref, h, c0) for h, c0 in cases]
        d_head = ref.predictor.lm_head[0].in_features
        x = torch.randn(64, d_head, generator=g)
        xt = torch.randn(64, 1, ref.code_tables[0].shape[1], generator=g)
        heads_ref = [h(x) for h in ref.lm_heads]
        codec_ref = ref.codec_head(xt)
    print(f"model {a.size}, {a.frames} frames x B=4, row spread {a.spread:g}x")
    print(f"{'weights':12} {'max|dlogit|/std':>16} {'picks agree':>12} {'free codes agree':>17} "
          f"{'lm heads max/std':>17} {'codec head max/std':>19}")
    int4.rows_where_faster = lambda *args, **kwargs: int4.MAX_ROWS  # type: ignore[assignment]
    for name, per_channel, quant in (("int8 tensor", False, "int8"), ("int8 channel", True, "int8"),
                                     ("int4 (+int8)", True, "int4")):
        lean.quantize_int8 = functools.partial(quantize, per_channel=per_channel)  # type: ignore[assignment]
        b = BatchedBackend(load(model, a.spread), BackendOptions(max_batch=8, quant=quant))
        rel, agree, free_agree, n = 0.0, 0, 0, 0
        with torch.inference_mode():
            for (h, c0), (codes, lg) in zip(cases, want):
                _, lq = predictor_frame(b, h, c0, codes)
                free, _ = predictor_frame(b, h, c0)
                rel = max(rel, float((lq - lg).abs().max() / lg.std()))
                agree += int((lq.argmax(-1) == codes).sum())
                free_agree += int((free == codes).sum())
                n += codes.numel()
            heads = max(float((hq(x) - hr).abs().max() / hr.std()) for hq, hr in zip(b.lm_heads, heads_ref))
            codec = float((b.codec_head(xt) - codec_ref).abs().max() / codec_ref.std())
        print(f"{name:12} {rel:16.4f} {agree / n:12.4f} {free_agree / n:17.4f} {heads:17.4f} {codec:19.4f}", flush=True)
    if tmp:
        tmp.cleanup()
    return 0


quantize = lean.quantize_int8

if __name__ == "__main__":
    raise SystemExit(main())
