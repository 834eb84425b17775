"""Exact, constant-cost streaming decode for the 12 Hz Qwen3-TTS codec.

Peers re-decode every chunk with a fixed left context (25 frames). That is not exact: the
real 8-layer decoder sees ~580 frames back, so every chunk join is a small discontinuity
that users hear as clicks. Here the decoder's own modules run step by step with their
state carried between calls:

* causal convolutions keep the last ``(kernel-1)*dilation`` input samples (the zeros the
  one-shot pass pads with on the left are the initial state);
* transposed convolutions keep the overlapping tail of their output (minus the bias, so
  it is not counted twice) and add it to the start of the next chunk;
* the sliding-window transformer keeps, per layer, the rotated keys and values of the last
  ``window-1`` frames - all that any later frame can attend to.

Streamed output therefore equals ``decoder(all_codes)`` up to float rounding, whatever the
chunk sizes, and each chunk costs the same at frame 10 as at frame 10,000. The weights are
the loaded model's own modules; nothing is copied. The modules are qwen-tts's or the
project's own (:mod:`.codec_model`, loaded without transformers): :func:`stream_kind` tells
them apart without importing qwen-tts.

Several streams decode in one call with :meth:`StreamingDecoder.push_many`: their states
are stacked on the batch axis (each row keeps its own position; attention caches of rows
that have seen fewer frames are left-padded and masked) and split back afterwards.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .cpu_conv import conv1d, conv_transpose1d
from .lean import LeanLayer, Norm, dense, lean_layers, rope_tables
from .loader import derived

# What each codec module is, for qwen-tts's classes (by name: importing them would import
# transformers); the project's own (:mod:`.codec_model`) say it with ``stream_kind``.
_QWEN_TTS_KINDS = {
    "Qwen3TTSTokenizerV2CausalConvNet": "conv",
    "Qwen3TTSTokenizerV2CausalTransConvNet": "trans_conv",
    "Qwen3TTSTokenizerV2ConvNeXtBlock": "convnext",
    "Qwen3TTSTokenizerV2DecoderDecoderBlock": "block",
    "Qwen3TTSTokenizerV2DecoderDecoderResidualUnit": "residual",
    "SnakeBeta": "snake",
}
_kinds: dict[type, str | None] = {}

PRIME_MARGIN_FRAMES = 8  # frames beyond the upsampling stack's context that a prime decodes


def stream_kind(m: torch.nn.Module) -> str | None:
    """How :class:`StreamingDecoder` runs ``m`` (None: as it is, point-wise in time)."""
    cls = type(m)
    if cls not in _kinds:
        kind = getattr(cls, "stream_kind", None)
        if kind is None and cls.__module__.startswith("qwen_tts."):
            kind = _QWEN_TTS_KINDS.get(cls.__name__)
        _kinds[cls] = kind
    return _kinds[cls]


class StreamingDecoder:
    """Feed codec frames in any chunking; get back exactly the matching PCM samples.

    One instance per utterance (or per voice-clone stream: prime it with the reference
    codes and drop that output). Not thread-safe; the engine drives it from its GPU thread.
    """

    def __init__(self, decoder: torch.nn.Module) -> None:
        self.decoder = decoder
        self.config = decoder.config
        self.samples_per_frame = int(decoder.total_upsample)
        self.window = int(self.config.sliding_window)
        self.reset()

    def reset(self) -> None:
        self._conv_tail: dict[int, Tensor] = {}
        self._trans_carry: dict[int, Tensor] = {}
        self._kv: list[tuple[Tensor, Tensor] | None] = [None] * len(self.decoder.pre_transformer.layers)
        self._frames: list[int] | None = None   # per batch row; None until the first push

    @property
    def frames_seen(self) -> int:
        return self._frames[0] if self._frames else 0

    def get_state(self) -> dict:
        """A copy of the carried state, e.g. after priming with a clone reference, so many
        streams can start from it without decoding the reference again."""
        return {
            "conv": {k: v.clone() for k, v in self._conv_tail.items()},
            "trans": {k: v.clone() for k, v in self._trans_carry.items()},
            "kv": [None if kv is None else (kv[0].clone(), kv[1].clone()) for kv in self._kv],
            "frames": self.frames_seen,
        }

    def set_state(self, state: dict) -> None:
        self._conv_tail = {k: v.clone() for k, v in state["conv"].items()}
        self._trans_carry = {k: v.clone() for k, v in state["trans"].items()}
        self._kv = [None if kv is None else (kv[0].clone(), kv[1].clone()) for kv in state["kv"]]
        self._frames = [state["frames"]] if state["frames"] else None

    @classmethod
    def push_many(cls, decoders: list["StreamingDecoder"], codes: Tensor) -> Tensor:
        """Decode ``codes`` (B, T, Q): row b continues ``decoders[b]`` (single-stream
        decoders of one codec). Same result as pushing each row alone, in one call."""
        if len(decoders) == 1:
            return decoders[0].push(codes)
        batch = cls(decoders[0].decoder)
        batch._frames = [d.frames_seen for d in decoders]
        for attr in ("_conv_tail", "_trans_carry"):
            keys = set().union(*(getattr(d, attr) for d in decoders))
            stacked = {}
            for k in keys:
                rows = [getattr(d, attr).get(k) for d in decoders]
                like = next(r for r in rows if r is not None)
                stacked[k] = torch.cat([torch.zeros_like(like) if r is None else r for r in rows])
            setattr(batch, attr, stacked)
        for i in range(len(batch._kv)):
            kvs = [d._kv[i] for d in decoders]
            n = max((kv[0].shape[2] for kv in kvs if kv is not None), default=0)
            if n:
                like = next(kv for kv in kvs if kv is not None)
                batch._kv[i] = tuple(torch.cat([_left_pad(kv[j] if kv is not None else like[j][:, :, :0], n)
                                                for kv in kvs]) for j in (0, 1))
        out = batch.push(codes)
        keep = batch.window - 1
        for b, d in enumerate(decoders):
            d._conv_tail = {k: v[b:b + 1] for k, v in batch._conv_tail.items()}
            d._trans_carry = {k: v[b:b + 1] for k, v in batch._trans_carry.items()}
            valid = min(batch._frames[b], keep)
            d._kv = [None if kv is None or not valid else (kv[0][b:b + 1, :, -valid:], kv[1][b:b + 1, :, -valid:])
                     for kv in batch._kv]
            d._frames = [batch._frames[b]]
        return out

    @torch.inference_mode()
    def push(self, codes: Tensor) -> Tensor:
        """codes: (T, Q) or (B, T, Q) integer codes -> float audio (B, T * samples_per_frame)."""
        if codes.dim() == 2:
            codes = codes.unsqueeze(0)
        if codes.shape[1] == 0:
            return torch.zeros(codes.shape[0], 0, device=codes.device)
        return self._back(self._front(codes))

    @torch.inference_mode()
    def prime(self, codes: Tensor) -> None:
        """Leave the state ``push(codes)`` leaves on a fresh decoder, without the audio: an
        ICL clone's reference primes the codec once per voice, on its first call.

        Why cheaper: the frame-rate front (dequantizer, pre-conv, sliding-window
        transformer) must see every frame - its attention reaches ~580 frames back - but the
        upsampling stack after it, nearly all of the cost, is causal convolutions whose
        state at the end depends only on the last :meth:`back_context_frames` frames of its
        input. It runs on those alone (plus a margin), from the zero state a one-shot decode
        starts from. The state equals the full decode's up to the float rounding that
        streaming in chunks already has (convolutions over inputs of other lengths round
        differently); the audio after it is held to the streaming bound (test)."""
        if codes.dim() == 2:
            codes = codes.unsqueeze(0)
        keep = self.back_context_frames() + PRIME_MARGIN_FRAMES
        if self._frames is not None or codes.shape[1] <= keep:
            self.push(codes)
            return
        self._back(self._front(codes)[..., -keep:])

    def back_context_frames(self) -> int:
        """Frames of transformer output that decide the upsampling stack's state: each conv's
        carried input span and each transposed conv's overlap, in frames at its sample rate,
        summed and rounded up."""
        rate, span = 1, 0.0

        def walk(m: torch.nn.Module) -> None:
            nonlocal rate, span
            kind = stream_kind(m)
            if kind == "conv":
                span += (m.kernel_size - 1) / rate
            elif kind == "trans_conv":
                stride, k = m.conv.stride[0], m.conv.kernel_size[0]
                span += max(k - stride, 0) / (stride * rate)
                rate *= stride
            elif kind == "convnext":
                walk(m.dwconv)
            elif kind == "block":
                for sub in m.block:
                    walk(sub)
            elif kind == "residual":
                walk(m.conv1)
                walk(m.conv2)

        for m in (*(b for blocks in self.decoder.upsample for b in blocks), *self.decoder.decoder):
            walk(m)
        return math.ceil(span)

    def _front(self, codes: Tensor) -> Tensor:
        """The frame-rate part: codes (B, T, Q) -> transformer output (B, D, T)."""
        dec = self.decoder
        codes = codes.clamp(min=0).transpose(1, 2)  # (B, Q, T) as the decoder takes it
        if self._frames is None:
            self._frames = [0] * codes.shape[0]
        if codes.shape[1] != self.config.num_quantizers:
            raise ValueError(f"expected {self.config.num_quantizers} codebooks, got {codes.shape[1]}")
        hidden = _dequantize(dec.quantizer, codes)
        hidden = self._conv(dec.pre_conv, hidden)
        hidden = self._transformer(hidden.transpose(1, 2)).permute(0, 2, 1)
        self._frames = [f + codes.shape[-1] for f in self._frames]
        return hidden

    def _back(self, hidden: Tensor) -> Tensor:
        """The upsampling stack: transformer output (B, D, T) -> audio (B, T * samples_per_frame)."""
        dec = self.decoder
        for blocks in dec.upsample:
            for block in blocks:
                hidden = self._module(block, hidden)
        for block in dec.decoder:
            hidden = self._module(block, hidden)
        return hidden.clamp_(min=-1, max=1).squeeze(1)

    # --- building blocks -------------------------------------------------------------

    def _module(self, m: torch.nn.Module, x: Tensor) -> Tensor:
        kind = stream_kind(m)
        if kind == "conv":
            return self._conv(m, x)
        if kind == "trans_conv":
            return self._trans_conv(m, x)
        if kind == "convnext":
            return self._convnext(m, x)
        if kind == "block":
            for sub in m.block:
                x = self._module(sub, x)
            return x
        if kind == "residual":
            y = self._conv(m.conv1, x, act=m.act1)
            y = self._conv(m.conv2, y, act=m.act2)
            return y.add_(x) if _fresh(y) else y + x
        if kind == "snake":
            return _snake(m, x)
        return m(x)  # point-wise in time: no state

    def _conv(self, m: torch.nn.Module, x: Tensor, act: torch.nn.Module | None = None) -> Tensor:
        """``m`` on ``x`` (first through the Snake ``act``, if given) after the carried tail.

        The conv's input - tail, then this chunk - is one new buffer that the Snake writes
        into directly (no ``cat``: one pass and one allocation less per conv); the tail kept
        for the next chunk is a copy, so the buffer is freed as soon as the conv has run."""
        if m.stride != 1:
            raise NotImplementedError("streaming decode assumes stride-1 causal convs")
        keep = m.kernel_size - 1  # effective kernel incl. dilation
        if keep == 0:
            return conv1d(m.conv, x if act is None else _snake(act, x))
        b, c, t = x.shape
        xe = x.new_empty(b, c, keep + t)
        tail = self._conv_tail.get(id(m))
        if tail is None:
            xe[..., :keep].zero_()
        else:
            xe[..., :keep].copy_(tail)
        if act is None:
            xe[..., keep:].copy_(x)
        else:
            _snake(act, x, out=xe[..., keep:])
        self._conv_tail[id(m)] = xe[..., -keep:].clone()
        return conv1d(m.conv, xe)

    def _trans_conv(self, m: torch.nn.Module, x: Tensor) -> Tensor:
        conv = m.conv
        stride = conv.stride[0]
        y = conv_transpose1d(conv, x)
        n = x.shape[-1] * stride
        carry = self._trans_carry.get(id(m))
        if carry is not None:
            y[..., : carry.shape[-1]] += carry
        tail = y[..., n:]
        if tail.shape[-1]:
            bias = conv.bias.view(1, -1, 1) if conv.bias is not None else 0
            self._trans_carry[id(m)] = tail - bias
        return y[..., :n]

    def _convnext(self, m: torch.nn.Module, x: Tensor) -> Tensor:
        h = self._conv(m.dwconv, x).permute(0, 2, 1)
        h = m.pwconv2(m.act(m.pwconv1(m.norm(h))))
        return x + (m.gamma * h).permute(0, 2, 1)

    def _transformer(self, x: Tensor) -> Tensor:
        tr = self.decoder.pre_transformer
        lean = _lean_transformer(tr)
        t = x.shape[1]
        h = lean.input_proj(x)
        start = torch.tensor(self._frames, device=x.device).unsqueeze(1)      # (B, 1)
        qpos = start + torch.arange(t, device=x.device)                        # (B, t)
        cos, sin = rope_tables(*tr.rotary_emb(h, qpos))
        past = self._kv[0]
        mask = self._window_mask(start, qpos, 0 if past is None else past[0].shape[2])
        for layer in lean.layers:
            h = layer(h, cos, sin, self, mask)
        return lean.output_proj(lean.norm(h))

    def _window_mask(self, start: Tensor, qpos: Tensor, n_past: int) -> Tensor:
        """(B, 1, t, n_past + t): a query at absolute position p sees keys at (p - window, p].
        Past keys are right-aligned per row; a row that has seen fewer frames has padding on
        the left. The same for every layer."""
        j = torch.arange(n_past + qpos.shape[1], device=qpos.device).unsqueeze(0)
        kpos = start - n_past + j                                              # (B, n+t)
        valid = j >= n_past - start.clamp(max=max(self.window - 1, 0))
        return (valid.unsqueeze(1) & (kpos.unsqueeze(1) <= qpos.unsqueeze(2))
                & (kpos.unsqueeze(1) > qpos.unsqueeze(2) - self.window)).unsqueeze(1)

    def update(self, k: Tensor, v: Tensor, layer: int) -> tuple[Tensor, Tensor]:
        """The KV cache of :class:`LeanLayer`: past + new keys/values to attend to; keeps
        the last ``window - 1``, all that any later frame can see."""
        past = self._kv[layer]
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        keep = self.window - 1
        self._kv[layer] = (k[:, :, -keep:], v[:, :, -keep:]) if keep > 0 else None
        return k, v


class _LeanTransformer:
    """The codec's pre-transformer as :class:`LeanLayer` s (built once per loaded model)."""

    def __init__(self, tr: torch.nn.Module) -> None:
        self.layers: list[LeanLayer] = lean_layers(tr.layers, windowed=True)
        self.input_proj, self.output_proj = dense(tr.input_proj), dense(tr.output_proj)
        self.norm = Norm.of(tr.norm)


