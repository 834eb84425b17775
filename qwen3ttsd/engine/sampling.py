"""HF ``generate``'s sampling for a batch of rows, each with its own settings and generator.

A seeded request must reproduce qwen-tts's own codes, so the warpers run in HF's order and
random numbers are drawn from each row's generator in the order qwen-tts consumes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

NEG_INF = float("-inf")


def row_generator(device, seed: int | None) -> torch.Generator:
    """A row's own generator on ``device``: seeded from the request, else at random."""
    gen = torch.Generator(device=device)
    if seed is not None:
        gen.manual_seed(int(seed))
    else:
        gen.seed()
    return gen


def exponential(q: Tensor, gen: torch.Generator) -> Tensor:
    """``q`` filled in place with Exp(1) draws from ``gen`` (one seam, so the fake-CUDA lane
    can check the generator's device: fake tensors take no generator)."""
    return q.exponential_(1, generator=gen)


@dataclass
class Sampling:
    """One head's sampling settings for one row (HF semantics: temperature 0 = greedy)."""

    do_sample: bool
    temperature: float
    top_k: int
    top_p: float

    @classmethod
    def of(cls, s: dict, prefix: str = "") -> "Sampling":
        """From qwen-tts's talker kwargs: ``prefix`` "" for the talker, "subtalker_" for the
        code predictor (whose sampling switch is ``subtalker_dosample``)."""
        temp = s.get(prefix + "temperature")
        temp = 1.0 if temp is None else float(temp)
        do_sample = bool(s.get(prefix + ("dosample" if prefix else "do_sample"), True)) and temp != 0.0
        top_p = s.get(prefix + "top_p")
        return cls(do_sample, temp or 1.0, int(s.get(prefix + "top_k") or 0),
                   1.0 if top_p is None else float(top_p))

    def warpers(self, vocab: int) -> tuple[float, int, float, bool]:
        """(temperature, top-k, top-p, samples) as the warpers apply them: a row that does
        not sample gets no-op values (1.0, 0, 1.0)."""
        if not self.do_sample:
            return 1.0, 0, 1.0, False
        return self.temperature, min(self.top_k, vocab), self.top_p, True


def top_p(logits: Tensor, p: Tensor) -> Tensor:
    """HF's top-p warper, per row (``p`` (B, 1); rows with p >= 1 are left as they are)."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= (1 - p)
    remove_sorted[..., -1:] = False
    remove_sorted &= p < 1.0
    return logits.masked_fill(remove_sorted.scatter(1, sorted_idx, remove_sorted), NEG_INF)


def static_sample(logits: Tensor, warp: Tensor, gens: list, topk: bool, topp: bool) -> Tensor:
    """:class:`Sampler`'s ids from tensors only, for a step a CUDA graph replays: every
    warper runs whatever the rows' settings (their no-op values leave a row's logits as
    they are, bitwise), and top-k's threshold comes from a full sort (no host ``k``).
    ``warp`` (B, 4): each row's :meth:`Sampling.warpers` (top-k as its 0-based index, and
    whether it samples); ``gens[i]``: row i's generator, None where it does not sample.
    ``topk``/``topp``: whether any row uses that warper (else it is skipped, as Sampler does)."""
    temps, k_index, p, sample_rows = warp[:, 0:1], warp[:, 1:2].long(), warp[:, 2:3], warp[:, 3:4] > 0
    scores = logits / temps
    if topk:
        thresh = torch.sort(scores, dim=-1, descending=True).values.gather(1, k_index.clamp(min=0))
        scores = scores.masked_fill((k_index >= 0) & (scores < thresh), NEG_INF)
    if topp:
        scores = top_p(scores, p)
    probs = scores.softmax(dim=-1)
    q = torch.empty_like(probs)
    for i, gen in enumerate(gens):
        if gen is None:
            q[i].fill_(1.0)
        else:
            exponential(q[i], gen)
    return torch.where(sample_rows, probs / q, logits).argmax(dim=-1)


class Sampler:
    """HF's sampling for B rows, each with its own settings and generator, prepared once
    per batch composition and applied to many logits (15 predictor steps share one).

    Warpers in HF's order: temperature, top-k, top-p (rows that do not sample skip them and
    take the argmax of the processed scores). ``torch.multinomial(p, 1)`` is
    ``argmax(p / q)`` with ``q ~ Exp(1)`` drawn from the generator (ATen's one-sample path):
    drawing that per row uses the same random numbers, and one argmax serves the batch.
    """

    def __init__(self, rules: list[Sampling], gens: list[torch.Generator], vocab: int, device) -> None:
        def col(values, dtype=None):
            return torch.tensor(values, device=device, dtype=dtype).unsqueeze(1)

        self.gens = gens
        temps, ks, ps, self.sampling = zip(*(r.warpers(vocab) for r in rules))
        self.any_sample = any(self.sampling)
        self.sample_rows = col(self.sampling)
        self.temps = col(temps, torch.float32) if any(t != 1.0 for t in temps) else None
        self.kmax = max(ks)
        self.k_index = col([max(k, 1) - 1 for k in ks])
        self.k_rows = None if all(ks) else col([k > 0 for k in ks])
        self.p = col(ps, torch.float32) if any(p < 1.0 for p in ps) else None

    def warp(self, logits: Tensor) -> Tensor:
        if self.temps is not None:
            logits = logits / self.temps
        if self.kmax:
            thresh = torch.topk(logits, self.kmax).values.gather(1, self.k_index)
            drop = logits < thresh
            logits = logits.masked_fill(drop if self.k_rows is None else self.k_rows & drop, NEG_INF)
        if self.p is not None:
            logits = top_p(logits, self.p)
        return logits

    def __call__(self, logits: Tensor) -> Tensor:
        """One token id per row (B,)."""
        if not self.any_sample:
            return logits.argmax(dim=-1)
        probs = self.warp(logits).softmax(dim=-1)
        q = torch.empty_like(probs)
        if len(self.gens) == 1:
            return (probs / exponential(q, self.gens[0])).argmax(dim=-1)
        for i, on in enumerate(self.sampling):
            if on:
                exponential(q[i], self.gens[i])
            else:
                q[i] = 1.0
        return torch.where(self.sample_rows, probs / q, logits).argmax(dim=-1)


__all__ = ["NEG_INF", "Sampler", "Sampling", "exponential", "row_generator", "static_sample", "top_p"]
