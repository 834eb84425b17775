"""The codec decoder's convolutions at low precision on CPU, chosen per layer by measured error.

Why: the codec is compute-bound fp32 convolutions (~4.9 GFLOP per frame at 0.6B, about
this CPU's fp32 peak); an int8 GEMM (``torch._int_mm``, int32 accumulation) runs the
wide layers' products 3-4x faster, bf16 (only where the CPU has AVX512-BF16/AMX: emulated
bf16 is slow) about 2x the thin ones (issue 25; figures in bench/RESULTS.md).

Exact streaming is kept because every quantization step is local in time:

* weights: symmetric int8 per output channel (per output column of a transposed conv);
* activations: symmetric int8 per GEMM row - one output step's input window (conv) or
  one input step (transposed conv) - with the scale from that row's own values, so a
  chunk's rows are quantized exactly as in a one-shot decode (no per-tensor statistic
  that would depend on the chunking);
* the products accumulate in int32, which is exact on every CPU whatever the kernel's
  blocking, and are scaled back elementwise in fp32.

So a streamed decode equals the one-shot decode of the same low-precision codec up to the
fp32 rounding the fp32 codec already has (which can flip one int8 rounding: one quantum
of one value, far below the quality bound). Which layers run low precision is decided
once per loaded codec (:func:`quantize_codec`), by the decoded audio's measured error
against the fp32 codec (:data:`CODEC_SNR_DB`).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger("qwen3ttsd.engine")

CODEC_QUANT_MODES = ("none", "int8")
CODEC_SNR_DB = 33.0          # decoded audio vs the fp32 codec: the 30 dB gate plus a margin
INT8_MIN_CHANNELS = 192      # measured: narrower layers gain little from int8 (bf16 wins there)
CALIBRATION_FRAMES = 4       # 320 ms: each tried layer costs one decode of it at load
ATTR = "_qwen3ttsd_lowp"     # where a conv module carries its low-precision form
PLAN = "_qwen3ttsd_codec_plan"  # on the decoder: (mode, {module name: precision})


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere oneDNN
    emulates it, slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def snr_db(ref: Tensor, x: Tensor) -> float:
    """Signal-to-noise ratio of ``x`` against ``ref`` in dB."""
    noise = (x.float() - ref.float()).pow(2).sum()
    return float(10 * torch.log10(ref.float().pow(2).sum() / noise.clamp(min=1e-30)))


def _mel_bank(n_fft: int, n_mels: int, sr: int) -> Tensor:
    """Triangular filters on the HTK mel scale, (n_mels, n_fft // 2 + 1)."""
    def mel(f: Tensor) -> Tensor:
        return 2595 * torch.log10(1 + f / 700)
    hz = torch.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = 700 * (10 ** (torch.linspace(0, float(mel(torch.tensor(sr / 2.0))), n_mels + 2) / 2595) - 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return torch.clamp(torch.minimum((hz - lo) / (mid - lo), (hi - hz) / (hi - mid)), min=0)


def log_mel_distance(ref: Tensor, x: Tensor, sr: int = 24000, n_fft: int = 1024, n_mels: int = 80) -> float:
    """The project's log-mel distance in dB: per STFT frame (1024 / hop 256), the RMS over
    80 mel bands of the difference of 10*log10 band power (floored 80 dB below the
    reference's loudest band), averaged over frames. 0 for identical audio; ~1 dB is at
    the edge of what a listener hears as a timbre change."""
    bank = _mel_bank(n_fft, n_mels, sr)
    win = torch.hann_window(n_fft)

    def db(a: Tensor) -> Tensor:
        spec = torch.stft(a.float().reshape(-1), n_fft, n_fft // 4, window=win, return_complex=True).abs().pow(2)
        return bank @ spec

    r, y = db(ref), db(x)
    floor = r.max() * 1e-8
    diff = 10 * torch.log10(r.clamp(min=floor)) - 10 * torch.log10(y.clamp(min=floor))
    return float(diff.pow(2).mean(0).sqrt().mean())


def _quant_rows(rows: Tensor, amax: Tensor) -> tuple[Tensor, Tensor]:
    """int8 values and scales of ``rows`` (..., K) given each row's max |value| (..., 1)."""
    scale = amax.clamp(min=1e-30) / 127.0
    return (rows / scale).round_().to(torch.int8), scale


class LowPrecisionConv:
    """A stride-1 Conv1d or a ConvTranspose1d (no padding, groups 1) in int8 or bf16."""

    def __init__(self, conv: torch.nn.Conv1d | torch.nn.ConvTranspose1d, mode: str) -> None:
        self.mode = mode
        self.transposed = isinstance(conv, torch.nn.ConvTranspose1d)
        w = conv.weight.detach().float()
        self.k = w.shape[-1]
        self.dilation = conv.dilation[0]
        self.stride = conv.stride[0]
        self.bias = None if conv.bias is None else conv.bias.detach().float()
        if self.transposed:   # (Cin, Cout, K) -> (Cin, Cout*K): one GEMM column per output tap
            self.cout = w.shape[1]
            mat = w.reshape(w.shape[0], -1)
        else:                 # (Cout, Cin, K) -> (Cin*K, Cout)
            self.cout = w.shape[0]
            mat = w.reshape(w.shape[0], -1).t()
        if mode == "int8":
            self.w, self.w_scale = _quant_rows(mat.t(), mat.t().abs().amax(1, keepdim=True))
            self.w = self.w.t().contiguous()
            self.w_scale = self.w_scale.view(-1)
        elif mode == "bf16":
            self.w = mat.to(torch.bfloat16).contiguous()
            self.w_conv = w.to(torch.bfloat16)
        else:
            raise ValueError(f"unknown codec precision {mode!r}")

    def __call__(self, x: Tensor) -> Tensor:
        return self._transposed(x) if self.transposed else self._conv(x)

    def _conv(self, x: Tensor) -> Tensor:
        b, cin, _ = x.shape
        k, d = self.k, self.dilation
        if self.mode == "bf16":
            y = F.conv1d(x.to(torch.bfloat16), self.w_conv, dilation=d).float()
            return y if self.bias is None else y + self.bias.view(1, -1, 1)
        span = (k - 1) * d + 1
        cols = x.unfold(-1, span, 1)[..., ::d].permute(0, 2, 1, 3)         # (B, Tout, Cin, K)
        t = cols.shape[1]
        # a row's max |value| is the max over its window of each step's max (cheap: T values)
        amax = F.max_pool1d(x.abs().amax(1, keepdim=True), k, 1, dilation=d).view(b, t, 1, 1)
        q, scale = _quant_rows(cols, amax)
        y = torch._int_mm(q.reshape(b * t, cin * k), self.w).view(b, t, -1).float()
        y = y * (scale.view(b, t, 1) * self.w_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.transpose(1, 2)

    def _transposed(self, x: Tensor) -> Tensor:
        b, cin, t = x.shape
        rows = x.transpose(1, 2)                                              # (B, T, Cin)
        if self.mode == "bf16":
            cols = torch.matmul(rows.to(torch.bfloat16), self.w).float()
        else:
            q, scale = _quant_rows(rows, rows.abs().amax(-1, keepdim=True))
            cols = torch._int_mm(q.reshape(b * t, cin), self.w).view(b, t, -1).float()
            cols = cols * (scale * self.w_scale)
        n = (t - 1) * self.stride + self.k
        y = F.fold(cols.transpose(1, 2), (1, n), (1, self.k), stride=(1, self.stride)).view(b, self.cout, n)
        return y if self.bias is None else y + self.bias.view(1, -1, 1)


def eligible(conv: torch.nn.Module) -> bool:
    """The plain forms :class:`LowPrecisionConv` implements."""
    if isinstance(conv, torch.nn.ConvTranspose1d):
        return (conv.groups == 1 and conv.padding == (0,) and conv.dilation == (1,)
                and conv.output_padding == (0,))
    return (isinstance(conv, torch.nn.Conv1d) and conv.groups == 1 and conv.padding == (0,)
            and conv.stride == (1,))


def candidates(conv: torch.nn.Module) -> list[str]:
    """Low-precision forms to try, fastest first (measured on this project's CPU box)."""
    cin = conv.weight.shape[1] if isinstance(conv, torch.nn.Conv1d) else conv.weight.shape[0]
    out = ["int8"] if cin >= INT8_MIN_CHANNELS else []
    if cpu_has_bf16():
        out.append("bf16")
    return out


def _convs(decoder: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in decoder.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))
            and m.weight.device.type == "cpu" and eligible(m)]


def clear(decoder: torch.nn.Module) -> None:
    """Back to the fp32 convolutions."""
    decoder.__dict__.pop(PLAN, None)
    for m in _convs(decoder):
        m.__dict__.pop(ATTR, None)


@torch.inference_mode()
def quantize_codec(decoder: torch.nn.Module, mode: str, min_snr_db: float = CODEC_SNR_DB,
                   seed: int = 0) -> dict[str, str]:
    """Give ``decoder``'s convolutions low-precision forms where the decoded audio holds
    ``min_snr_db`` against the fp32 codec (``mode`` "int8": int8 or bf16 per layer; "none":
    fp32 everywhere). Returns {module name: precision} (fp32 included).

    Measured end to end, not per layer: a decoder amplifies an early layer's error through
    every later stage (on random weights a single int8 layer at the input costs ~17 dB of
    output SNR, at the output ~1 dB), so layers are tried from the output backwards, each
    kept only if the whole decode of calibration codes still holds the bound, and the
    walk stops at the first layer where no form does (earlier ones amplify more). The
    result - each conv's :class:`LowPrecisionConv` - is a function of (decoder, mode)."""
    from .streaming_decoder import StreamingDecoder

    clear(decoder)
    if mode not in CODEC_QUANT_MODES:
        raise ValueError(f"unknown codec quantization {mode!r} (supported: {CODEC_QUANT_MODES})")
    names = {id(m): n for n, m in decoder.named_modules()}
    convs = _convs(decoder)
    plan = {names[id(m)]: "fp32" for m in convs}
    if mode == "none" or not convs:
        return plan
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, int(decoder.config.codebook_size), (CALIBRATION_FRAMES, decoder.config.num_quantizers),
                          generator=g)

    def decode() -> Tensor:
        return StreamingDecoder(decoder).push(codes)

    ref = decode()
    for m in reversed(convs):
        kept = False
        for cand in candidates(m):
            m.__dict__[ATTR] = LowPrecisionConv(m, cand)
            if snr_db(ref, decode()) >= min_snr_db:
                plan[names[id(m)]] = cand
                kept = True
                break
            del m.__dict__[ATTR]
        if not kept:
            break
    log.info("codec precision: %s", {p: list(plan.values()).count(p) for p in sorted(set(plan.values()))})
    return plan


def codec_precision(decoder: torch.nn.Module, mode: str, device: torch.device) -> dict[str, str]:
    """The backend's hook: ``decoder`` at ``mode`` (CPU only; elsewhere fp32), chosen once
    per loaded codec and mode (the plan is kept on the decoder)."""
    from ..errors import TTSError

    if mode not in CODEC_QUANT_MODES:
        raise TTSError("bad_request", f"unknown codec quantization {mode!r} (supported: {CODEC_QUANT_MODES})")
    if device.type != "cpu":
        mode = "none"
    kept = decoder.__dict__.get(PLAN)
    if kept is None or kept[0] != mode:
        kept = decoder.__dict__[PLAN] = (mode, quantize_codec(decoder, mode))
    return kept[1]


def plan_of(decoder: torch.nn.Module) -> dict[str, str]:
    """The precision plan :func:`codec_precision` put on ``decoder`` ({} where none has run)."""
    kept = decoder.__dict__.get(PLAN)
    return {} if kept is None else dict(kept[1])


def lowp(conv: torch.nn.Module) -> LowPrecisionConv | None:
    """The low-precision form of ``conv``, if it has one."""
    return conv.__dict__.get(ATTR)


__all__ = ["CODEC_QUANT_MODES", "LowPrecisionConv", "clear", "codec_precision", "cpu_has_bf16",
           "log_mel_distance", "lowp", "plan_of",
           "quantize_codec", "snr_db"]
