"""The whole decode step with static shapes per batch bucket (issue 24 item 3).

Why: a CUDA graph replays fixed kernels on fixed buffers, and a step is ~2,000 small
kernels (15 code predictor steps, the talker, the sampling) whose launches cost more than
their math at small batches. So :func:`decode_step` is one step for every row as a pure
function of static buffers of a bucket's size (1, 2, 4, ... 64 rows; rows past the batch
are padding): the predictor completes each row's frame (its preallocated cache,
:mod:`.predictor_loop`), the talker runs it at each row's position over the whole KV
capacity (a mask built from the position buffer: no ``max(lengths)`` span, no host value),
HF's logits rules and the sampling pick the next codebook 0 (:func:`.sampling.static_sample`:
every warper applied with per-row tensors). Its outputs (frames, ids, hidden states) stay
in the buffers; the host reads the ids once (:mod:`.host_sync`). It runs eagerly on CPU
(tested equal to the dynamic step's codes) and is what :mod:`.cuda_graphs` captures per
bucket on CUDA, each row still drawing from its own generator.

Padding rows sit at position 0 of their own (unused) KV slot: they write there and attend
to that one key only; a row joining that slot is prefilled over it. Steps where some rows
wait for text go the dynamic way (:meth:`StaticStep.takes` says no).
Default: on CUDA (graphs per ``cuda_graphs``, config.py); on CPU per ``CPU_STATIC``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .lean import rope_tables
from .sampling import NEG_INF, static_sample

BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# CPU runs the dynamic step by default: the static one attends over the whole KV capacity
# and measured ~10% slower per talker step on CPU (tiny model, B=1 0.63 vs 0.56 ms, B=8 0.98 vs 0.89 ms)
CPU_STATIC = False
# columns of StepBuffers.params, one row per batch row (floats: ids and positions < 2**24 are exact)
C0, POS, EARLY, PENALTY, SUB, TALK = 0, 1, 2, 3, 4, 8   # SUB/TALK: 4 warper columns each
PARAMS = 12
PAD = (0.0, 0.0, 0.0, 1.0, 1.0, -1.0, 1.0, 0.0, 1.0, -1.0, 1.0, 0.0)   # a padding row: greedy, no rules


def static_step(backend: Any, graphs: bool) -> "StaticStep | None":
    """The backend's static step, or None where it steps dynamically."""
    dev = backend.device
    if dev.type == "cuda" or (dev.type == "cpu" and CPU_STATIC):
        return StaticStep(backend, graphs and dev.type == "cuda")
    return None


def bucket_of(rows: int) -> int | None:
    """The smallest bucket holding ``rows`` rows (None past the largest: dynamic)."""
    return next((b for b in BUCKETS if b >= rows), None)


@dataclass
class StepBuffers:
    """One bucket's static inputs and outputs (written in place, never rebound)."""
    params: Tensor   # (N, PARAMS) float32: per row c0, position, rules, warpers (columns above)
    past: Tensor     # (N, 1, D) the talker's hidden state for each row's pending token
    text: Tensor     # (N, D) each row's text vector for its next talker input
    seen: Tensor     # (N, V) bool: codebook-0 ids each row generated (repetition penalty)
    suppress: Tensor  # (V,) bool: ids never sampled
    frames: Tensor   # out (N, groups) long: each row's completed frame
    ids: Tensor      # out (N,) long: each row's next codebook 0
    hidden: Tensor   # out (N, 1, D): the talker's hidden state for it

    @classmethod
    def of(cls, n: int, backend: Any, like: Tensor) -> "StepBuffers":
        dev, d, v = like.device, like.shape[-1], backend.vocab
        return cls(torch.tensor([PAD] * n, device=dev), like.new_zeros(n, 1, d), like.new_zeros(n, d),
                   torch.zeros(n, v, dtype=torch.bool, device=dev), torch.zeros(v, dtype=torch.bool, device=dev),
                   torch.zeros(n, backend.groups, dtype=torch.long, device=dev),
                   torch.zeros(n, dtype=torch.long, device=dev), like.new_zeros(n, 1, d))


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