def _lean_transformer(tr: torch.nn.Module) -> _LeanTransformer:
    return derived(tr, "_qwen3ttsd_lean", lambda: _LeanTransformer(tr))


def _dequantize(quantizer: torch.nn.Module, codes: Tensor) -> Tensor:
    """qwen-tts's ``SplitResidualVectorQuantizer.decode``, (B, Q, T) codes -> (B, D, T).

    Its codebooks divide the whole table (2,048 x 256 per codebook on the real codec) by
    the usage counts on every call, i.e. 16 full-table divisions per decoded chunk; this
    divides only the looked-up rows: the same division of the same numbers."""
    n_first = quantizer.n_q_semantic
    out = _dequantize_rvq(quantizer.rvq_first, codes[:, :n_first])
    if codes.shape[1] > n_first:
        out += _dequantize_rvq(quantizer.rvq_rest, codes[:, n_first:])
    return out


def _dequantize_rvq(rvq: torch.nn.Module, codes: Tensor) -> Tensor:
    summed: Tensor | None = None
    for layer, ids in zip(rvq.vq.layers, codes.transpose(0, 1)):
        book = layer._codebook
        rows = F.embedding(ids, book.embedding_sum) / book.cluster_usage.clamp(min=book.epsilon)[ids].unsqueeze(-1)
        part = layer.project_out(rows).transpose(1, 2)
        summed = part if summed is None else summed + part
    assert summed is not None
    return rvq.output_proj(summed)


