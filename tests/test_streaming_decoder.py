"""The streaming decoder's in-place Snake and conv buffers give the bits of the plain
formulas they replace (issue 25, "a cheaper codec"): the same codes decode to the same
audio, bit for bit, with fewer passes and allocations per chunk."""

from __future__ import annotations

import pytest
import torch

from qwen3ttsd.engine import streaming_decoder as sdm
from qwen3ttsd.engine.codec_model import SnakeBeta, load_codec_decoder
from qwen3ttsd.engine.cpu_conv import conv1d
from qwen3ttsd.engine.streaming_decoder import StreamingDecoder
from qwen3ttsd.testing.op_count import OpCounter


class _Reference(StreamingDecoder):
    """The decoder as it was before the in-place forms: ``cat`` for the conv tails and
    qwen-tts's Snake formula out of place."""

    def _module(self, m, x):
        kind = sdm.stream_kind(m)
        if kind == "residual":
            y = self._conv(m.conv1, self._module(m.act1, x))
            return self._conv(m.conv2, self._module(m.act2, y)) + x
        if kind == "snake":
            alpha, inv_beta = torch.exp(m.alpha.view(1, -1, 1)), 1.0 / (torch.exp(m.beta.view(1, -1, 1)) + 1e-9)
            return x + inv_beta * torch.sin(x * alpha).pow_(2)
        return super()._module(m, x)

    def _conv(self, m, x, act=None):
        assert act is None
        keep = m.kernel_size - 1
        if keep == 0:
            return conv1d(m.conv, x)
        tail = self._conv_tail.get(id(m))
        xe = torch.cat([x.new_zeros(x.shape[0], x.shape[1], keep) if tail is None else tail, x], dim=-1)
        self._conv_tail[id(m)] = xe[..., -keep:]
        return conv1d(m.conv, xe)


@pytest.fixture(scope="module")
def decoder(tiny_models):
    return load_codec_decoder(tiny_models["custom_voice"])


@pytest.mark.parametrize("shape", [(1, 96, 7680), (3, 64, 160), (2, 7, 13)])
def test_snake_in_place_and_into_a_buffer_gives_the_formulas_bits(shape):
    g = torch.Generator().manual_seed(0)
    m = SnakeBeta(shape[1])
    with torch.no_grad():
        m.alpha.copy_(torch.randn(shape[1], generator=g))
        m.beta.copy_(torch.randn(shape[1], generator=g))
    x = torch.randn(*shape, generator=g) * 3
    ref = x + 1.0 / (torch.exp(m.beta.detach().view(1, -1, 1)) + 1e-9) * torch.sin(
        x * torch.exp(m.alpha.detach().view(1, -1, 1))) ** 2
    buf = torch.full((shape[0], shape[1], shape[2] + 5), float("nan"))
    with torch.inference_mode():
        assert torch.equal(sdm._snake(m, x), ref)
        sdm._snake(m, x, out=buf[..., 5:])
        assert torch.equal(buf[..., 5:], ref)
        xt = x.transpose(1, 2).contiguous().transpose(1, 2)     # a GEMM conv's output layout
        assert torch.equal(sdm._snake(m, xt), ref)


@pytest.mark.parametrize("batch", [1, 3])
def test_streamed_audio_has_the_plain_formulas_bits(decoder, batch):
    codes = torch.randint(0, 2048, (batch, 23, 16), generator=torch.Generator().manual_seed(batch))
    for chunks in ([1, 4, 4, 4, 4, 4, 2], [23]):
        new, ref = [StreamingDecoder(decoder) for _ in range(batch)], [_Reference(decoder) for _ in range(batch)]
        at = 0
        for n in chunks:
            a = StreamingDecoder.push_many(new, codes[:, at:at + n])
            b = _Reference.push_many(ref, codes[:, at:at + n]) if batch > 1 else ref[0].push(codes[:, at:at + n])
            assert torch.equal(a, b), (chunks, at)
            at += n


def test_a_push_runs_no_cat_but_the_attention_caches_and_fewer_allocations(decoder):
    """Before: a ``cat`` per conv with a tail (its input) and four allocations per Snake;
    now the Snake writes into the conv's input buffer. A push of 4 frames on the tiny codec:
    342 allocating ops and 22 cats before, 247 and 5 after."""
    sd = StreamingDecoder(decoder)
    codes = torch.randint(0, 2048, (12, 16), generator=torch.Generator().manual_seed(0))
    sd.push(codes[:4])
    sd.push(codes[4:8])
    with OpCounter() as seen:
        sd.push(codes[8:])
    assert seen.ops["cat"] == 1 + 2 * len(decoder.pre_transformer.layers)   # rope's table; keys and values
    assert seen.allocs <= 250, seen.ops.most_common(12)


@pytest.mark.parametrize("frames", [5, 40, 125])
def test_priming_with_a_reference_continues_as_the_full_decode_does(decoder, frames):
    """An ICL clone primes the codec with its reference's codes; decoding all of a 10 s
    reference (125 frames) cost 4.4 s of a 0.6B clone's first call. ``prime`` runs the
    upsampling stack on the last frames only: the clone's audio after it matches the full
    decode's within the rounding that streaming in chunks already has (both against the
    same codes pushed at once), and short references take the full decode."""
    g = torch.Generator().manual_seed(frames)
    q, size = decoder.config.num_quantizers, int(decoder.config.codebook_size)
    codes = torch.randint(0, size, (frames, q), generator=g)
    more = torch.randint(0, size, (12, q), generator=g)
    full, primed, whole = StreamingDecoder(decoder), StreamingDecoder(decoder), StreamingDecoder(decoder)
    full.push(codes)
    primed.prime(codes)
    whole.push(codes)
    assert primed.frames_seen == full.frames_seen == frames
    chunked = [torch.cat([d.push(more[i:i + 4]) for i in range(0, 12, 4)], -1) for d in (full, primed)]
    at_once = whole.push(more)
    streaming_rounding = float((chunked[0] - at_once).abs().max())
    assert float((chunked[1] - chunked[0]).abs().max()) <= max(2 * streaming_rounding, 1e-6)
    if frames <= decoder_context(decoder):
        assert torch.equal(chunked[1], chunked[0])  # decoded in full


def decoder_context(decoder) -> int:
    return StreamingDecoder(decoder).back_context_frames() + sdm.PRIME_MARGIN_FRAMES
