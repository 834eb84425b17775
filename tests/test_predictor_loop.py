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
