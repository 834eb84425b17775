"""The 12 Hz speech tokenizer's encoder (Mimi) as the project's own modules, loaded
without transformers (issue 19: ICL clones on the own weights).

An ICL clone's prompt carries its reference clip's codec codes. qwen-tts gets them from
``speech_tokenizer.encode``: transformers' ``MimiModel.encode`` (a causal SEANet conv
encoder, a causal transformer, a strided conv down to 12.5 Hz, then split residual vector
quantization: nearest codebook entry by ``torch.cdist``), the first 16 codebooks kept.
Loading it means loading qwen-tts's whole model (transformers, librosa: seconds of imports
and a second copy of the weights). These modules have the checkpoint's names
(``encoder.encoder.layers.N.conv``, ``encoder.encoder_transformer.layers.N.self_attn.q_proj``,
``encoder.quantizer.semantic_residual_vector_quantizer.layers.0.codebook.embed_sum``, ...)
and compute transformers' ops in its order (SDPA attention, as qwen-tts loads it), so the
codes are qwen-tts's (``tests/test_codec_encoder.py``). Loaded on the first ICL clone.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import TTSError
from .checkpoint import CODEC_DIR, WEIGHTS_FILE, RopeConfig, _from_dict, _json, load_weights
from .codec_model import LayerScale
from .talker_model import Attention, RotaryEmbedding

PREFIX = "encoder."


@dataclass(frozen=True)
class CodecEncoderConfig:
    """``speech_tokenizer/config.json``'s ``encoder_config`` (transformers' MimiConfig
    defaults), plus the tokenizer's own ``encoder_valid_num_quantizers`` and
    ``encode_downsample_rate``."""

    sampling_rate: int = 24000
    frame_rate: float | None = None
    audio_channels: int = 1
    hidden_size: int = 512
    num_filters: int = 64
    num_residual_layers: int = 1
    upsampling_ratios: list[int] = field(default_factory=lambda: [8, 6, 5, 4])
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    use_causal_conv: bool = True
    pad_mode: str = "constant"
    compress: int = 2
    codebook_size: int = 2048
    codebook_dim: int = 256
    num_quantizers: int = 32
    use_conv_shortcut: bool = False
    vector_quantization_hidden_dimension: int = 256
    num_semantic_quantizers: int = 1
    num_hidden_layers: int = 8
    intermediate_size: int = 2048
    num_attention_heads: int = 8
    num_key_value_heads: int = 8
    head_dim: int | None = None
    hidden_act: str = "gelu"
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    attention_bias: bool = False
    valid_num_quantizers: int = 16
    encode_downsample_rate: int = 1920

    @property
    def heads_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def downsample_kernel(self) -> int | None:
        """MimiModel's downsampling conv kernel (stride 2), None where it has none."""
        conv_rate = math.ceil(self.sampling_rate / math.prod(self.upsampling_ratios))
        frame_rate = self.frame_rate or self.sampling_rate / (math.prod(self.upsampling_ratios) * 2)
        return None if frame_rate == conv_rate else 2 * int(conv_rate / frame_rate)


def read_codec_encoder_config(model_dir: str | os.PathLike) -> CodecEncoderConfig:
    d = _json(Path(model_dir) / CODEC_DIR / "config.json")
    try:
        c = _from_dict(CodecEncoderConfig, dict(d.get("encoder_config") or {}),
                       valid_num_quantizers=int(d.get("encoder_valid_num_quantizers", 16)),
                       encode_downsample_rate=int(d.get("encode_downsample_rate", 1920)))
    except (TypeError, ValueError) as e:
        raise TTSError("model_load_failed", f"bad speech_tokenizer/config.json in {model_dir}: {e}") from e
    unsupported = [name for name, ok in (("use_causal_conv=false", c.use_causal_conv),
                                         ("use_conv_shortcut", not c.use_conv_shortcut),
                                         (f"hidden_act {c.hidden_act!r}", c.hidden_act == "gelu"),
                                         (f"pad_mode {c.pad_mode!r}", c.pad_mode in ("constant", "replicate")),
                                         ("audio_channels != 1", c.audio_channels == 1))
                   if not ok]
    if unsupported:
        raise TTSError("model_load_failed", f"the codec encoder's {', '.join(unsupported)} is not supported")
    return c


# --- SEANet conv encoder -------------------------------------------------------------------


