"""The code predictor's preallocated cache (:mod:`qwen3ttsd.engine.predictor_loop`):
the same codes as the growing ``torch.cat`` cache (greedy and seeded, B=1 and B=8), and no
cache allocations or concatenations once a batch size has run once."""

from __future__ import annotations

import pytest
import torch

from qwen3ttsd.engine.backend import BackendOptions
from qwen3ttsd.engine.batched import BatchedBackend
from qwen3ttsd.engine.kv_cache import StepKV
from qwen3ttsd.testing.op_count import OpCounter


def _inputs(b: BatchedBackend, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, 1, b.code_tables[0].shape[1], generator=g)
    c0 = torch.randint(0, b.code_tables[1].shape[0], (batch,), generator=g)
    return hidden, c0


def _codes(b: BatchedBackend, hidden, c0, seeded: bool):
    g = torch.Generator().manual_seed(7)

    def pick(j, logits):
        if not seeded:
            return logits.argmax(-1)
        return torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(1)

    return b.predict(hidden, c0, pick)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("seeded", [False, True])
def test_static_cache_gives_the_growing_caches_codes(custom_engine, batch, seeded):
    b = BatchedBackend(custom_engine, BackendOptions(max_batch=16, batch_decode=False))
    static = b.step_kv
    for frame in range(3):   # reused buffers across frames
        hidden, c0 = _inputs(b, batch, frame)
        b.step_kv = static
        got = _codes(b, hidden, c0, seeded)
        b.step_kv = StepKV
        want = _codes(b, hidden, c0, seeded)
        assert torch.equal(got, want)


def test_static_cache_allocates_nothing_after_warmup(custom_engine):
    b = BatchedBackend(custom_engine, BackendOptions(max_batch=16, batch_decode=False))
    hidden, c0 = _inputs(b, 4, 0)
    _codes(b, hidden, c0, False)   # warm: buffers for B=4
    with OpCounter() as seen:
        _codes(b, hidden, c0, False)
    assert seen.ops["cat"] == 1     # the prefill's input only (talker hidden + c0 embedding)
    assert not {"empty", "new_empty", "empty_strided"} & set(seen.ops)
    b.step_kv = StepKV
    with OpCounter() as grown:
        _codes(b, hidden, c0, False)
    layers = len(b.predictor_layers)
    assert grown.ops["cat"] == 1 + 2 * layers * (b.groups - 2)


def test_predictor_frame_op_and_allocation_budget(tiny_models):
    """One int8 frame's ops and allocating ops on the tiny model, B=1 greedy (issue 25 item 3:
    the predictor's cost at decode sizes is per-op overhead). Before the direct int8 calls,
    the norms as one addmm and in-place muls, and 2-d rows between layers: 827 ops, 452
    allocations."""
    from qwen3ttsd.engine import Engine, LoadOptions

    engine = Engine(str(tiny_models["custom_voice"]), LoadOptions(device="cpu", dtype="float32"))
    engine.load()
    b = BatchedBackend(engine, BackendOptions(max_batch=8, quant="int8", batch_decode=False))
    hidden, c0 = _inputs(b, 1, 0)
    with torch.inference_mode():
        _codes(b, hidden, c0, False)
        with OpCounter() as seen:
            _codes(b, hidden, c0, False)
    assert sum(seen.ops.values()) <= 810, seen.ops.most_common(15)   # 799 after
    assert seen.allocs <= 390, seen.ops.most_common(15)               # 377 after
    assert "to" not in seen.ops   # the int8 modules' no-op .to (they are called as their op)


def test_lean_norm_and_rope_give_the_reference_formulas_bits():
    """The fewer-op RMSNorm (addmm/mm as ATen's linear dispatches them) is bitwise the
    formula it replaces: the codes stay the same."""
    import torch.nn.functional as F

    from qwen3ttsd.engine.lean import Norm, _rotate

    g = torch.Generator().manual_seed(0)
    for shape in [(1, 1, 64), (8, 2, 64), (8, 64), (1, 1, 4, 16), (8, 2, 6, 16)]:
        d = shape[-1]
        n = Norm(torch.randn(d if len(shape) < 4 else (shape[-2], d), generator=g), 1e-6)
        for x in (torch.randn(*shape, generator=g), torch.randn(*shape[:-1], d + 8, generator=g)[..., :d]):
            want = x * F.linear(x * x, n.mean_of, n.eps_bias).rsqrt_() * n.weight
            assert torch.equal(n(x), want), shape
    for b, t, h, d in [(1, 1, 6, 16), (8, 2, 6, 16)]:
        x = torch.randn(b, t, h + 2, d, generator=g)[:, :, :h].transpose(1, 2)
        cos, sin = torch.randn(1, 1, t, d, generator=g), torch.randn(1, 1, t, d, generator=g)
        assert torch.equal(_rotate(x, cos, sin), torch.addcmul(x * cos, x.roll(d // 2, -1), sin))