@dataclass(frozen=True)
class Warpers:
    """Which warpers some row uses (a graph per combination: skipped ones cost nothing)."""
    sub_topk: bool
    sub_topp: bool
    talk_topk: bool
    talk_topp: bool


def decode_step(backend: Any, buf: StepBuffers, gens: tuple[list, list], warpers: Warpers) -> None:
    """One step of every row of ``buf``: frames, next codebook-0 ids and hidden states into
    ``buf``'s outputs. ``gens``: the rows' generators for the predictor's and the talker's
    sampling (None: a row that does not sample). Only device ops on static tensors: capturable."""
    p = buf.params
    c0 = p[:, C0].long()
    sub_warp, talk_warp = p[:, SUB:SUB + 4], p[:, TALK:TALK + 4]
    codes = backend.predict(buf.past, c0, lambda j, logits: static_sample(
        logits, sub_warp, gens[0], warpers.sub_topk, warpers.sub_topp))
    frames = torch.cat([c0.unsqueeze(1), codes], dim=1)
    logits, hidden = talker_logits(backend, frames, buf.text, StaticKV(backend.kv, p[:, POS].long()))
    logits = talker_rules(logits, buf, backend.eos)
    buf.ids.copy_(static_sample(logits, talk_warp, gens[1], warpers.talk_topk, warpers.talk_topp))
    buf.frames.copy_(frames)
    buf.hidden.copy_(hidden)


def talker_logits(backend: Any, frames: Tensor, text: Tensor, kv: StaticKV) -> tuple[Tensor, Tensor]:
    """The talker decode of ``frames`` (N, groups) + ``text`` (N, D) at ``kv.pos`` over the
    full KV capacity: logits (N, V) float32, hidden (N, 1, D)."""
    parts = [F.embedding(frames[:, i:i + 1], table) for i, table in enumerate(backend.code_tables)]
    x = torch.cat(parts, dim=1).sum(1, keepdim=True) + text.unsqueeze(1)
    cap = kv.kv.cap
    mask = (torch.arange(cap, device=x.device).unsqueeze(0) <= kv.pos.unsqueeze(1))[:, None, None, :]
    position_ids = kv.pos.view(1, -1, 1).expand(3, -1, 1)
    cos, sin = backend.talker.model.rotary_emb(x, position_ids)
    cos, sin = rope_tables(cos[0], sin[0])
    for layer in backend.talker_layers:
        x = layer(x, cos, sin, kv, mask)
    hidden = backend.talker_norm(x)
    return backend.codec_head(hidden)[:, -1].float(), hidden


def talker_rules(logits: Tensor, buf: StepBuffers, eos: int) -> Tensor:
    """``BatchedBackend.talker_rules`` with every rule applied (a penalty of 1 and rows past
    ``min_new_tokens`` leave the logits as they are, bitwise)."""
    pen = buf.params[:, PENALTY:PENALTY + 1]
    logits = torch.where(buf.seen, torch.where(logits < 0, logits * pen, logits / pen), logits)
    logits[:, eos] = torch.where(buf.params[:, EARLY] > 0, NEG_INF, logits[:, eos])
    return logits.masked_fill(buf.suppress, NEG_INF)


def row_params(r: Any, vocab: int, sub_vocab: int) -> list[float]:
    """A row's line of :attr:`StepBuffers.params` (see the columns above)."""
    out = [float(r.c0), float(r.length), float(r.sampled < r.min_new), r.penalty]
    for rule, v in ((r.sub, sub_vocab), (r.talk, vocab)):
        temp, k, p, on = rule.warpers(v)
        out += [temp, float(k - 1), p, float(on)]
    return out