class CausalConv(nn.Module):
    """MimiConv1d, causal: padded left by ``kernel - stride`` and right to a whole stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1,
                 bias: bool = True, pad_mode: str = "constant") -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride, dilation=dilation, bias=bias)
        self.stride = stride
        self.padding_total = (kernel - 1) * dilation + 1 - stride
        self.pad_mode = pad_mode

    def forward(self, x: Tensor) -> Tensor:
        extra = -x.shape[-1] % self.stride   # transformers' float32 arithmetic, exact below 2**24 samples
        return self.conv(F.pad(x, (self.padding_total, extra), self.pad_mode))


class ResnetBlock(nn.Module):
    def __init__(self, c: CodecEncoderConfig, dim: int, dilations: tuple[int, int]) -> None:
        super().__init__()
        hidden = dim // c.compress
        self.block = nn.ModuleList([nn.ELU(), CausalConv(dim, hidden, c.residual_kernel_size, dilation=dilations[0],
                                                         pad_mode=c.pad_mode),
                                    nn.ELU(), CausalConv(hidden, dim, 1, dilation=dilations[1], pad_mode=c.pad_mode)])

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for layer in self.block:
            h = layer(h)
        return x + h


class SeanetEncoder(nn.Module):
    """MimiEncoder: audio (B, 1, T) -> (B, hidden, T / prod(upsampling_ratios))."""

    def __init__(self, c: CodecEncoderConfig) -> None:
        super().__init__()
        mode = c.pad_mode
        layers: list[nn.Module] = [CausalConv(c.audio_channels, c.num_filters, c.kernel_size, pad_mode=mode)]
        scale = 1
        for ratio in reversed(c.upsampling_ratios):
            dim = scale * c.num_filters
            layers += [ResnetBlock(c, dim, (c.dilation_growth_rate ** j, 1)) for j in range(c.num_residual_layers)]
            layers += [nn.ELU(), CausalConv(dim, dim * 2, ratio * 2, stride=ratio, pad_mode=mode)]
            scale *= 2
        layers += [nn.ELU(), CausalConv(scale * c.num_filters, c.hidden_size, c.last_kernel_size, pad_mode=mode)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


# --- transformer ---------------------------------------------------------------------------


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, intermediate, bias=False)
        self.fc2 = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerLayer(nn.Module):
    """MimiTransformerLayer: LayerNorms, causal SDPA attention, layer scales."""

    def __init__(self, c: CodecEncoderConfig, i: int) -> None:
        super().__init__()
        self.self_attn = Attention(c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.heads_dim,
                                   c.attention_bias, i, qk_norm_eps=None)
        self.mlp = MLP(c.hidden_size, c.intermediate_size)
        self.input_layernorm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.self_attn_layer_scale = LayerScale(c.hidden_size)
        self.mlp_layer_scale = LayerScale(c.hidden_size)
        self.heads = (c.num_attention_heads, c.num_key_value_heads, c.heads_dim)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.self_attn_layer_scale.scale * self._attend(self.input_layernorm(x), cos, sin)
        return x + self.mlp_layer_scale.scale * self.mlp(self.post_attention_layernorm(x))

    def _attend(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        a, (heads, kv_heads, dim) = self.self_attn, self.heads
        b, n, _ = x.shape
        q = a.q_proj(x).view(b, n, heads, dim).transpose(1, 2)
        k = a.k_proj(x).view(b, n, kv_heads, dim).transpose(1, 2)
        v = a.v_proj(x).view(b, n, kv_heads, dim).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        if kv_heads != heads:   # transformers' repeat_kv
            k, v = (t[:, :, None].expand(b, kv_heads, heads // kv_heads, n, dim).reshape(b, heads, n, dim)
                    for t in (k, v))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=n > 1)
        return a.o_proj(out.transpose(1, 2).contiguous().view(b, n, -1))


class EncoderTransformer(nn.Module):
    def __init__(self, c: CodecEncoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(c, i) for i in range(c.num_hidden_layers))
        self.rotary_emb = RotaryEmbedding(c.heads_dim, RopeConfig(theta=float(c.rope_theta)))

    def forward(self, x: Tensor) -> Tensor:
        positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        cos, sin = self.rotary_emb(x, positions)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return x


# --- residual vector quantization ----------------------------------------------------------


class Codebook(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.epsilon = 1e-5
        self.register_buffer("initialized", torch.empty(1))
        self.register_buffer("cluster_usage", torch.empty(size))
        self.register_buffer("embed_sum", torch.empty(size, dim))

    def quantize(self, residual: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D, T) -> indices (B, T) of the nearest entries, and those entries (B, D, T)."""
        embed = self.embed_sum / self.cluster_usage.clamp(min=self.epsilon)[:, None]
        h = residual.permute(0, 2, 1)
        flat = h.reshape(-1, h.shape[-1])
        ind = torch.cdist(flat[None].float(), embed[None].float(), p=2)[0].argmin(dim=-1).view(*h.shape[:-1])
        return ind, F.embedding(ind, embed).permute(0, 2, 1)


