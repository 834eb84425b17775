"""The codec decoder's channel-heavy convolutions as one matrix multiply each, on CPU.

Why: streaming decodes a few frames at a time, so the decoder's first stages see inputs
of 1024-1536 channels and only 4-50 time steps. oneDNN's convolution is slow at that
shape, and a transposed convolution at batch 1 falls back to ATen's naive kernel. As
im2col + one GEMM (convolution) or one GEMM + overlap-add (transposed convolution) they
take a quarter of the time; the results agree to float rounding (~1e-5). Thin, long stages
(<= 384 channels, thousands of steps) stay with oneDNN, which is faster there. Figures in
bench/RESULTS.md (Design measurements); ``bench/bench_engine.py`` (decode rows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GEMM_MIN_CHANNELS = 512  # measured crossover: below it oneDNN's direct convolution wins


def _use_gemm(x: Tensor, conv: torch.nn.Conv1d | torch.nn.ConvTranspose1d) -> bool:
    """CPU, channel-heavy, and the plain form this module implements (no padding, groups)."""
    if x.device.type != "cpu" or x.shape[1] < GEMM_MIN_CHANNELS or conv.groups != 1:
        return False
    if conv.padding != (0,):
        return False
    if isinstance(conv, torch.nn.ConvTranspose1d):
        return conv.dilation == (1,) and conv.output_padding == (0,)
    return conv.stride == (1,)


def _low(conv: torch.nn.Module, x: Tensor):
    """The conv's low-precision form (:mod:`.codec_quant`), where it has one (CPU)."""
    low = conv.__dict__.get("_qwen3ttsd_lowp")
    return low if low is not None and x.device.type == "cpu" else None


def conv1d(conv: torch.nn.Conv1d, x: Tensor) -> Tensor:
    """``conv(x)`` for an unpadded stride-1 Conv1d; (B, Cin, T) -> (B, Cout, T - span + 1)."""
    low = _low(conv, x)
    if low is not None:
        return low(x)
    if not _use_gemm(x, conv):
        return conv(x)
    w = conv.weight
    cout, cin, k = w.shape
    d = conv.dilation[0]
    cols = x.unfold(-1, (k - 1) * d + 1, 1)[..., ::d]                 # (B, Cin, Tout, K)
    b, _, t, _ = cols.shape
    y = torch.matmul(cols.permute(0, 2, 1, 3).reshape(b, t, cin * k), w.reshape(cout, cin * k).t())
    if conv.bias is not None:
        y.add_(conv.bias)   # in place on the GEMM's own output: the same sum, one allocation less
    return y.transpose(1, 2)


def conv_transpose1d(conv: torch.nn.ConvTranspose1d, x: Tensor) -> Tensor:
    """``conv(x)`` for an unpadded ConvTranspose1d: each input step's contribution is one
    row of a GEMM, overlapped and added into place (``F.fold``)."""
    low = _low(conv, x)
    if low is not None:
        return low(x)
    if not _use_gemm(x, conv):
        return conv(x)
    w = conv.weight
    cin, cout, k = w.shape
    s = conv.stride[0]
    b, _, t = x.shape
    cols = torch.matmul(x.transpose(1, 2), w.reshape(cin, cout * k))   # (B, T, Cout*K)
    n = (t - 1) * s + k
    y = F.fold(cols.transpose(1, 2), (1, n), (1, k), stride=(1, s)).view(b, cout, n)
    if conv.bias is not None:
        y.add_(conv.bias.view(1, -1, 1))
    return y
