"""A clone's reference clip to the model's rate without librosa (issue 19: clones at any
sample rate on the own weights).

qwen-tts resamples a reference (for its codec codes and its x-vector) with
``librosa.resample(y, orig_sr=sr, target_sr=24000)``: res_type "soxr_hq", which is libsoxr's
HQ one-shot resample, the length then fixed to ``ceil(n * ratio)`` (trimmed, or padded with
zeros). This is that call on the same library, so the result is bitwise librosa's
(``tests/test_codec_encoder.py``) - without librosa's ~1 s of imports (scipy, numba).
"""

from __future__ import annotations

import math

import numpy as np


def resample(wav: np.ndarray, sr: int, target: int) -> np.ndarray:
    """``librosa.resample(y=wav, orig_sr=sr, target_sr=target)`` for a 1-D float clip."""
    if sr == target:
        return wav
    if not np.issubdtype(wav.dtype, np.floating) or wav.ndim != 1:
        raise ValueError(f"a mono float clip is needed, got {wav.dtype} of shape {wav.shape}")
    if not np.isfinite(wav).all():
        raise ValueError("the audio contains invalid samples")
    import soxr

    n = int(math.ceil(wav.shape[0] * (float(target) / sr)))
    out = soxr.resample(np.ascontiguousarray(wav), sr, target, quality="soxr_hq")
    if out.shape[0] > n:
        out = out[:n]
    elif out.shape[0] < n:
        out = np.pad(out, (0, n - out.shape[0]))
    return np.asarray(out, dtype=wav.dtype)


__all__ = ["resample"]
