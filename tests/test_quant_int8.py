"""int8 serving's accuracy against fp32 (issue 25 item 2: :func:`.lean.quantize_int8`).

* each Linear's int8 output stays within the error bound of its own row's scale (per-channel
  scales): trained heads and projections have rows of very different norms, and one scale
  per matrix rounds the small rows to a few levels;
* every linear of the int8 hot path is int8, the talker's codec head included (it was an
  fp32 copy: ``quantize_dynamic`` swaps a module's children, never the module passed);
* the int8 backend's logits, teacher-forced on the fp32 backend's codes, stay close to
  fp32's, and the codes they pick mostly agree (the rate is reported and bounded).
"""

from __future__ import annotations

import pytest
import torch

from qwen3ttsd.engine.backend import BackendOptions
from qwen3ttsd.engine.batched import BatchedBackend
from qwen3ttsd.engine.lean import quantize_int8
from qwen3ttsd.testing.teacher_forcing import logits_against
from tests.conftest import _engine


def _row_bound(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A worst-case bound on |int8 linear - fp32 linear| per (input row, output row): with
    ``w`` rounded to its row's step ``max|w_r| / 127`` and ``x`` to the dynamic activation
    step ``range(x) / 127`` (fbgemm's 7-bit reduced range, 0 inside the range), each
    product errs by at most ``|x| dw + |w| dx + dw dx``. Full steps (rounding errs by half
    of one): a 2x margin for the float accumulation."""
    dw = w.abs().amax(1) / 127                                   # (out,)
    dx = (x.amax(1).clamp(min=0) - x.amin(1).clamp(max=0)) / 127  # (batch,)
    return (x.abs().sum(1, keepdim=True) * dw + dx[:, None] * w.abs().sum(1) + w.shape[1] * dx[:, None] * dw)


def test_int8_linears_bound_each_rows_error_by_its_own_scale():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64, bias=False)
    with torch.no_grad():
        lin.weight *= torch.logspace(0, -2, 64).unsqueeze(1)   # row norms spread over 100x
    q = quantize_int8(torch.nn.Sequential(lin))[0]
    x = torch.randn(8, 256)
    with torch.no_grad():
        err = (q(x) - lin(x)).abs()
    bound = _row_bound(lin.weight.detach(), x)
    assert bool((err <= bound).all()), f"rows over their bound: {int((err > bound).sum())} of {err.numel()}"


def _is_int8(m) -> bool:
    return isinstance(m, torch.ao.nn.quantized.dynamic.Linear)


def test_a_bare_linear_is_quantized_too():
    assert _is_int8(quantize_int8(torch.nn.Linear(8, 4)))


def test_the_int8_backends_heads_and_projections_are_int8(tiny_models):
    b = BatchedBackend(_engine(tiny_models["custom_voice"]), BackendOptions(max_batch=2, quant="int8"))
    layers = [*b.talker_layers, *b.predictor_layers]
    heads = [head.args[0] for head in (b.codec_head, *b.lm_heads)]   # called through lean.dense's partial
    linears = [*heads, *(m for layer in layers for m in (layer.qkv, layer.o_proj, layer.gate_up, layer.down))]
    assert [type(m).__name__ for m in linears if not _is_int8(m)] == []


# Measured on the tiny model (hidden 16: an int8 activation row has few values, its error
# the largest of any size): max |dlogit| 0.56 of the logits' std, picks agreeing 93 %.
# The bounds leave a margin for other CPUs' kernels and catch a broken scale (error >> std).
MAX_REL_ERR = 1.0
MIN_AGREEMENT = 0.85


@pytest.mark.slow
def test_int8_predictor_logits_stay_near_fp32(custom_engine, tiny_models):
    ref = BatchedBackend(custom_engine, BackendOptions(max_batch=8, batch_decode=False))
    q = BatchedBackend(_engine(tiny_models["custom_voice"]), BackendOptions(max_batch=8, quant="int8",
                                                                            batch_decode=False))
    rel, agree = logits_against(ref, q, frames=4, batch=8)
    print(f"int8 vs fp32, teacher-forced: max |dlogit| / std {rel:.3f}, picks agreeing {agree:.3f}")
    assert rel <= MAX_REL_ERR
    assert agree >= MIN_AGREEMENT


@pytest.fixture(scope="module")
def int8_engine(tiny_models):
    return _engine(tiny_models["custom_voice"])   # its own: int8 releases the fp32 linears


def test_a_seeded_request_speaks_the_same_alone_and_among_other_calls(int8_engine):
    """int8's activations are quantized with one scale per input: a seeded row computed in
    a batch would take its scale from the other rows. A seeded row is quantized on its
    own (prefill and every step), so its seed gives the same speech whatever else runs;
    unseeded rows stay batched."""
    assert_seeded_speech_is_the_same_alone_and_among_others(int8_engine, "int8")


def assert_seeded_speech_is_the_same_alone_and_among_others(engine, quant: str) -> None:
    """Five seeded requests alone, then among unseeded ones (batches of up to 9 rows): the
    same codes and audio."""
    import numpy as np

    from qwen3ttsd.engine import SynthesisRequest
    from tests.test_engine_batched import mixed_requests, run_batched

    seeded = mixed_requests()[:5]
    unseeded = [SynthesisRequest(text=f"An unseeded call, number {i}.", speaker="ryan", language="english",
                                 max_frames=9) for i in range(4)]
    solo = [run_batched(engine, [r], quant=quant, batch_decode=False)[0] for r in seeded]
    mixed = run_batched(engine, [seeded[0], *unseeded[:2], *seeded[1:], *unseeded[2:]],
                        admit_at=[0, 0, 0, 0, 2, 2, 3, 3, 5], quant=quant, batch_decode=False)
    together = [mixed[0], *mixed[3:7]]
    for s, t in zip(solo, together):
        assert t.result[0] == "done"
        assert torch.equal(s.all_codes, t.all_codes)
        assert np.array_equal(np.concatenate(s.audio), np.concatenate(t.audio))


def test_auto_serves_fp32_where_the_cpu_has_no_int8_kernels_and_int8_says_why(tiny_models, tmp_path, monkeypatch):
    """A NAS CPU without AVX2 (a Celeron J4125) may have no torch int8 engine: its linear
    prepack raises. The CPU default (auto) must still serve - fp32, said in the log - and an
    explicit int8 must be a clear error, not an internal one."""
    from qwen3ttsd.engine import lean
    from qwen3ttsd.engine.loader import LoadOptions
    from qwen3ttsd.errors import TTSError

    def no_engine(*args, **kwargs):
        raise RuntimeError("Didn't find engine for operation quantized::linear_prepack NoQEngine")

    monkeypatch.setattr(lean, "quantize_int8", no_engine)
    lean.int8_unavailable.cache_clear()
    try:
        engine = _engine(tiny_models["custom_voice"])
        assert BatchedBackend(engine, BackendOptions(max_batch=2, quant="auto")).status["quant"] is None
        with pytest.raises(TTSError) as e:
            BatchedBackend(engine, BackendOptions(max_batch=2, quant="int8"))
        assert e.value.code == "unsupported" and "int8" in e.value.message
        from qwen3ttsd.engine.engine import Engine

        cached = Engine(str(tiny_models["custom_voice"]), LoadOptions(weights="own", quant="auto",
                                                                      cache_dir=str(tmp_path)))
        cached.load()
        assert cached.weight_cache is None   # nothing to cache: it serves fp32
    finally:
        lean.int8_unavailable.cache_clear()


def test_a_bf16_model_on_the_cpu_serves_bf16_under_auto_and_int8_says_why(tiny_models):
    """QWEN3TTSD_DTYPE=bfloat16 on the CPU with the default QUANT ran bf16 activations into
    the int8 kernels (float32 only): every request hung and the daemon never idled out. auto
    serves the bf16 linears; an explicit int8 or int4 is a clear error."""
    from qwen3ttsd.engine import Engine, LoadOptions, SynthesisRequest
    from qwen3ttsd.errors import TTSError
    from tests.test_engine_batched import run_batched

    engine = Engine(str(tiny_models["custom_voice"]), LoadOptions(weights="own", dtype="bfloat16", quant="auto"))
    engine.load()
    assert BatchedBackend(engine, BackendOptions(max_batch=2, quant="auto")).status["quant"] is None
    [run] = run_batched(engine, [SynthesisRequest(text="Hello.", speaker="vivian", max_frames=3)], quant="auto")
    assert run.result[0] == "done" and run.all_codes.shape == (3, 16)
    for quant in ("int8", "int4"):
        with pytest.raises(TTSError) as e:
            BatchedBackend(engine, BackendOptions(max_batch=2, quant=quant))
        assert e.value.code == "unsupported" and "bfloat16" in e.value.message and "float32" in e.value.message
