"""The GEMM forms of the codec's convolutions equal torch's own, and streaming through
them stays exact (the tiny codec is below the channel threshold, so it is lowered here)."""

from __future__ import annotations

import pytest
import torch

from qwen3ttsd.engine import cpu_conv
from qwen3ttsd.engine.streaming_decoder import StreamingDecoder


def _conv(cin, cout, k, dilation=1):
    return torch.nn.Conv1d(cin, cout, k, dilation=dilation), cpu_conv.conv1d


def _trans(cin, cout, k, stride):
    return torch.nn.ConvTranspose1d(cin, cout, k, stride=stride), cpu_conv.conv_transpose1d


@pytest.mark.parametrize("make,batch,t,shape", [
    (_conv, 1, 22, (1024, 1536, 7)), (_conv, 3, 6, (512, 1024, 3)), (_conv, 2, 70, (600, 64, 7, 9)),
    (_conv, 1, 5, (512, 512, 1)), (_trans, 1, 4, (1536, 768, 16, 8)), (_trans, 2, 8, (1024, 1024, 2, 2)),
    (_trans, 1, 9, (512, 96, 7, 3)), (_trans, 1, 4, (512, 32, 3, 5))])
def test_gemm_form_equals_torch(make, batch, t, shape):
    conv, gemm = make(*shape)
    x = torch.randn(batch, shape[0], t)
    with torch.inference_mode():
        assert cpu_conv._use_gemm(x, conv)
        torch.testing.assert_close(gemm(conv, x), conv(x), atol=1e-4, rtol=1e-4)


def test_thin_padded_or_grouped_convs_keep_torchs_kernel():
    x = torch.randn(1, 1024, 8)
    assert not cpu_conv._use_gemm(torch.randn(1, 256, 8), torch.nn.Conv1d(256, 256, 3))
    assert not cpu_conv._use_gemm(x, torch.nn.Conv1d(1024, 1024, 7, groups=1024))
    assert not cpu_conv._use_gemm(x, torch.nn.Conv1d(1024, 8, 3, padding=1))
    assert not cpu_conv._use_gemm(x, torch.nn.ConvTranspose1d(1024, 8, 4, stride=2, padding=1))


def test_streaming_through_the_gemm_path_stays_exact(custom_engine, monkeypatch):
    monkeypatch.setattr(cpu_conv, "GEMM_MIN_CHANNELS", 1)
    dec = custom_engine.tts.model.speech_tokenizer.model.decoder
    codes = torch.randint(0, 2048, (40, 16), generator=torch.Generator().manual_seed(3))
    calls = []
    real = cpu_conv._use_gemm
    monkeypatch.setattr(cpu_conv, "_use_gemm", lambda x, conv: real(x, conv) and not calls.append(1))
    with torch.inference_mode():
        ref = dec(codes.T.unsqueeze(0)).squeeze(1)[0]
        sd = StreamingDecoder(dec)
        out = torch.cat([sd.push(codes[i:i + 3])[0] for i in range(0, 40, 3)])
    assert calls, "the GEMM path was not taken"
    assert float((out - ref).abs().max()) <= 1e-4
