"""The talker and code predictor as the project's own modules, loaded without transformers.

Why: the batched engine reads qwen-tts's modules only for their weights and a few
attributes (:mod:`.lean` does the math), so the serving path needs neither qwen-tts's
classes nor transformers behind them. These modules have qwen-tts's attribute and
parameter names (``talker.model.layers.N.self_attn.q_proj`` ...), so the state dict keys
are the checkpoint's and :class:`.batched.BatchedBackend` runs on them unchanged. They
hold weights; only what the engine or a prompt calls has a forward (rotary tables,
embeddings, the text projection).

Memory: built on the meta device and filled by :func:`.checkpoint.load_weights`, so each
weight exists once. The text embedding (151,936 rows; 1.2 GB at fp32 on the 0.6B model)
stays mmap'd on the CPU in its stored dtype: a prompt touches a few rows, each converted
on lookup - the same values qwen-tts's converted table holds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import TTSError
from .checkpoint import (
    WEIGHTS_FILE,
    DecoderStackConfig,
    ModelConfig,
    RopeConfig,
    TalkerConfig,
    load_weights,
    read_config,
)


class RMSNorm(nn.Module):
    """Qwen3's RMSNorm (``weight``, ``variance_epsilon``; :class:`.lean.Norm` computes it)."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size))
        self.variance_epsilon = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


