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
        self._buffers: dict[tuple[int, torch.dtype, torch.device], dict[int, tuple[Tensor, Tensor]]] = {}
        self._layers: dict[int, tuple[Tensor, Tensor]] = {}
        self._filled: dict[int, int] = {}

    def start(self, batch: int, like: Tensor) -> "StaticStepKV":
        """Empty the cache for a frame of ``batch`` rows (buffers of ``like``'s dtype/device)."""
        self._layers = self._buffers.setdefault((batch, like.dtype, like.device), {})
        self._filled = {}
        return self

    def update(self, k: Tensor, v: Tensor, layer: int, cache_kwargs: Any = None) -> tuple[Tensor, Tensor]:
        bufs = self._layers.get(layer)
        if bufs is None:
            b, h, _, d = k.shape
            shape = (b, h, self.capacity, d)
            bufs = self._layers[layer] = (k.new_empty(shape), v.new_empty(shape))
        start = self._filled.get(layer, 0)
        end = start + k.shape[2]
        if end > self.capacity:
            raise RuntimeError(f"predictor cache overflow: {end} > {self.capacity}")
        kb, vb = bufs
        kb[:, :, start:end].copy_(k)
        vb[:, :, start:end].copy_(v)
        self._filled[layer] = end
        return kb[:, :, :end], vb[:, :, :end]


__all__ = ["StaticStepKV"]
