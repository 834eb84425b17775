"""Qwen3 decoder layers with fewer, larger ops, for the batched step engine.

At decode time a layer is a handful of matrix-vector products; in eager PyTorch the cost
of HF's module graph (~45 small ops and module calls per layer: RMSNorm in 6 ops, three
separate projections, rotary in 8) exceeds the math for small models and still shows at
real sizes on CPU. This runs the same math in ~15 ops per layer: fused RMSNorm, one
q/k/v projection and one gate/up projection (the loaded modules' weights are re-pointed
into the fused tensors, so no memory is duplicated and qwen-tts's own modules keep working),
SDPA with grouped-query heads. Results equal qwen-tts's layers up to float rounding
(tests compare logits within 1e-4).

The hot path calls ``F.linear`` on plain weight tensors rather than the modules (a module
call, and ops on ``Parameter`` s, cost microseconds each, hundreds of times a frame), and
RMSNorm on CPU computes the mean of squares as one matrix-vector product: ATen's CPU
``rms_norm`` is ~10 small ops (~17 us at decode shapes; this is 5, ~10 us), and the
predictor alone runs 60-240 norms a frame.

Positions: the talker uses interleaved multimodal rope, but for speech all three position
components are equal, which makes it ordinary rope with the first component's angles.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _fuse(linears: list[torch.nn.Linear]) -> torch.nn.Linear:
    """One Linear for several over the same input; the modules' own parameters become
    views of its weight (and bias), so no memory is duplicated. Weights that already are
    consecutive rows of one tensor (as :mod:`.checkpoint` loads them) are used as they are."""
    w0 = linears[0].weight
    fused = torch.nn.Linear(w0.shape[1], sum(m.weight.shape[0] for m in linears),
                            bias=linears[0].bias is not None, device="meta")
    fused.weight = torch.nn.Parameter(_rows([m.weight.data for m in linears]), requires_grad=False)
    if fused.bias is not None:
        fused.bias = torch.nn.Parameter(_rows([m.bias.data for m in linears]), requires_grad=False)
    row = 0
    for m in linears:
        n = m.weight.shape[0]
        m.weight.data = fused.weight.data[row:row + n]
        if m.bias is not None and fused.bias is not None:
            m.bias.data = fused.bias.data[row:row + n]
        row += n
    return fused


def _rows(parts: list[Tensor]) -> Tensor:
    """``torch.cat(parts)``, without a copy where the parts are adjacent blocks of one
    contiguous buffer."""
    first = parts[0]
    if any(p.is_meta for p in parts):  # weights left unloaded (their int8 copies come from the
        # weight cache): shapes only, without an op on meta (the first imports torch's meta kernels, ~2 s)
        return torch.empty((sum(p.shape[0] for p in parts), *first.shape[1:]), dtype=first.dtype, device="meta")
    storage = first.untyped_storage()
    end = first.data_ptr()
    for p in parts:
        if (not p.is_contiguous() or p.dtype != first.dtype or p.data_ptr() != end
                or p.untyped_storage().data_ptr() != storage.data_ptr() or p.shape[1:] != first.shape[1:]):
            return torch.cat(parts)
        end += p.numel() * p.element_size()
    shape = (sum(p.shape[0] for p in parts), *first.shape[1:])
    return first.new_empty(0).set_(storage, first.storage_offset(), shape)


def int8_layout_problem(value: Any, talker_layers: int, predictor_layers: int, heads: int) -> str | None:
    """What keeps ``value`` from being the int8 structure the batched backend builds (and the
    weight cache keeps): (talker layers, predictor layers, codec head, predictor lm heads)
    with these counts; None where it is one."""
    if not (isinstance(value, (tuple, list)) and len(value) == 4):
        return f"a {type(value).__name__}, not the 4 int8 parts"
    talker, predictor, codec_head, lm_heads = value
    for what, got, n in (("talker layers", talker, talker_layers), ("predictor layers", predictor, predictor_layers)):
        if not (isinstance(got, list) and len(got) == n and all(isinstance(x, LeanLayer) for x in got)):
            return f"{what}: expected {n} LeanLayers"
    if not isinstance(codec_head, torch.nn.Module):
        return "codec head: not a module"
    if not (isinstance(lm_heads, list) and len(lm_heads) == heads
            and all(isinstance(h, torch.nn.Module) for h in lm_heads)):
        return f"predictor lm heads: expected {heads} modules"
    return None


def quantize_int8(module: torch.nn.Module, per_channel: bool = True) -> torch.nn.Module:
    """A copy of ``module`` with every Linear's weights in int8 (torch's dynamic
    quantization: int8 weights, activations quantized on the fly; CPU only).

    ``per_channel``: one scale per output row (fbgemm applies it in the same kernel, at no
    measured cost), so a row's error is bounded by its own largest weight, not the whole
    matrix's: trained lm heads and projections have rows of very different norms, which
    one per-tensor scale rounds coarsely (a row 100x smaller than the largest keeps ~1 of
    its 127 levels). bench/RESULTS.md (Issue 25, session 9) has the figures."""
    import warnings

    if type(module) is torch.nn.Linear:  # quantize_dynamic swaps children, never the module it is
        return quantize_int8(torch.nn.Sequential(module), per_channel=per_channel)[0]  # given (it came back fp32)
    with warnings.catch_warnings():  # torch.ao is deprecated in favour of torchao; still the
        warnings.simplefilter("ignore", DeprecationWarning)  # dependency-free CPU int8 path
        from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        return quantize_dynamic(module, {torch.nn.Linear: qconfig}, dtype=torch.qint8, inplace=False)


@functools.cache
def int8_unavailable() -> str | None:
    """None where torch's int8 Linear (:func:`quantize_int8`) runs on this CPU, else why not:
    a CPU without AVX2 (many NAS Celerons) may have no quantized engine at all."""
    try:
        quantize_int8(torch.nn.Linear(8, 8))(torch.zeros(2, 8))
    except Exception as e:  # noqa: BLE001 - whatever it is, this CPU serves fp32
        return f"{type(e).__name__}: {e}"
    return None


def int8_obstacle(dtype: torch.dtype) -> str | None:
    """Why the int8 linears cannot serve a model loaded in ``dtype`` on this CPU; None where
    they can. torch's dynamic int8 Linear takes float32 activations only: a bf16 model
    (``QWEN3TTSD_DTYPE=bfloat16``) failed every step."""
    if dtype != torch.float32:
        return (f"the model is loaded in {str(dtype).removeprefix('torch.')} (QWEN3TTSD_DTYPE) and the int8 "
                f"kernels take float32")
    why = int8_unavailable()
    return None if why is None else f"torch's int8 kernels do not run on this CPU ({why})"


def serving_int8(setting: str, device_type: str, dtype: torch.dtype = torch.float32) -> bool:
    """Whether the linears serve int8: :func:`.backend.serving_quant`'s choice, where
    :func:`int8_obstacle` finds none. Otherwise ``auto`` serves unquantized and ``int8`` /
    ``int4`` are an ``unsupported`` error."""
    from ..errors import TTSError
    from .backend import quant_setting, serving_quant

    if not serving_quant(setting, device_type):
        return False
    why = int8_obstacle(dtype)
    if why is None:
        return True
    if quant_setting(setting) in ("int8", "int4"):
        raise TTSError("unsupported", f"QWEN3TTSD_QUANT={quant_setting(setting)}: {why}; set it to auto or none")
    return False


def rope_tables(cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """HF's cos/sin (B or 1, T, head_dim) as :class:`LeanLayer` takes them: with a heads
    axis, and the sign of ``rotate_half`` folded into sin (built once per step, shared by
    every layer)."""
    half = cos.shape[-1] // 2
    sign = torch.ones(cos.shape[-1], dtype=sin.dtype, device=sin.device)
    sign[:half] = -1
    return cos.unsqueeze(1), (sin * sign).unsqueeze(1)


def _rotate(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """HF's ``x * cos + rotate_half(x) * sin``: rotate_half is a roll by half the head
    plus a sign, which :func:`rope_tables` folded into ``signed_sin``. (A flip of the two
    halves as a (2, half) view is the same values but slower: ~9 us against roll's ~5.)"""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, -1), signed_sin)


def dense(module: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    """``module``'s forward, for a plain Linear as ``F.linear`` on plain tensors (no module
    call); an int8 Linear by the row spans of :data:`INT8_ROWS`; anything else (Identity)
    is called as it is."""
    if _is_int8_linear(module):
        return functools.partial(_int8_by_rows, module)
    if type(module) is not torch.nn.Linear:
        return module
    bias = None if module.bias is None else module.bias.detach()
    return functools.partial(F.linear, weight=module.weight.detach(), bias=bias)


def _is_int8_linear(module: Any) -> bool:
    t = type(module)
    return t.__name__ == "Linear" and t.__module__.startswith("torch.ao.nn.quantized.dynamic")


class Int8Rows(threading.local):
    """The row spans (along dim 0) whose activations an int8 Linear quantizes together, for
    the step running on this thread; ``None``: the whole input at once.

    Why: torch's dynamic int8 Linear quantizes its input with one scale for the whole
    tensor, so a row's result depends on the other rows of the batch - a seeded request
    would speak differently beside other calls than alone. The batched backend puts each
    seeded row in a span of its own (:func:`alone_spans`): computed as if alone, bitwise,
    while unseeded rows stay batched (a span per row costs about its M=1 time: 4x at 8 rows)."""

    spans: list[slice] | None = None


INT8_ROWS = Int8Rows()


def _int8_by_rows(linear: torch.nn.Module, x: Tensor) -> Tensor:
    spans = INT8_ROWS.spans
    if spans is None:
        return _int8(linear, x)
    return torch.cat([_int8(linear, x[span]) for span in spans])


def _int8_or_int4(linear: torch.nn.Module, small: Callable[[Tensor], Tensor], max_rows: int, x: Tensor) -> Tensor:
    """An int8 Linear with an int4 copy (:meth:`LeanLayer.with_int4`): each of
    :data:`INT8_ROWS`' spans (or the whole input) by int4 where it has up to ``max_rows``
    rows, else by int8. A seeded row is a span of its own, so it takes the same path
    whatever else is batched."""
    spans = INT8_ROWS.spans
    if spans is None:
        return small(x) if x.shape[0] <= max_rows else _int8(linear, x)
    parts = (x[span] for span in spans)
    return torch.cat([small(p) if p.shape[0] <= max_rows else _int8(linear, p) for p in parts])


def _int8(linear: Any, x: Tensor) -> Tensor:
    """The dynamic int8 Linear's forward without the module call and its no-op ``.to``
    (float32 in, float32 out): ~5 us less per call, 75+ calls a predictor frame. Other
    packed dtypes (float16) and inputs go through the module. A weight read from the
    weight cache that fbgemm is still packing (a cold start) is computed from its plain
    integers meanwhile (:func:`unpacked_int8`)."""
    packed = linear._packed_params
    if packed.dtype != torch.qint8 or x.dtype != torch.float32:
        return linear(x)
    params = packed._packed_params
    if type(params) is not torch.ScriptObject:   # weight_cache._Pending: still packing
        ready = params.ready()
        if ready is None:
            if unpacked_int8_runs():
                return unpacked_int8(x, params.int8, params.scales, params.bias)
            ready = params.packed()   # no torch._int_mm on this CPU: wait for fbgemm
        packed._packed_params = params = ready
    version = linear.version
    return torch.ops.quantized.linear_dynamic(x, params, reduce_range=version is not None and version >= 4)


@functools.cache
def unpacked_int8_runs() -> bool:
    """Whether ``torch._int_mm`` runs on this CPU and is exact (checked once, ~1 ms)."""
    try:
        a = torch.arange(-64, 64, dtype=torch.int8).reshape(2, 64)
        b = torch.arange(127, -129, -1, dtype=torch.int16).clamp(-127, 127).to(torch.int8).reshape(64, 4)
        return torch.equal(torch._int_mm(a, b), a.int() @ b.int())
    except Exception:  # noqa: BLE001 - any failure: not used
        return False


def unpacked_int8(x: Tensor, weight: Tensor, scales: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ (weight * scales).T + bias`` for an int8 ``weight`` (out, in) as it is, with no
    fbgemm packing: each row of ``x`` quantized symmetrically to int8, ``torch._int_mm``
    (exact int32), scaled back.

    Why: packing a checkpoint's int8 weights for fbgemm costs ~3.6 s of CPU at 0.6B
    (fbgemm's scalar PackBMatrix), and a cold start's first request waited for all of it.
    This needs no packing and, on the 2-core box, runs a 0.6B talker frame 1.08x and a
    predictor frame 1.06x fbgemm's time at one row (1.6x at 8 rows), so the first requests
    after an idle exit are served while the packing goes on (bench/RESULTS.md, session 12).
    Its rounding differs from fbgemm's (per-row 8-bit activations, not per-batch 7-bit), so
    seeded requests wait for the packing (batched.py); each row is computed on its own."""
    rows = x.reshape(-1, x.shape[-1])
    step = rows.abs().amax(1, keepdim=True).clamp_min_(1e-12).div_(127.0)
    out = torch._int_mm(torch.div(rows, step).round_().to(torch.int8), weight.t()).float()
    out = out.mul_(step).mul_(scales)
    if bias is not None:
        out = out.add_(bias)
    return out.view(*x.shape[:-1], weight.shape[0])


@contextlib.contextmanager
def int8_rows(spans: list[slice] | None) -> Iterator[None]:
    """:data:`INT8_ROWS` set to ``spans`` on this thread for the block."""
    before, INT8_ROWS.spans = INT8_ROWS.spans, spans
    try:
        yield
    finally:
        INT8_ROWS.spans = before


def alone_spans(alone: list[bool]) -> list[slice] | None:
    """Row spans where each row marked ``alone`` is a span of its own and the runs of other
    rows between them are one span each; None when that is one span (all rows together)."""
    spans: list[slice] = []
    start = 0
    for i, own in enumerate(alone):
        if own:
            if start < i:
                spans.append(slice(start, i))
            spans.append(slice(i, i + 1))
            start = i + 1
    if start < len(alone):
        spans.append(slice(start, len(alone)))
    return spans if len(spans) > 1 else None


def activation(act: Any) -> Callable[[Tensor], Tensor]:
    """HF's activation module as a plain function where it is SiLU (Qwen3's)."""
    return F.silu if type(act).__name__ in ("SiLU", "SiLUActivation") else act


class Norm:
    """RMSNorm ``weight * x / sqrt(mean(x**2) + eps)`` over the last axis, as HF's Qwen3
    RMSNorm computes it. ``weight`` is (D,) or broadcastable to x (e.g. one row per head).

    CPU float32: ``x * rsqrt(x**2 @ (1/D) + eps) * weight`` in 5 ops (see the module
    docstring); elsewhere ``F.rms_norm`` (one fused kernel on CUDA, float32 statistics
    for half-precision inputs as HF does)."""

    def __init__(self, weight: Tensor, eps: float) -> None:
        self.weight = weight.detach()
        self.eps = float(eps)
        d = weight.shape[-1]
        self.shape = (d,)
        self.gemv = weight.device.type == "cpu" and weight.dtype == torch.float32
        self.mean_of = torch.full((1, d), 1.0 / d, dtype=weight.dtype, device=weight.device)
        self.eps_bias = torch.full((1,), self.eps, dtype=weight.dtype, device=weight.device)

    @classmethod
    def of(cls, module: Any) -> "Norm":
        """From an HF RMSNorm module (``weight``, ``variance_epsilon``)."""
        return cls(module.weight, module.variance_epsilon)

    _mean_t: Tensor | None = None   # mean_of.t(), made on first use; never pickled (the weight
    # cache stores no strided views; caches written before it existed have none)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_mean_t", None)
        return state

    def __call__(self, x: Tensor) -> Tensor:
        if self.gemv and x.dtype == torch.float32:
            return torch.mul(x, self._mean_of_squares(x).rsqrt_()).mul_(self.weight)
        if self.weight.dim() == 1:
            return F.rms_norm(x, self.shape, self.weight, self.eps)
        return F.rms_norm(x, self.shape, None, self.eps) * self.weight

    def _mean_of_squares(self, x: Tensor) -> Tensor:
        """``F.linear(x * x, mean_of, eps_bias)`` by the kernels it dispatches to (so the same
        bits), without its wrapper ops: 2-3 dimensions are one addmm over the rows (ATen's
        linear flattens a contiguous 3-d input), more are matmul's folded mm plus the bias."""
        mean_t = self._mean_t
        if mean_t is None:
            mean_t = self._mean_t = self.mean_of.t()
        sq = x * x
        if x.dim() == 2:
            return torch.addmm(self.eps_bias, sq, mean_t)
        rows = sq.view(-1, sq.shape[-1])
        if x.dim() == 3:
            out = torch.addmm(self.eps_bias, rows, mean_t)
        else:
            out = torch.mm(rows, mean_t).add_(self.eps_bias)
        return out.view(*x.shape[:-1], 1)


class LeanLayer:
    """One decoder layer. Also the codec's pre-transformer layers (``windowed``: their
    sliding window is the caller's mask and cache; no q/k norm; layer scales on both
    residual branches)."""

    def __init__(self, layer: Any, windowed: bool = False) -> None:
        a, mlp = layer.self_attn, layer.mlp
        if getattr(a, "sliding_window", None) and not windowed:
            raise NotImplementedError("sliding-window attention in the talker / code predictor")
        self.index = a.layer_idx
        self.head_dim = a.head_dim
        self.n_q = a.q_proj.weight.shape[0] // a.head_dim
        self.n_kv = a.k_proj.weight.shape[0] // a.head_dim
        self.scaling = a.scaling
        self.qkv = _fuse([a.q_proj, a.k_proj, a.v_proj])
        self.o_proj = a.o_proj
        self.gate_up = _fuse([mlp.gate_proj, mlp.up_proj])
        self.down = mlp.down_proj
        self.act = activation(mlp.act_fn)
        self.ln1, self.ln2 = Norm.of(layer.input_layernorm), Norm.of(layer.post_attention_layernorm)
        self.qk_norm = _qk_norm(a, self.n_q, self.n_kv)
        self.attn_scale = _scale(getattr(layer, "self_attn_layer_scale", None))
        self.mlp_scale = _scale(getattr(layer, "mlp_layer_scale", None))
        self._bind()

    small: list[Any] | None = None   # int4 copies of (qkv, o_proj, gate_up, down) (:mod:`.int4`)
    small_rows = 0                   # ... used for inputs (spans) of up to this many rows

    def _bind(self) -> None:
        """The projections' forwards, as :func:`dense` calls them; with int4 copies, those
        for inputs of up to :attr:`small_rows` rows."""
        linears = (self.qkv, self.o_proj, self.gate_up, self.down)
        small = self.small if self.small and self.small_rows else [None] * 4
        self._qkv, self._o, self._gate_up, self._down = map(self._forward, linears, small)

    def _forward(self, linear: torch.nn.Module, small: Any) -> Callable[[Tensor], Tensor]:
        return dense(linear) if small is None else functools.partial(_int8_or_int4, linear, small, self.small_rows)

    def __call__(self, x: Tensor, cos: Tensor, sin: Tensor, cache: Any, mask: Tensor | None) -> Tensor:
        """x (B, T, D); cos/sin from :func:`rope_tables`; ``cache.update(k, v, layer)``
        returns the keys/values to attend to; ``mask`` (B, 1, T, S) bool or None (causal)."""
        b, t, d = x.shape
        return self.rows(x.reshape(b * t, d), b, t, cos, sin, cache, mask).view(b, t, d)

    def rows(self, x: Tensor, b: int, t: int, cos: Tensor, sin: Tensor, cache: Any,
             mask: Tensor | None) -> Tensor:
        """:meth:`__call__` on x as (B*T, D) rows, returned as rows: a caller that runs many
        layers keeps its hidden state 2-d (no views between layers, each norm one addmm).
        :data:`INT8_ROWS`' spans count batch rows; here they cover each row's T tokens."""
        spans = INT8_ROWS.spans
        if spans is not None and t > 1:
            with int8_rows([slice(s.start * t, s.stop * t) for s in spans]):
                return self._rows(x, b, t, cos, sin, cache, mask)
        return self._rows(x, b, t, cos, sin, cache, mask)

    def _rows(self, x: Tensor, b: int, t: int, cos: Tensor, sin: Tensor, cache: Any,
              mask: Tensor | None) -> Tensor:
        hd, nq, nqk = self.head_dim, self.n_q, self.n_q + self.n_kv
        qkv = self._qkv(self.ln1(x)).view(b, t, nqk + self.n_kv, hd)
        qk = qkv[:, :, :nqk] if self.qk_norm is None else self.qk_norm(qkv[:, :, :nqk])
        qk = _rotate(qk.transpose(1, 2), cos, sin)
        k, v = cache.update(qk[:, nq:], qkv[:, :, nqk:].transpose(1, 2), self.index)
        out = F.scaled_dot_product_attention(qk[:, :nq], k, v, attn_mask=mask, scale=self.scaling,
                                             is_causal=mask is None and t > 1,
                                             enable_gqa=nq != self.n_kv)
        attended = self._o(out.transpose(1, 2).reshape(b * t, -1))
        x = attended.add_(x) if self.attn_scale is None else x + self.attn_scale * attended
        gate, up = self._gate_up(self.ln2(x)).chunk(2, dim=-1)  # one call: faster than two slices
        mlp = self._down(self.act(gate).mul_(up))
        return x.add_(mlp if self.mlp_scale is None else self.mlp_scale * mlp)

    def int8(self) -> "LeanLayer":
        """The same layer with int8 projection weights (a copy; this one is unchanged)."""
        q = copy.copy(self)
        linears = torch.nn.ModuleList([self.qkv, self.o_proj, self.gate_up, self.down])
        q.qkv, q.o_proj, q.gate_up, q.down = quantize_int8(linears)
        q._bind()
        return q

    def with_int4(self, source: "LeanLayer", rows: int) -> "LeanLayer":
        """This (int8) layer, also computing inputs of up to ``rows`` rows with int4 copies
        of ``source``'s (float) projections: :mod:`.int4`. Unchanged where one of them does
        not fit the int4 kernel."""
        from .int4 import Int4Linear, fits

        linears = (source.qkv, source.o_proj, source.gate_up, source.down)
        if rows < 1 or not all(fits(m.weight) for m in linears):
            return self
        self.small = [Int4Linear.quantize(m.weight, m.bias) for m in linears]
        self.small_rows = rows
        self._bind()
        return self


def lean_layers(layers: Any, windowed: bool = False) -> list[LeanLayer]:
    return [LeanLayer(layer, windowed) for layer in layers]


def _qk_norm(attn: Any, n_q: int, n_kv: int) -> Norm | None:
    """q_norm and k_norm as one Norm over all q and k heads, each head scaled by its own
    weight (None where the model has none: the codec's are Identity)."""
    qn, kn = attn.q_norm, attn.k_norm
    if not hasattr(qn, "weight"):
        return None
    if qn.variance_epsilon != kn.variance_epsilon:
        raise NotImplementedError("q_norm and k_norm with different epsilons")
    return Norm(torch.cat([qn.weight.data.expand(n_q, -1), kn.weight.data.expand(n_kv, -1)]),
                qn.variance_epsilon)


def _scale(layer_scale: Any) -> Tensor | None:
    """A residual branch's layer scale (``scale * x``), None where there is none."""
    return None if layer_scale is None else layer_scale.scale.detach()
