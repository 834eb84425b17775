"""The talker decode step with static shapes per batch bucket (issue 24 item 3).

Why: a CUDA graph replays fixed kernels on fixed buffers. So the step reads its inputs
from static buffers of a bucket's size (1, 2, 4, ... 64 rows; rows past the batch are
padding), attends over the whole KV capacity with a mask built from the position buffer
(no ``max(lengths)`` span, no host value in the step), and writes its logits and hidden
state into static outputs. :func:`static_talker_step` is that pure step: it runs eagerly
on CPU (tested equal to the dynamic step's codes) and is what :mod:`.cuda_graphs` captures
per bucket on CUDA. Sampling (per-row ``torch.Generator``) stays outside, on the outputs.

Padding rows sit at position 0 of their own (unused) KV slot: they write there and attend
to that one key only; a row joining that slot is prefilled over it. Steps where some rows
wait for text (a ``rows`` gather) go the dynamic way (``StaticTalker.fits`` says no).
Default: on CUDA (graphs unless ``QWEN3TTSD_CUDA_GRAPHS=0``); on CPU per ``CPU_STATIC``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .lean import rope_tables

BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# CPU runs the dynamic step by default: the static one attends over the whole KV capacity
# and measured ~10% slower per talker step on CPU (tiny model, B=1 0.63 vs 0.56 ms, B=8 0.98 vs 0.89 ms)
CPU_STATIC = False


def static_talker(backend: Any) -> "StaticTalker | None":
    """The backend's static step, or None where it steps dynamically."""
    from .cuda_graphs import graphs_wanted
    dev = backend.device
    if dev.type == "cuda" or (dev.type == "cpu" and CPU_STATIC):
        return StaticTalker(backend, graphs_wanted(dev))
    return None


def bucket_of(rows: int) -> int | None:
    """The smallest bucket holding ``rows`` rows (None past the largest: dynamic)."""
    return next((b for b in BUCKETS if b >= rows), None)


@dataclass
class StepBuffers:
    """One bucket's static inputs and outputs (written in place, never rebound)."""
    frames: Tensor   # (N, groups) long
    text: Tensor     # (N, D)
    pos: Tensor      # (N,) long: each row's write position; padding rows 0
    logits: Tensor | None = None   # (N, V) float32, after a step
    hidden: Tensor | None = None   # (N, 1, D)


class StaticKV:
    """``RowKV``'s tensors seen by a static step: rows 0..N-1 write at ``pos`` and read the
    whole capacity (the mask hides what is past each row's position)."""

    def __init__(self, kv: Any, pos: Tensor) -> None:
        self.kv, self.pos = kv, pos
        self.rows = torch.arange(pos.shape[0], device=pos.device)

    def update(self, k: Tensor, v: Tensor, layer: int, cache_kwargs: Any = None) -> tuple[Tensor, Tensor]:
        n = k.shape[0]
        kt, vt = self.kv.k[layer], self.kv.v[layer]
        kt[self.rows, :, self.pos] = k[:, :, 0]
        vt[self.rows, :, self.pos] = v[:, :, 0]
        return kt[:n], vt[:n]


def static_talker_step(backend: Any, buf: StepBuffers, kv: StaticKV) -> None:
    """The talker decode on ``buf``'s rows over the full KV capacity; fills ``buf.logits``
    and ``buf.hidden``. Only device ops on static tensors: capturable."""
    parts = [F.embedding(buf.frames[:, i:i + 1], table) for i, table in enumerate(backend.code_tables)]
    x = torch.cat(parts, dim=1).sum(1, keepdim=True) + buf.text.unsqueeze(1)
    cap = kv.kv.cap
    mask = (torch.arange(cap, device=x.device).unsqueeze(0) <= buf.pos.unsqueeze(1))[:, None, None, :]
    position_ids = buf.pos.view(1, -1, 1).expand(3, -1, 1)
    tm = backend.talker.model
    cos, sin = tm.rotary_emb(x, position_ids)
    cos, sin = rope_tables(cos[0], sin[0])
    for layer in backend.talker_layers:
        x = layer(x, cos, sin, kv, mask)
    hidden = backend.talker_norm(x)
    logits = backend.codec_head(hidden)[:, -1].float()
    if buf.logits is None or buf.hidden is None:
        buf.logits, buf.hidden = logits, hidden   # the first (eager) run allocates the outputs
    else:
        buf.logits.copy_(logits)
        buf.hidden.copy_(hidden)


class StaticTalker:
    """Static buffers per bucket over the backend's ``RowKV``; on CUDA each bucket's step
    is replayed from a graph (:mod:`.cuda_graphs`), elsewhere run eagerly."""

    def __init__(self, backend: Any, graphs: bool) -> None:
        self.backend = backend
        self.buffers: dict[int, StepBuffers] = {}
        self.graphs: Any = None
        if graphs:
            from .cuda_graphs import BucketGraphs
            self.graphs = BucketGraphs()
        self.generation = -1   # the RowKV generation the graphs were captured on
        self.steps = 0   # static steps taken (tests)

    def fits(self, rows: int, slots: list[int] | None) -> bool:
        """Static when every row steps (no text wait gather) and a bucket holds the batch."""
        return slots is None and bucket_of(rows) is not None

    def _buffers(self, n: int, d: int, like: Tensor) -> StepBuffers:
        buf = self.buffers.get(n)
        if buf is None:
            dev = like.device
            buf = StepBuffers(torch.zeros(n, self.backend.groups, dtype=torch.long, device=dev),
                              torch.zeros(n, d, dtype=like.dtype, device=dev),
                              torch.zeros(n, dtype=torch.long, device=dev))
            self.buffers[n] = buf
        return buf

    def step(self, frames: Tensor, text: Tensor, lengths: list[int]) -> tuple[Tensor, Tensor]:
        """Same contract as ``BatchedBackend.talker_step`` for rows in slots 0..B-1."""
        b = len(lengths)
        n = bucket_of(b)
        assert n is not None
        kv = self.backend.kv
        kv.reserve(n, max(lengths) + 1)
        if self.graphs is not None and kv.generation != self.generation:
            self.graphs.clear()   # the KV tensors moved: graphs captured on them are stale
            self.generation = kv.generation
        buf = self._buffers(n, text.shape[-1], text)
        buf.frames[:b].copy_(frames)
        buf.text[:b].copy_(text)
        buf.pos[:b].copy_(torch.tensor(lengths, device=buf.pos.device))
        if b < n:
            buf.frames[b:].zero_()
            buf.text[b:].zero_()
            buf.pos[b:].zero_()
        skv = StaticKV(kv, buf.pos)
        if self.graphs is not None:
            self.graphs.run(n, lambda: static_talker_step(self.backend, buf, skv))
        else:
            static_talker_step(self.backend, buf, skv)
        self.steps += 1
        assert buf.logits is not None and buf.hidden is not None
        # clones: the caller keeps hidden rows across steps while the buffers are reused
        return buf.logits[:b].clone(), buf.hidden[:b].clone()



__all__ = ["BUCKETS", "StaticKV", "StaticTalker", "StepBuffers", "bucket_of", "static_talker", "static_talker_step"]