class StaticStep:
    """Static buffers per bucket over the backend's ``RowKV``; on CUDA each bucket's step
    is replayed from a graph (:mod:`.cuda_graphs`), elsewhere run eagerly."""

    def __init__(self, backend: Any, graphs: bool) -> None:
        self.backend = backend
        self.buffers: dict[int, StepBuffers] = {}
        self.graphs: Any = None
        if graphs:
            from .cuda_graphs import BucketGraphs
            self.graphs = BucketGraphs()
            # one KV slot per row the backend may hold, from the first reservation on, kept
            # while idle: joins and quiet spells never reallocate the KV (which would drop
            # every captured graph); only a row longer than its capacity grows it (doubling)
            backend.kv.min_slots = bucket_of(backend.capacity) or backend.capacity
            backend.kv.pinned = True
        self.generation = -1   # the RowKV generation the graphs were captured on
        self.steps = 0   # static steps taken (tests)
        self._pinned: dict[int, Tensor] = {}   # per bucket: the params' host side (_upload)

    @staticmethod
    def takes(rows: list) -> bool:
        """Static when a bucket holds the batch and every row completes a frame and steps
        the talker (no row waits for text: its text has ended or never streamed)."""
        return bucket_of(len(rows)) is not None and all(
            r.pending and (r.stream.text is None or r.stream.text.eos_sent) for r in rows)

    def step(self, rows: list) -> tuple[Tensor, Tensor, Tensor]:
        """Every row's step: (frames (B, groups), next codebook-0 ids (B,), hidden (B, 1, D)),
        the ids a view of the buffer (read them before the next step)."""
        be, b = self.backend, len(rows)
        n = bucket_of(b)
        assert n is not None
        kv = be.kv
        kv.reserve(n, max(r.length for r in rows) + 1)
        if self.graphs is not None and kv.generation != self.generation:
            self.graphs.clear()   # the KV tensors moved: graphs captured on them are stale
            self.generation = kv.generation
        past = torch.cat([r.hidden for r in rows])
        buf = self.buffers.get(n)
        if buf is None:
            buf = self.buffers[n] = StepBuffers.of(n, be, past)
        params = [row_params(r, be.vocab, be.predictor.vocab_size) for r in rows] + [list(PAD)] * (n - b)
        self._upload(buf.params, torch.tensor(params, dtype=torch.float32))
        buf.past[:b].copy_(past)
        buf.text[:b].copy_(torch.stack([r.text() for r in rows]))
        buf.seen[:b].copy_(torch.stack([r.seen for r in rows]))
        suppress = be._suppress_mask(tuple(rows[0].prompt.settings.get("suppress_tokens") or ()))
        if suppress is None:
            buf.suppress.zero_()
        else:
            buf.suppress.copy_(suppress)
        warpers = Warpers(*(any(w) for w in zip(*(_uses(r, be) for r in rows))))
        eager = ([r.gen if r.sub.do_sample else None for r in rows] + [None] * (n - b),
                 [r.gen if r.talk.do_sample else None for r in rows] + [None] * (n - b))
        if self.graphs is not None:
            self.graphs.run((n, warpers), lambda gens: decode_step(be, buf, gens, warpers), eager,
                            [(r.gen, r.sub.do_sample, r.talk.do_sample) for r in rows])
        else:
            decode_step(be, buf, eager, warpers)
        self.steps += 1
        # clones: the frames wait in the rows' audio chunkers, the hidden rows for the next step
        return buf.frames[:b].clone(), buf.ids[:b], buf.hidden[:b].clone()

    def _upload(self, dst: Tensor, src: Tensor) -> None:
        """``dst.copy_(src)`` from the host without a stream sync: a plain host -> device
        copy waits for the GPU to drain; from pinned memory it is queued. The pinned buffer
        is reused next step, after the step's one read of the ids has waited for the GPU."""
        if dst.device.type == "cpu":
            dst.copy_(src)
            return
        pinned = self._pinned.get(dst.shape[0])
        if pinned is None:
            pinned = self._pinned[dst.shape[0]] = torch.empty(dst.shape, dtype=dst.dtype, pin_memory=True)
        pinned.copy_(src)
        dst.copy_(pinned, non_blocking=True)


def _uses(r: Any, backend: Any) -> tuple[bool, bool, bool, bool]:
    """(top-k, top-p) of the row's predictor and talker sampling: whether each is on."""
    out: list[bool] = []
    for rule, v in ((r.sub, backend.predictor.vocab_size), (r.talk, backend.vocab)):
        _, k, p, _ = rule.warpers(v)
        out += [k > 0, p < 1.0]
    return out[0], out[1], out[2], out[3]


__all__ = ["BUCKETS", "StaticKV", "StaticStep", "StepBuffers", "bucket_of", "decode_step", "static_step"]
