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
        self.sampling = [r.do_sample for r in rules]
        self.any_sample = any(self.sampling)
        self.sample_rows = col(self.sampling)
        temps = [r.temperature if r.do_sample else 1.0 for r in rules]
        self.temps = col(temps, torch.float32) if any(t != 1.0 for t in temps) else None
        ks = [min(r.top_k, vocab) if r.do_sample else 0 for r in rules]
        self.kmax = max(ks)
        self.k_index = col([max(k, 1) - 1 for k in ks])
        self.k_rows = None if all(ks) else col([k > 0 for k in ks])
        ps = [r.top_p if r.do_sample else 1.0 for r in rules]
        self.p = col(ps, torch.float32) if any(p < 1.0 for p in ps) else None

    def warp(self, logits: Tensor) -> Tensor:
        if self.temps is not None:
            logits = logits / self.temps
        if self.kmax:
            thresh = torch.topk(logits, self.kmax).values.gather(1, self.k_index)
            drop = logits < thresh
            logits = logits.masked_fill(drop if self.k_rows is None else self.k_rows & drop, NEG_INF)
        if self.p is not None:
            sorted_logits, sorted_idx = torch.sort(logits, descending=False)
            cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            remove_sorted = cum <= (1 - self.p)
            remove_sorted[..., -1:] = False
            remove_sorted &= self.p < 1.0
            logits = logits.masked_fill(remove_sorted.scatter(1, sorted_idx, remove_sorted), NEG_INF)
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


__all__ = ["NEG_INF", "Sampler", "Sampling", "exponential", "row_generator"]
