"""The codec's low-precision convolutions (issue 25): int8 rows are quantized locally in
time and accumulate in int32, so a chunked conv equals the one-shot conv bitwise on any
CPU; the per-layer choice keeps the decoded audio within the quality gate against fp32."""

from __future__ import annotations

import pytest
import torch

from qwen3ttsd.engine import codec_quant as cq
from qwen3ttsd.engine.codec_model import load_codec_decoder
from qwen3ttsd.engine.streaming_decoder import StreamingDecoder

GATE_SNR_DB = 30.0      # issue 25's gate: decoded audio vs the fp32 codec on the same codes
GATE_LOG_MEL_DB = 1.0   # cq.log_mel_distance: ~1 dB is where a timbre change becomes audible


@pytest.fixture()
def codec(tiny_models):
    dec = load_codec_decoder(tiny_models["custom_voice"])
    yield dec
    cq.clear(dec)


def _causal_chunks(conv, x, sizes):
    """Run ``conv`` over x in chunks, each with its left context (as streaming does)."""
    span = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
    xe = torch.cat([x.new_zeros(x.shape[0], x.shape[1], span - 1), x], -1)
    out, at = [], 0
    for n in sizes:
        out.append(cq.LowPrecisionConv(conv, "int8")(xe[..., at:at + n + span - 1]))
        at += n
    return torch.cat(out, -1), cq.LowPrecisionConv(conv, "int8")(xe)


@pytest.mark.parametrize("cin,cout,k,d", [(64, 48, 7, 3), (200, 32, 1, 1), (96, 96, 7, 9)])
def test_int8_conv_chunked_equals_one_shot_bitwise(cin, cout, k, d):
    conv = torch.nn.Conv1d(cin, cout, k, dilation=d)
    x = torch.randn(2, cin, 40)
    with torch.inference_mode():
        chunked, whole = _causal_chunks(conv, x, [1, 4, 3, 12, 20])
        assert torch.equal(chunked, whole)
        assert cq.snr_db(conv(torch.nn.functional.pad(x, ((k - 1) * d, 0))), whole) >= 30


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_low_precision_forms_track_fp32(mode):
    conv, trans = torch.nn.Conv1d(256, 128, 7, dilation=3), torch.nn.ConvTranspose1d(256, 64, 10, stride=5)
    x = torch.randn(3, 256, 30)
    with torch.inference_mode():
        for m in (conv, trans):
            assert cq.eligible(m)
            assert cq.snr_db(m(x), cq.LowPrecisionConv(m, mode)(x)) >= 30


def test_int8_transposed_rows_are_time_local():
    trans = torch.nn.ConvTranspose1d(64, 32, 6, stride=3)
    x = torch.randn(1, 64, 12)
    low = cq.LowPrecisionConv(trans, "int8")
    with torch.inference_mode():
        whole = low(x)
        a, b = low(x[..., :5]), low(x[..., 5:])
    # the overlap-add of the two halves, as the streaming decoder carries it
    joined = torch.cat([a[..., :15], a[..., 15:] + b[..., :3] - trans.bias.view(1, -1, 1), b[..., 3:]], -1)
    torch.testing.assert_close(joined, whole, atol=1e-5, rtol=1e-5)


def test_quantized_codec_holds_the_quality_gate_and_streams_exactly(codec, monkeypatch):
    monkeypatch.setattr(cq, "INT8_MIN_CHANNELS", 1)   # the tiny codec is narrow: try int8 everywhere
    codes = torch.randint(0, 2048, (30, 16), generator=torch.Generator().manual_seed(11))
    with torch.inference_mode():
        ref = StreamingDecoder(codec).push(codes)[0]
        plan = cq.quantize_codec(codec, "int8")
        assert set(plan.values()) - {"fp32"}, "no layer went low precision"
        one_shot = StreamingDecoder(codec).push(codes)[0]
        sd = StreamingDecoder(codec)
        streamed = torch.cat([sd.push(codes[i:i + 4])[0] for i in range(0, 30, 4)])
    assert cq.snr_db(ref, one_shot) >= GATE_SNR_DB
    assert cq.log_mel_distance(ref, one_shot) <= GATE_LOG_MEL_DB
    # streamed vs one-shot of the same low-precision codec: the fp32 codec's float rounding,
    # which may flip one rounding of a low-precision value (one bf16 ulp / int8 quantum),
    # amplified by the random-weight decoder; far inside the quality gate
    assert cq.snr_db(one_shot, streamed) >= 40


def test_none_keeps_fp32_and_clear_restores_it(codec):
    codes = torch.randint(0, 2048, (6, 16), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ref = StreamingDecoder(codec).push(codes)
        assert set(cq.quantize_codec(codec, "none").values()) == {"fp32"}
        assert torch.equal(StreamingDecoder(codec).push(codes), ref)
        cq.quantize_codec(codec, "int8")
        cq.clear(codec)
        assert torch.equal(StreamingDecoder(codec).push(codes), ref)
    with pytest.raises(ValueError, match="unknown codec quantization"):
        cq.quantize_codec(codec, "int3")


def test_log_mel_distance_is_zero_for_equal_audio_and_grows_with_noise():
    x = torch.randn(24000) * 0.1
    assert cq.log_mel_distance(x, x) == 0
    small, large = (cq.log_mel_distance(x, x + a * torch.randn(24000)) for a in (0.001, 0.05))
    assert 0 < small < large


def test_backend_applies_the_codec_precision_once_per_mode(custom_engine, monkeypatch):
    from qwen3ttsd.engine.backend import BackendOptions
    from qwen3ttsd.engine.batched import BatchedBackend
    from qwen3ttsd.errors import TTSError

    monkeypatch.setattr(cq, "INT8_MIN_CHANNELS", 1)
    dec = custom_engine.new_decoder().decoder
    try:
        BatchedBackend(custom_engine, BackendOptions(max_batch=1, codec_quant="int8"))
        mode, plan = dec.__dict__[cq.PLAN]
        assert mode == "int8" and set(plan.values()) - {"fp32"}
        calls = []
        monkeypatch.setattr(cq, "quantize_codec", lambda *a: calls.append(a) or {})
        BatchedBackend(custom_engine, BackendOptions(max_batch=1, codec_quant="int8"))
        assert not calls   # kept on the decoder
        with pytest.raises(TTSError, match="unknown codec quantization"):
            BatchedBackend(custom_engine, BackendOptions(max_batch=1, codec_quant="int4"))
    finally:
        cq.clear(dec)
