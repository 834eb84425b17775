"""The 12 Hz codec's decoder as the project's own modules, loaded without transformers.

Why: :class:`.streaming_decoder.StreamingDecoder` already owns the decoder's math (it runs
the modules step by step with carried state); it needs the weights and the module tree,
not qwen-tts's classes - whose module imports transformers (Mimi, masking utils) and whose
``from_pretrained`` also loads the encoder the serving path never runs. These modules
keep qwen-tts's attribute and parameter names (``decoder.pre_transformer.layers.N...``,
``decoder.quantizer.rvq_first.vq.layers.N._codebook.embedding_sum``, ...), so they load
from ``speech_tokenizer/model.safetensors`` as they are, and each tells the streaming
decoder what it is through ``stream_kind``. They hold weights; they have no forward.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import TTSError
from .checkpoint import CODEC_DIR, WEIGHTS_FILE, CodecDecoderConfig, load_weights, read_codec_config
from .talker_model import MLP, Attention, RMSNorm, RotaryEmbedding, fused_groups


class CausalConv(nn.Module):
    """A conv padded on the left only (``kernel_size``: the effective kernel, with dilation)."""

    stream_kind = "conv"

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation, groups=groups)
        self.stride = 1
        self.dilation = dilation
        self.kernel_size = (kernel - 1) * dilation + 1
        self.padding = self.kernel_size - self.stride


class CausalTransConv(nn.Module):
    """A transposed conv whose output is trimmed on the right."""

    stream_kind = "trans_conv"

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(c_in, c_out, kernel, stride=stride)
        self.left_pad = 0
        self.right_pad = kernel - stride


class SnakeBeta(nn.Module):
    """``x + 1 / (exp(beta) + 1e-9) * sin(x * exp(alpha)) ** 2`` per channel."""

    stream_kind = "snake"

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(channels))
        self.beta = nn.Parameter(torch.empty(channels))
        self.no_div_by_zero = 1e-9


class ConvNeXtBlock(nn.Module):
    stream_kind = "convnext"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = CausalConv(dim, dim, 7, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.empty(dim))


class ResidualUnit(nn.Module):
    stream_kind = "residual"

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.act1 = SnakeBeta(dim)
        self.conv1 = CausalConv(dim, dim, 7, dilation=dilation)
        self.act2 = SnakeBeta(dim)
        self.conv2 = CausalConv(dim, dim, 1)


class DecoderBlock(nn.Module):
    """Snake, an upsampling transposed conv, three dilated residual units."""

    stream_kind = "block"

    def __init__(self, c: CodecDecoderConfig, i: int) -> None:
        super().__init__()
        c_in, c_out, rate = c.decoder_dim // 2 ** i, c.decoder_dim // 2 ** (i + 1), c.upsample_rates[i]
        self.block = nn.ModuleList([SnakeBeta(c_in), CausalTransConv(c_in, c_out, 2 * rate, rate),
                                    *(ResidualUnit(c_out, d) for d in (1, 3, 9))])


class LayerScale(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.empty(channels))


class TransformerLayer(nn.Module):
    """A pre-transformer layer: no q/k norm, layer scales on both residual branches."""

    def __init__(self, c: CodecDecoderConfig, i: int) -> None:
        super().__init__()
        self.self_attn = Attention(c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.heads_dim,
                                   c.attention_bias, i, qk_norm_eps=None)
        self.self_attn.sliding_window = c.sliding_window
        self.mlp = MLP(c.hidden_size, c.intermediate_size, c.hidden_act)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn_layer_scale = LayerScale(c.hidden_size)
        self.mlp_layer_scale = LayerScale(c.hidden_size)


class PreTransformer(nn.Module):
    def __init__(self, c: CodecDecoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(c, i) for i in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(c.heads_dim, c.rope)
        self.input_proj = nn.Linear(c.latent_dim, c.hidden_size)
        self.output_proj = nn.Linear(c.hidden_size, c.latent_dim)


class Codebook(nn.Module):
    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self.epsilon = 1e-5
        self.cluster_usage = nn.Parameter(torch.empty(size))
        self.embedding_sum = nn.Parameter(torch.empty(size, dim))


class VectorQuantization(nn.Module):
    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self.project_out = nn.Identity()   # qwen-tts's codebook_dim == dim
        self._codebook = Codebook(dim, size)


class _Layers(nn.Module):
    def __init__(self, n: int, dim: int, size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(VectorQuantization(dim, size) for _ in range(n))


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, n_q: int, dim: int, io_dim: int, size: int) -> None:
        super().__init__()
        self.input_proj = nn.Conv1d(io_dim, dim, 1, bias=False)   # the encoder's side; loaded, unused
        self.output_proj = nn.Conv1d(dim, io_dim, 1, bias=False)
        self.vq = _Layers(n_q, dim, size)


class SplitResidualVectorQuantizer(nn.Module):
    """Codebook 0 (semantic) and 1..15 (acoustic), each group with its own projection."""

    def __init__(self, c: CodecDecoderConfig) -> None:
        super().__init__()
        self.n_q_semantic = 1
        dim = c.codebook_dim // 2
        self.rvq_first = ResidualVectorQuantizer(1, dim, c.codebook_dim, c.codebook_size)
        self.rvq_rest = ResidualVectorQuantizer(c.num_quantizers - 1, dim, c.codebook_dim, c.codebook_size)


class CodecDecoder(nn.Module):
    """``speech_tokenizer.model.decoder``: codes (B, 16, T) -> 24 kHz audio, run by
    :class:`.streaming_decoder.StreamingDecoder`."""

    def __init__(self, c: CodecDecoderConfig) -> None:
        super().__init__()
        self.config = c
        self.total_upsample = math.prod(c.upsample_rates) * math.prod(c.upsampling_ratios)
        self.pre_transformer = PreTransformer(c)
        self.quantizer = SplitResidualVectorQuantizer(c)
        self.pre_conv = CausalConv(c.codebook_dim, c.latent_dim, 3)
        self.upsample = nn.ModuleList(nn.ModuleList([CausalTransConv(c.latent_dim, c.latent_dim, r, r),
                                                     ConvNeXtBlock(c.latent_dim)]) for r in c.upsampling_ratios)
        out_dim = c.decoder_dim // 2 ** len(c.upsample_rates)
        self.decoder = nn.ModuleList([CausalConv(c.latent_dim, c.decoder_dim, 7),
                                      *(DecoderBlock(c, i) for i in range(len(c.upsample_rates))),
                                      SnakeBeta(out_dim), CausalConv(out_dim, 1, 7)])

    @property
    def device(self) -> torch.device:
        return self.pre_conv.conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pre_conv.conv.weight.dtype


def load_codec_decoder(model_dir: str | os.PathLike, dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu") -> CodecDecoder:
    """The codec decoder of the checkpoint at ``model_dir`` (its ``speech_tokenizer/``), in
    ``dtype`` on ``device``; the encoder's tensors are not read."""
    config = read_codec_config(model_dir)
    if config.num_quantizers < 2:
        raise TTSError("model_load_failed", "the codec needs at least 2 quantizers")
    with torch.device("meta"):
        decoder = CodecDecoder(config)
    load_weights(decoder, Path(model_dir) / CODEC_DIR / WEIGHTS_FILE, "decoder.", dtype=dtype, device=device,
                 fused=fused_groups(decoder))
    rope = decoder.pre_transformer.rotary_emb
    rope.inv_freq = rope.inv_freq.to(device)
    return decoder


__all__ = ["CodecDecoder", "load_codec_decoder"]
