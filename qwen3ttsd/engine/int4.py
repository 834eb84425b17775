"""4-bit weight-only linears for the code predictor's small batches on the CPU (issue 25).

Why: at one to four rows the predictor's matrix-vector products are memory-bound - a 0.6B
frame reads its 78 MB of int8 weights 15 times - and torch's CPU int4 kernel
(``_weight_int4pack_mm_for_cpu``: 4-bit weights in groups of 64 input columns, each group
with a bf16 scale and zero; bf16 activations) reads half the bytes. Measured on the 2-core
AMX Xeon, one predictor layer's four linears: 0.73x fbgemm int8's time at one row, 0.76-0.81x
at two to four, but 1.3-1.5x at eight rows (the kernel dequantizes per block of rows), and on
an AVX-512 Zen 4 without AMX (session 7) 1.7x at one row. So int4 is an addition, not a
replacement: the predictor keeps its int8 weights for larger batches, and whether int4 pays
on this CPU, and up to how many rows, is measured when the weights are built
(:func:`rows_where_faster`) and kept with them in the weight cache. The talker is left int8:
read once a frame, int4 would save ~6 ms of a 0.6B frame for 250 MB more memory.

Opt-in (``QWEN3TTSD_QUANT=int4``), not part of ``auto``: a linear's output error is ~4x
int8's (group-64 4-bit weights: 9 % of the output's norm against 2 %, random 0.6B-shaped
weights), which on the random-weight 0.6B predictor moves its teacher-forced greedy picks
from 82 % agreement with fp32 (int8) to 57 % - not the equal quality the CPU default keeps.

Stored form (:class:`Int4Linear`): the 4-bit codes two to a byte in plain row order, packed
into the kernel's CPU-specific blocked layout when loaded (~45 ms for the 0.6B predictor), so
a cache file does not depend on the CPU that wrote it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

GROUP_SIZES = (64, 32)   # input columns per scale/zero, largest first (the kernel takes 32-256)
MAX_ROWS = 4             # beyond this int4 was slower on every CPU measured (see the docstring)
MIN_GAIN = 0.9           # int4 serves a row count where it takes at most this share of int8's time
_N_MULTIPLE = 16         # the kernel's packing needs output rows in multiples of 16

log = logging.getLogger("qwen3ttsd.engine")


class Int4Linear:
    """``x @ W.T + b`` with ``W`` (out, in) as 4-bit codes ``q`` per group of input columns:
    ``W ~ (q - 8) * scale + zero`` (asymmetric: each group's min and max are exact to
    within a step). Called with float32 rows, returns float32; computes in bf16."""

    def __init__(self, codes: Tensor, scales_zeros: Tensor, group: int, bias: Tensor | None) -> None:
        self.codes = codes                   # (out, in // 2) uint8: column 2j low nibble, 2j+1 high
        self.scales_zeros = scales_zeros     # (in // group, out, 2) bfloat16, as the kernel takes it
        self.group = group
        self.bias = bias
        self._pack()

    @classmethod
    def quantize(cls, weight: Tensor, bias: Tensor | None = None) -> "Int4Linear":
        """From a float (out, in) weight; see :func:`fits` for the shapes the kernel takes."""
        out, cols = weight.shape
        group = group_size(cols)
        w = weight.detach().float().reshape(out, cols // group, group)
        lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        scale = ((hi - lo) / 15).clamp_min_(1e-12)
        q = torch.round((w - lo) / scale).clamp_(0, 15).to(torch.uint8).reshape(out, cols)
        zero = lo + 8 * scale                # the kernel's form: (q - 8) * scale + zero
        scales_zeros = torch.stack([scale.reshape(out, -1).t(), zero.reshape(out, -1).t()], -1)
        return cls(q[:, 0::2] | (q[:, 1::2] << 4), scales_zeros.to(torch.bfloat16).contiguous(), group,
                   None if bias is None else bias.detach().float().clone())

    def _pack(self) -> None:
        q = torch.stack([self.codes & 15, self.codes >> 4], -1).reshape(self.codes.shape[0], -1)
        self._packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)

    def __getstate__(self) -> dict[str, Any]:   # the weight cache keeps the plain codes
        state = dict(self.__dict__)
        state.pop("_packed")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pack()

    def __call__(self, x: Tensor) -> Tensor:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), self._packed, self.group,
                                                       self.scales_zeros).float()
        return y if self.bias is None else y.add_(self.bias)

    @property
    def in_features(self) -> int:
        return self.codes.shape[1] * 2

    def dequantized(self) -> Tensor:
        """The float32 (out, in) weight it computes with (tests, quality figures)."""
        q = torch.stack([self.codes & 15, self.codes >> 4], -1).reshape(self.codes.shape[0], -1).float()
        scale, zero = self.scales_zeros.float().unbind(-1)              # (groups, out) each
        groups = q.reshape(q.shape[0], -1, self.group)
        return ((groups - 8) * scale.t().unsqueeze(-1) + zero.t().unsqueeze(-1)).reshape(q.shape)


def group_size(cols: int) -> int:
    """The largest of :data:`GROUP_SIZES` dividing ``cols``; 0 where none does."""
    return next((g for g in GROUP_SIZES if cols % g == 0), 0)


def fits(weight: Tensor) -> bool:
    """Whether the kernel takes this (out, in) weight: out a multiple of 16, in of a group."""
    out, cols = weight.shape
    return weight.device.type == "cpu" and out % _N_MULTIPLE == 0 and group_size(cols) > 0


@functools.cache
def int4_unavailable() -> str | None:
    """None where torch's CPU int4 kernel runs here and computes what :class:`Int4Linear`
    says it does; else why not."""
    try:
        g = torch.Generator().manual_seed(0)
        weight, x = torch.randn(32, 64, generator=g), torch.randn(2, 64, generator=g)
        lin = Int4Linear.quantize(weight)
        want = x.to(torch.bfloat16).float() @ lin.dequantized().t()
        if not torch.allclose(lin(x), want, rtol=2e-2, atol=2e-2 * float(want.abs().max())):
            return "its results differ from the dequantized weights'"
    except Exception as e:  # noqa: BLE001 - whatever it is, int4 is not served
        return f"{type(e).__name__}: {e}"
    return None


def rows_where_faster(int8_linears: Sequence[Callable[[Tensor], Tensor]], int4_linears: Sequence[Int4Linear],
                      widths: Sequence[int], reps: int = 5) -> int:
    """The largest row count up to :data:`MAX_ROWS` (1, 2, 4) at which ``int4_linears`` run
    in at most :data:`MIN_GAIN` of ``int8_linears``' time (the same projections, inputs of
    ``widths`` columns; all of a model's predictor layers, so that the weights come from
    memory as in a frame, not from cache), timed alternately, best of ``reps``; 0 where int4
    never pays. Each count must pay on its own: 4 is not taken where 2 did not."""
    best, rows = 0, 1
    with torch.inference_mode():
        while rows <= MAX_ROWS:
            xs = [torch.randn(rows, w) for w in widths]
            t8 = t4 = float("inf")
            for _ in range(reps):
                t8, t4 = min(t8, _time(int8_linears, xs)), min(t4, _time(int4_linears, xs))
            if t4 > MIN_GAIN * t8:
                break
            best, rows = rows, rows * 2
    return best


def attach_int4(layers: Sequence[Any], sources: Sequence[Any], rows: int | None) -> int:
    """Give int8 :class:`.lean.LeanLayer` s int4 copies of their float ``sources``' projections
    for inputs of up to ``rows`` rows (None: :func:`rows_where_faster` on these layers); the
    row count they serve, 0 where none (the kernel does not run here or takes not these
    shapes, or int4 does not pay)."""
    if rows == 0:
        return 0
    why = int4_unavailable()
    if why is not None:
        log.info("no int4 copies: torch's int4 kernel does not run on this CPU (%s)", why)
        return 0
    int8_calls = [call for layer in layers for call in (layer._qkv, layer._o, layer._gate_up, layer._down)]
    for layer, source in zip(layers, sources):
        layer.with_int4(source, MAX_ROWS)
    if any(layer.small is None for layer in layers):
        rows = 0   # a shape the kernel does not take
    elif rows is None:
        small = [linear for layer in layers for linear in layer.small]
        rows = rows_where_faster(int8_calls, small, [linear.in_features for linear in small])
    for layer in layers:
        layer.small, layer.small_rows = (layer.small, rows) if rows else (None, 0)
        layer._bind()
    return rows


def _time(linears: Sequence[Callable[[Tensor], Tensor]], xs: Sequence[Tensor]) -> float:
    start = time.perf_counter()
    for lin, x in zip(linears, xs):
        lin(x)
    return time.perf_counter() - start


__all__ = ["Int4Linear", "MAX_ROWS", "attach_int4", "fits", "group_size", "int4_unavailable", "rows_where_faster"]
