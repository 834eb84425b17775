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


__all__ = ["predictor_frame"]