class VectorQuantization(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.codebook = Codebook(size, dim)


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, c: CodecEncoderConfig, n: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(VectorQuantization(c.codebook_size, c.codebook_dim) for _ in range(n))
        dim = c.vector_quantization_hidden_dimension
        self.input_proj = nn.Conv1d(c.hidden_size, dim, 1, bias=False) if dim != c.hidden_size else None
        self.output_proj = nn.Conv1d(dim, c.hidden_size, 1, bias=False) if dim != c.hidden_size else None  # decoding

    def encode(self, x: Tensor, n: int) -> Tensor:
        """(B, hidden, T) -> the first ``n`` codebooks' indices (n, B, T)."""
        residual = x if self.input_proj is None else self.input_proj(x)
        codes = []
        for layer in self.layers[:n]:
            ind, quantized = layer.codebook.quantize(residual)
            residual = residual - quantized
            codes.append(ind)
        return torch.stack(codes)


class SplitResidualVectorQuantizer(nn.Module):
    """Codebook 0 (semantic) and the rest (acoustic), each group on the same latents."""

    def __init__(self, c: CodecEncoderConfig) -> None:
        super().__init__()
        n = c.num_semantic_quantizers
        self.semantic_residual_vector_quantizer = ResidualVectorQuantizer(c, n)
        self.acoustic_residual_vector_quantizer = ResidualVectorQuantizer(c, c.num_quantizers - n)


class CodecEncoder(nn.Module):
    """``speech_tokenizer.model.encoder``: a 24 kHz mono clip -> its (frames, 16) codes."""

    def __init__(self, c: CodecEncoderConfig) -> None:
        super().__init__()
        self.config = c
        self.encoder = SeanetEncoder(c)
        self.encoder_transformer = EncoderTransformer(c)
        kernel = c.downsample_kernel
        self.downsample = None if kernel is None else CausalConv(c.hidden_size, c.hidden_size, kernel, stride=2,
                                                                 bias=False, pad_mode="replicate")
        self.quantizer = SplitResidualVectorQuantizer(c)

    def unused(self) -> list[str]:
        """State-dict keys encoding never reads: codebooks past the valid ones, the output
        projections (decoding's)."""
        q = self.quantizer
        n_acoustic = self.config.valid_num_quantizers - len(q.semantic_residual_vector_quantizer.layers)
        keys = [f"quantizer.acoustic_residual_vector_quantizer.layers.{i}.codebook.{name}"
                for i in range(max(0, n_acoustic), len(q.acoustic_residual_vector_quantizer.layers))
                for name in ("initialized", "cluster_usage", "embed_sum")]
        keys += [k for k in self.state_dict() if ".output_proj." in k or k.endswith(".initialized")]
        return sorted(set(keys))

    def latents(self, audio: Tensor) -> Tensor:
        """(B, T) samples -> the quantizer's input (B, hidden, frames)."""
        x = self.encoder(audio.unsqueeze(1))
        x = self.encoder_transformer(x.transpose(1, 2)).transpose(1, 2)
        return x if self.downsample is None else self.downsample(x)

    def quantize(self, latents: Tensor) -> Tensor:
        """(B, hidden, frames) -> the valid codebooks' codes (B, n, frames)."""
        q, n = self.quantizer, self.config.valid_num_quantizers
        semantic = q.semantic_residual_vector_quantizer
        codes = semantic.encode(latents, n)
        if n > len(semantic.layers):
            codes = torch.cat([codes, q.acoustic_residual_vector_quantizer.encode(latents, n - len(semantic.layers))])
        return codes.transpose(0, 1)

    @torch.inference_mode()
    def encode(self, wav: np.ndarray) -> Tensor:
        """qwen-tts's ``speech_tokenizer.encode(wav, sr=24000).audio_codes[0]``: (frames, n) int64."""
        if wav.ndim != 1 or wav.shape[0] == 0:
            raise ValueError(f"a non-empty mono clip is needed, got shape {wav.shape}")
        p = self.encoder.layers[0].conv.weight
        audio = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).unsqueeze(0).to(p.device).to(p.dtype)
        frames = -(-wav.shape[0] // self.config.encode_downsample_rate)
        return self.quantize(self.latents(audio))[0, :, :frames].transpose(0, 1)

    @property
    def device(self) -> torch.device:
        return self.encoder.layers[0].conv.weight.device


def load_codec_encoder(model_dir: str | os.PathLike, dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu") -> CodecEncoder:
    """The codec encoder of the checkpoint at ``model_dir`` (its ``speech_tokenizer/``), in
    ``dtype`` on ``device``. No transformers import."""
    config = read_codec_encoder_config(model_dir)
    if not 1 <= config.num_semantic_quantizers <= config.valid_num_quantizers <= config.num_quantizers:
        raise TTSError("model_load_failed", "the codec encoder's quantizer counts are inconsistent")
    with torch.device("meta"):
        encoder = CodecEncoder(config)
    load_weights(encoder, Path(model_dir) / CODEC_DIR / WEIGHTS_FILE, PREFIX, dtype=dtype, device=device,
                 skip=encoder.unused())
    rope = encoder.encoder_transformer.rotary_emb
    rope.inv_freq = rope.inv_freq.to(device)
    return encoder


__all__ = ["CodecEncoder", "CodecEncoderConfig", "load_codec_encoder", "read_codec_encoder_config"]
