"""The code predictor's key/value cache, preallocated and written in place.

Why: the predictor runs 15 steps a frame over every layer; growing its cache with
``torch.cat`` (:class:`.kv_cache.StepKV`) allocates and copies a new key and value tensor
per layer per step (141 concatenations a frame on the 0.6B model). Here each layer owns one
(B, heads, capacity, head_dim) key and value buffer per batch size, allocated on first use
and reused every frame: a step copies its new keys/values into the next slots and attends
to a view of the filled prefix. The math is the same (the views hold the same values the
concatenation would), so the codes are identical; the shapes are static per batch size and
positions are host integers (no device reads), as a later CUDA-graph capture needs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class StaticStepKV:
    """A drop-in for :class:`.kv_cache.StepKV` (``update(k, v, layer)`` -> keys, values to
    attend to) over preallocated buffers. Call :meth:`start` before each frame's 15 steps."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._buffers: dict[tuple[int, torch.dtype, torch.device], dict[int, _Views]] = {}
        self._layers: dict[int, _Views] = {}
        self._filled: dict[int, int] = {}

    def start(self, batch: int, like: Tensor) -> "StaticStepKV":
        """Empty the cache for a frame of ``batch`` rows (buffers of ``like``'s dtype/device)."""
        self._layers = self._buffers.setdefault((batch, like.dtype, like.device), {})
        self._filled = {}
        return self

    def update(self, k: Tensor, v: Tensor, layer: int, cache_kwargs: Any = None) -> tuple[Tensor, Tensor]:
        views = self._layers.get(layer)
        if views is None:
            views = self._layers[layer] = _Views(k, v, self.capacity)
        start = self._filled.get(layer, 0)
        end = start + k.shape[2]
        (k_slot, v_slot), filled = views.at(start, end)
        k_slot.copy_(k)
        v_slot.copy_(v)
        self._filled[layer] = end
        return filled


class _Views:
    """One layer's key and value buffers (B, heads, capacity, head_dim), and their views
    (the slots a step writes, the prefix it attends to), made once: a step then dispatches
    only its two copies."""

    def __init__(self, k: Tensor, v: Tensor, capacity: int) -> None:
        b, h, _, d = k.shape
        self.k, self.v = k.new_empty((b, h, capacity, d)), v.new_empty((b, h, capacity, v.shape[3]))
        self.capacity = capacity
        self._spans: dict[tuple[int, int], tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]] = {}

    def at(self, start: int, end: int) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """(the slots start..end, the prefix 0..end) of the keys and the values."""
        span = self._spans.get((start, end))
        if span is None:
            if end > self.capacity:
                raise RuntimeError(f"predictor cache overflow: {end} > {self.capacity}")
            span = self._spans[(start, end)] = ((self.k[:, :, start:end], self.v[:, :, start:end]),
                                                (self.k[:, :, :end], self.v[:, :, :end]))
        return span

__all__ = ["StaticStepKV"]