class RotaryEmbedding(nn.Module):
    """transformers' default rope, computed as qwen-tts's rotary modules compute it:
    ``forward(x, position_ids (B, T))`` -> cos, sin (B, T, head_dim) in ``x``'s dtype."""

    def __init__(self, head_dim: int, rope: RopeConfig) -> None:
        super().__init__()
        exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").to(dtype=torch.float) / head_dim
        self.register_buffer("inv_freq", 1.0 / (rope.theta ** exponent), persistent=False)
        self.attention_scaling = 1.0   # the default rope type's

    @torch.no_grad()
    def forward(self, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        inv = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1).to(x.device)
        freqs = (inv @ position_ids[:, None, :].float()).transpose(1, 2)
        return self._cos_sin(freqs, x.dtype)

    def _cos_sin(self, freqs: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(dtype), (emb.sin() * self.attention_scaling).to(dtype)


class MultimodalRotaryEmbedding(RotaryEmbedding):
    """The talker's: ``position_ids`` (3, B, T) -> cos, sin (3, B, T, head_dim), one table per
    position component (for speech all three are equal; :mod:`.batched` uses the first)."""

    @torch.no_grad()
    def forward(self, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        inv = self.inv_freq[None, None, :, None].float().expand(3, position_ids.shape[1], -1, 1)
        freqs = (inv @ position_ids[:, :, None, :].float()).transpose(2, 3)
        return self._cos_sin(freqs, x.dtype)


class Attention(nn.Module):
    """q/k/v/o projections, per-head q/k norms (Identity where the model has none)."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, bias: bool,
                 layer_idx: int, qk_norm_eps: float | None) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = head_dim
        self.scaling = head_dim ** -0.5
        self.sliding_window: int | None = None   # the caller's mask, where there is one
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=bias)
        self.q_norm: nn.Module = nn.Identity() if qk_norm_eps is None else RMSNorm(head_dim, qk_norm_eps)
        self.k_norm: nn.Module = nn.Identity() if qk_norm_eps is None else RMSNorm(head_dim, qk_norm_eps)


class MLP(nn.Module):
    """SwiGLU: ``down(act(gate(x)) * up(x))``."""

    def __init__(self, hidden: int, intermediate: int, act: str) -> None:
        super().__init__()
        if act != "silu":
            raise TTSError("model_load_failed", f"activation {act!r} is not supported (only silu)")
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.act_fn = nn.SiLU()


class DecoderLayer(nn.Module):
    def __init__(self, c: DecoderStackConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = Attention(c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.heads_dim,
                                   c.attention_bias, layer_idx, c.rms_norm_eps)
        self.mlp = MLP(c.hidden_size, c.intermediate_size, c.hidden_act)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)


def _embedding(rows: int, dim: int) -> nn.Embedding:
    """An uninitialised table (the loader fills it): ``nn.Embedding``'s own init runs
    ``normal_``, which on the meta device imports torch._dynamo (3 s of a cold start)."""
    return nn.Embedding(rows, dim, _weight=torch.empty(rows, dim))


class MappedEmbedding(nn.Module):
    """An embedding table used where it lies: ``weight`` stays in its stored dtype (mmap'd
    by the loader); looked-up rows come out in ``dtype`` on ``device``. Converting the rows
    gives the values converting the whole table would."""

    def __init__(self, rows: int, dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, dim))
        self.dtype = dtype
        self.out_device = torch.device(device)

    def forward(self, ids: Tensor) -> Tensor:
        rows = F.embedding(ids.to(self.weight.device), self.weight)
        return rows.to(device=self.out_device, dtype=self.dtype)


class ResizeMLP(nn.Module):
    """The talker's text projection: ``fc2(silu(fc1(x)))``."""

    def __init__(self, size_in: int, intermediate: int, size_out: int, act: str) -> None:
        super().__init__()
        if act != "silu":
            raise TTSError("model_load_failed", f"activation {act!r} is not supported (only silu)")
        self.linear_fc1 = nn.Linear(size_in, intermediate, bias=True)
        self.linear_fc2 = nn.Linear(intermediate, size_out, bias=True)
        self.act_fn = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_fc2(self.act_fn(self.linear_fc1(x)))


class _Stack(nn.Module):
    def __init__(self, c: DecoderStackConfig) -> None:
        super().__init__()
        if c.use_sliding_window:
            raise TTSError("model_load_failed", "sliding-window attention in the talker / predictor is not supported")
        self.vocab_size = c.vocab_size
        self.layers = nn.ModuleList(DecoderLayer(c, i) for i in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class PredictorModel(_Stack):
    def __init__(self, c: DecoderStackConfig, embedding_dim: int) -> None:
        super().__init__(c)
        self.rotary_emb = RotaryEmbedding(c.heads_dim, c.rope)
        self.codec_embedding = nn.ModuleList(_embedding(c.vocab_size, embedding_dim)
                                             for _ in range(c.num_code_groups - 1))

    def get_input_embeddings(self) -> nn.ModuleList:
        return self.codec_embedding


class CodePredictor(nn.Module):
    """``talker.code_predictor``: codebooks 1..15 of a frame."""

    def __init__(self, c: DecoderStackConfig, talker_hidden: int) -> None:
        super().__init__()
        self.model = PredictorModel(c, talker_hidden)
        self.vocab_size = c.vocab_size
        self.lm_head = nn.ModuleList(nn.Linear(c.hidden_size, c.vocab_size, bias=False)
                                     for _ in range(c.num_code_groups - 1))
        self.small_to_mtp_projection: nn.Module = (
            nn.Linear(talker_hidden, c.hidden_size, bias=True) if c.hidden_size != talker_hidden else nn.Identity())

    def get_input_embeddings(self) -> nn.ModuleList:
        return self.model.get_input_embeddings()


class TalkerModel(_Stack):
    def __init__(self, c: TalkerConfig, dtype: torch.dtype, device: torch.device | str) -> None:
        super().__init__(c)
        self.rotary_emb = MultimodalRotaryEmbedding(c.heads_dim, c.rope)
        self.codec_embedding = _embedding(c.vocab_size, c.hidden_size)
        self.text_embedding = MappedEmbedding(c.text_vocab_size, c.text_hidden_size, dtype, device)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.codec_embedding


class Talker(nn.Module):
    """``model.talker``: codebook 0 of each frame, and the code predictor."""

    def __init__(self, c: TalkerConfig, dtype: torch.dtype, device: torch.device | str) -> None:
        super().__init__()
        self.config = c
        self.model = TalkerModel(c, dtype, device)
        self.text_projection = ResizeMLP(c.text_hidden_size, c.text_hidden_size, c.hidden_size, c.hidden_act)
        self.codec_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.code_predictor = CodePredictor(c.code_predictor_config, c.hidden_size)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def get_text_embeddings(self) -> MappedEmbedding:
        return self.model.text_embedding

    @property
    def device(self) -> torch.device:   # from a weight never quantized (or left unloaded)
        return self.model.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.norm.weight.dtype


class TalkerWeights:
    """What :class:`.batched.BatchedBackend` takes as ``engine.tts.model``: the talker (with
    its code predictor) and the config. Loaded by :func:`load_talker`."""

    def __init__(self, config: ModelConfig, talker: Talker) -> None:
        self.config = config
        self.talker = talker
        self.tts_model_type = config.tts_model_type
        self.tts_model_size = config.tts_model_size

    @property
    def device(self) -> torch.device:
        return self.talker.device

    def get_supported_speakers(self) -> list[str]:
        return self.config.speakers

    def get_supported_languages(self) -> list[str]:
        return self.config.languages


def fused_groups(module: nn.Module) -> list[tuple[str, ...]]:
    """The state-dict keys :mod:`.lean` fuses, per decoder layer: q/k/v, gate/up (weights,
    and biases where the layers have them)."""
    groups = []
    for name, layer in module.named_modules():
        if isinstance(layer, (Attention, MLP)):
            projs = ("q_proj", "k_proj", "v_proj") if isinstance(layer, Attention) else ("gate_proj", "up_proj")
            groups.append(tuple(f"{name}.{p}.weight" for p in projs))
            if getattr(layer, projs[0]).bias is not None:
                groups.append(tuple(f"{name}.{p}.bias" for p in projs))
    return groups


TEXT_TABLE = "model.text_embedding.weight"   # kept mmap'd in its stored dtype


def load_talker(model_dir: str | os.PathLike, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu", skip: Iterable[str] = ()) -> TalkerWeights:
    """The talker and code predictor of the checkpoint at ``model_dir``, in ``dtype`` on
    ``device`` (the text table excepted, see the module docstring). No transformers import.
    ``skip``: talker state-dict keys not read, left on the meta device (their quantized copies come from
    :mod:`.weight_cache`)."""
    config = read_config(model_dir)
    with torch.device("meta"):
        talker = Talker(config.talker_config, dtype, device)
    load_weights(talker, Path(model_dir) / WEIGHTS_FILE, "talker.", dtype=dtype, device=device,
                 mapped=[TEXT_TABLE], fused=fused_groups(talker), skip=skip)
    for rope in (talker.model.rotary_emb, talker.code_predictor.model.rotary_emb):
        rope.inv_freq = rope.inv_freq.to(device)
    return TalkerWeights(config, talker)


__all__ = ["CodePredictor", "RMSNorm", "RotaryEmbedding", "Talker", "TalkerWeights", "fused_groups", "load_talker"]