def _snake(m: torch.nn.Module, x: Tensor, out: Tensor | None = None) -> Tensor:
    """qwen-tts's SnakeBeta ``x + 1 / (exp(beta) + 1e-9) * sin(x * exp(alpha)) ** 2`` with
    its per-channel factors computed once per loaded model (its forward recomputes them
    in ~8 small ops on every call; the decoder has 29 of them).

    The same five ops on the same values, each but the first in place, into ``out`` when
    given (a conv's input buffer): one allocation instead of four, none with ``out``. The
    swapped operands of the last multiply and add give the same bits (IEEE ``*`` and ``+``
    commute); a fused ``addcmul`` would not (it rounds once, as an FMA)."""
    alpha, inv_beta = derived(m, "_qwen3ttsd_factors", lambda: (
        torch.exp(m.alpha.detach().view(1, -1, 1)),
        1.0 / (torch.exp(m.beta.detach().view(1, -1, 1)) + m.no_div_by_zero)))
    y = torch.mul(x, alpha) if out is None else torch.mul(x, alpha, out=out)
    return y.sin_().pow_(2).mul_(inv_beta).add_(x)


def _fresh(y: Tensor) -> bool:
    """Whether ``y``, a conv's output (always a new tensor), takes the residual in place:
    when contiguous, so the sum keeps the layout ``y + x`` gives (the GEMM convs return a
    transposed view; those keep the out-of-place add)."""
    return y.is_contiguous()


def _left_pad(x: Tensor, n: int) -> Tensor:
    """(1, H, m, D) -> (1, H, n, D) with zeros in front."""
    if x.shape[2] == n:
        return x
    return torch.cat([x.new_zeros(x.shape[0], x.shape[1], n - x.shape[2], x.shape[3]), x], dim=2)
