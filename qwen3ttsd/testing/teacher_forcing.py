"""One frame of the code predictor with its logits, optionally teacher-forced.

Why: comparing a quantized predictor with the fp32 one means feeding both the same codes
(fp32's picks) and comparing their logits step by step; the int8 quality test and its
benchmark (bench/bench_int8_quality.py) both need exactly this.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def predictor_frame(backend: Any, hidden: Tensor, c0: Tensor, codes: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(codes (B, 15), logits (B, 15, V)) of one frame's predictor steps of a
    :class:`.engine.batched.BatchedBackend`; with ``codes``, those are fed back instead of
    the backend's own (greedy) picks."""
    logits: list[Tensor] = []

    def pick(j: int, lg: Tensor) -> Tensor:
        logits.append(lg.clone())
        return lg.argmax(-1) if codes is None else codes[:, j]

    got = backend.predict(hidden, c0, pick)
    return got, torch.stack(logits, 1)


def logits_against(ref: Any, backend: Any, frames: int, batch: int, seed: int = 0) -> tuple[float, float]:
    """``backend``'s predictor teacher-forced on ``ref``'s greedy codes over ``frames`` frames
    of ``batch`` random talker states: (the largest logit error over the reference logits'
    std, the share of steps where its pick is ``ref``'s)."""
    g = torch.Generator().manual_seed(seed)
    rel, agree, n = 0.0, 0, 0
    with torch.inference_mode():
        for _ in range(frames):
            hidden = torch.randn(batch, 1, ref.code_tables[0].shape[1], generator=g)
            c0 = torch.randint(0, ref.code_tables[1].shape[0], (batch,), generator=g)
            codes, want = predictor_frame(ref, hidden, c0)
            _, got = predictor_frame(backend, hidden, c0, codes)
            rel = max(rel, float((got - want).abs().max() / want.std()))
            agree += int((got.argmax(-1) == codes).sum())
            n += codes.numel()
    return rel, agree / n


__all__ = ["logits_against", "predictor_frame"]
