"""KV caches of the batched engine: the talker's per-row cache and the code predictor's.

Both are handed to the lean decoder layers as their ``cache`` (an ``update(k, v, layer)``
that returns the keys and values to attend over).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class RowKV:
    """Per-row KV caches of the talker in one tensor per layer: rows occupy slots 0..B-1
    (a leaving row's slot is filled by the last row), each with its own length. Grows
    (doubling) as rows get longer. Passed to HF's decoder layers as their cache."""

    def __init__(self, n_layers: int, heads: int, head_dim: int, dtype, device) -> None:
        self.n_layers, self.heads, self.head_dim = n_layers, heads, head_dim
        self.dtype, self.device = dtype, device
        self.k: list[Any] = [None] * n_layers  # (slots, heads, cap, head_dim) per layer once sized
        self.v: list[Any] = [None] * n_layers
        self.slots = 0
        self.cap = 0
        self._prefill_slot: int | None = None
        self._pos: Tensor | None = None
        self._rows: Tensor | None = None
        self._span = 0
        self.generation = 0   # bumped whenever the tensors are reallocated or dropped (CUDA graphs hold them)
        self.min_slots = 0    # slots the first reservation makes at least (static_step.py, with CUDA graphs)
        self.pinned = False   # kept when idle (clear): CUDA graphs were captured on these tensors

    def reserve(self, slots: int, length: int) -> None:
        if slots <= self.slots and length <= self.cap:
            return
        new_slots = max(slots, self.slots, self.min_slots)
        new_cap = max(self.cap, 64)
        while new_cap < length:
            new_cap *= 2
        for i in range(self.n_layers):
            for store in (self.k, self.v):
                t = torch.zeros(new_slots, self.heads, new_cap, self.head_dim, dtype=self.dtype, device=self.device)
                if store[i] is not None:
                    t[: self.slots, :, : self.cap] = store[i]
                store[i] = t
        self.slots, self.cap = new_slots, new_cap
        self.generation += 1

    def clear(self) -> None:
        """Drop the tensors (no rows left: a busy spell sized them), unless pinned."""
        if self.pinned:
            return
        self.k = [None] * self.n_layers
        self.v = [None] * self.n_layers
        self.slots = self.cap = 0
        self.generation += 1

    def move(self, src: int, dst: int) -> None:
        for store in (self.k, self.v):
            for t in store:
                t[dst] = t[src]

    def for_prefill(self, slot: int) -> None:
        """Prompts go to slots ``slot``, ``slot + 1``, ... (one per batch row)."""
        self._prefill_slot, self._pos = slot, None

    def for_decode(self, pos: Tensor, span: int, rows: Tensor | None = None) -> None:
        """Rows 0..B-1 (or the slots ``rows``: some rows wait for text) write their new
        token at ``pos[b]``; attention reads ``span`` keys."""
        self._prefill_slot, self._pos, self._span, self._rows = None, pos, span, rows

    def update(self, k: Tensor, v: Tensor, layer: int, cache_kwargs: Any = None) -> tuple[Tensor, Tensor]:
        if self._prefill_slot is not None:
            s, p, n = self._prefill_slot, k.shape[0], k.shape[2]
            self.k[layer][s:s + p, :, :n] = k
            self.v[layer][s:s + p, :, :n] = v
            return k, v
        b = k.shape[0]
        rows = torch.arange(b, device=k.device) if self._rows is None else self._rows
        self.k[layer][rows, :, self._pos] = k[:, :, 0]
        self.v[layer][rows, :, self._pos] = v[:, :, 0]
        if self._rows is not None:  # a gather: only while rows wait for text
            return self.k[layer][rows, :, : self._span], self.v[layer][rows, :, : self._span]
        return self.k[layer][:b, :, : self._span], self.v[layer][:b, :, : self._span]


class StepKV:
    """The code predictor's cache: every row has the same length (17 at most)."""

    def __init__(self) -> None:
        self.k: dict[int, Tensor] = {}
        self.v: dict[int, Tensor] = {}

    @classmethod
    def start(cls, batch: int, like: Tensor) -> "StepKV":
        """A fresh cache per frame: the growing (concatenating) stand-in for
        :class:`.predictor_loop.StaticStepKV`, whose ``start`` this mirrors."""
        return cls()

    def update(self, k: Tensor, v: Tensor, layer: int, cache_kwargs: Any = None) -> tuple[Tensor, Tensor]:
        if layer in self.k:
            k = torch.cat([self.k[layer], k], dim=2)
            v = torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v


__all__ = ["RowKV", "StepKV"]
