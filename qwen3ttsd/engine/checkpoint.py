"""A Qwen3-TTS checkpoint read without transformers: config.json as plain dataclasses,
safetensors opened by mmap.

Why: ``import transformers`` + ``import qwen_tts`` cost more than ``import torch`` on a
cold start, and qwen-tts's ``from_pretrained`` copies every weight into fresh memory. Here
``safetensors.safe_open`` maps each tensor from the file (measured: nothing is read until a
page is touched, and a tensor's mapping goes when the tensor does), so a weight stored in
the serving dtype is used in place, and one that needs converting is converted once,
tensor by tensor, its mapping dropped right after.

The dataclasses carry the fields the serving path reads, with the defaults of qwen-tts's
config classes where config.json leaves a field out; unknown keys are ignored, as
transformers does.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..errors import TTSError

C = TypeVar("C")

WEIGHTS_FILE = "model.safetensors"
CODEC_DIR = "speech_tokenizer"


def _from_dict(cls: type[C], d: dict[str, Any], **overrides: Any) -> C:
    """``cls`` from the keys of ``d`` it declares (others ignored), plus ``overrides``."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in d.items() if k in names}, **overrides)


@dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding settings. ``mrope_section``/``interleaved``: the talker's multimodal
    rope; for speech its three position components are equal, which makes it ordinary rope
    with the first component's angles (see :mod:`.lean`)."""

    theta: float = 10000.0
    rope_type: str = "default"
    mrope_section: tuple[int, ...] = ()
    interleaved: bool = False

    @classmethod
    def of(cls, d: dict[str, Any]) -> "RopeConfig":
        scaling = d.get("rope_scaling") or {}
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind != "default":
            raise TTSError("model_load_failed", f"rope type {kind!r} is not supported (only 'default')")
        return cls(theta=float(d.get("rope_theta", 10000.0)), rope_type=kind,
                   mrope_section=tuple(scaling.get("mrope_section") or ()),
                   interleaved=bool(scaling.get("interleaved", False)))


@dataclass(frozen=True)
class DecoderStackConfig:
    """What every Qwen3 decoder stack here shares (talker, code predictor)."""

    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 5
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int | None = None
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    attention_bias: bool = False
    use_sliding_window: bool = False
    vocab_size: int = 2048
    num_code_groups: int = 32
    rope: RopeConfig = field(default_factory=RopeConfig)

    @property
    def heads_dim(self) -> int:
        """qwen-tts's ``getattr(config, "head_dim", hidden_size // num_attention_heads)``."""
        return self.head_dim or self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class PredictorConfig(DecoderStackConfig):
    """``talker_config.code_predictor_config`` (qwen-tts's defaults)."""

    head_dim: int | None = 128


@dataclass(frozen=True)
class TalkerConfig(DecoderStackConfig):
    """``talker_config`` (qwen-tts's defaults), with the codec ids the prompts use."""

    hidden_size: int = 1024
    intermediate_size: int = 2048
    num_hidden_layers: int = 20
    num_key_value_heads: int = 2
    vocab_size: int = 3072
    text_vocab_size: int = 151936
    text_hidden_size: int = 2048
    codec_eos_token_id: int = 4198
    codec_think_id: int = 4202
    codec_nothink_id: int = 4203
    codec_think_bos_id: int = 4204
    codec_think_eos_id: int = 4205
    codec_pad_id: int = 4196
    codec_bos_id: int = 4197
    spk_id: dict[str, int] = field(default_factory=dict)
    spk_is_dialect: dict[str, Any] = field(default_factory=dict)
    codec_language_id: dict[str, int] = field(default_factory=dict)
    code_predictor_config: PredictorConfig = field(default_factory=PredictorConfig)


@dataclass(frozen=True)
class ModelConfig:
    """config.json of a Qwen3-TTS checkpoint (the talker side; the codec has its own)."""

    talker_config: TalkerConfig
    tts_model_type: str = "custom_voice"
    tts_model_size: str = ""
    tokenizer_type: str = ""
    im_start_token_id: int = 151644
    im_end_token_id: int = 151645
    tts_pad_token_id: int = 151671
    tts_bos_token_id: int = 151672
    tts_eos_token_id: int = 151673
    speaker_encoder_config: dict[str, Any] = field(default_factory=dict)

    @property
    def speakers(self) -> list[str]:
        return list(self.talker_config.spk_id)

    @property
    def languages(self) -> list[str]:
        """qwen-tts's ``get_supported_languages``: "auto" plus every non-dialect language."""
        return ["auto"] + [k for k in self.talker_config.codec_language_id if "dialect" not in k]


@dataclass(frozen=True)
class CodecDecoderConfig:
    """``speech_tokenizer/config.json``'s ``decoder_config`` (qwen-tts's defaults)."""

    codebook_size: int = 2048
    codebook_dim: int = 512
    hidden_size: int = 1024
    latent_dim: int = 1024
    max_position_embeddings: int = 8000
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    head_dim: int | None = None
    attention_bias: bool = False
    sliding_window: int = 72
    intermediate_size: int = 3072
    hidden_act: str = "silu"
    layer_scale_initial_scale: float = 0.01
    rms_norm_eps: float = 1e-5
    num_hidden_layers: int = 8
    num_quantizers: int = 16
    upsample_rates: tuple[int, ...] = (8, 5, 4, 3)
    upsampling_ratios: tuple[int, ...] = (2, 2)
    decoder_dim: int = 1536
    rope: RopeConfig = field(default_factory=RopeConfig)

    @property
    def heads_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


def _json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise TTSError("model_load_failed", f"no Qwen3-TTS checkpoint at {path.parent} ({path.name} missing)") from None
    except (OSError, ValueError) as e:
        raise TTSError("model_load_failed", f"unreadable {path}: {e}") from e
    if not isinstance(data, dict):
        raise TTSError("model_load_failed", f"{path} is not a JSON object")
    return data


def read_config(model_dir: str | os.PathLike) -> ModelConfig:
    """config.json of the checkpoint at ``model_dir``."""
    d = _json(Path(model_dir) / "config.json")
    t = dict(d.get("talker_config") or {})
    p = dict(t.get("code_predictor_config") or {})
    try:
        predictor = _from_dict(PredictorConfig, p, rope=RopeConfig.of(p))
        talker = _from_dict(TalkerConfig, {k: v for k, v in t.items() if k != "code_predictor_config"},
                            rope=RopeConfig.of(t), code_predictor_config=predictor)
        return _from_dict(ModelConfig, {k: v for k, v in d.items() if k != "talker_config"},
                          talker_config=talker)
    except TypeError as e:
        raise TTSError("model_load_failed", f"bad config.json in {model_dir}: {e}") from e


def read_codec_config(model_dir: str | os.PathLike) -> CodecDecoderConfig:
    """The codec decoder's settings from ``speech_tokenizer/config.json``."""
    d = dict(_json(Path(model_dir) / CODEC_DIR / "config.json").get("decoder_config") or {})
    for k in ("upsample_rates", "upsampling_ratios"):
        if k in d:
            d[k] = tuple(d[k])
    try:
        return _from_dict(CodecDecoderConfig, d, rope=RopeConfig.of(d))
    except TypeError as e:
        raise TTSError("model_load_failed", f"bad speech_tokenizer/config.json in {model_dir}: {e}") from e


# --- weights -----------------------------------------------------------------------------


def load_weights(module: torch.nn.Module, path: str | os.PathLike, prefix: str, *,
                 dtype: torch.dtype, device: str | torch.device = "cpu",
                 mapped: Iterable[str] = (), fused: Iterable[Sequence[str]] = (),
                 skip: Iterable[str] = ()) -> None:
    """Fill ``module`` (built on the meta device) from the safetensors file at ``path``:
    the tensors named ``prefix + <the module's state_dict key>``, every one required.

    A tensor already in ``dtype`` on the CPU is used in place (mmap'd, read on first touch);
    others are converted/moved once. ``mapped`` keys stay in the stored dtype, mmap'd on
    the CPU, whatever ``dtype``/``device`` are (large tables read a few rows at a time).
    Each group in ``fused`` (keys of tensors with the same trailing shape) is written into
    one new buffer, each key a block of its rows: the fused q/k/v and gate/up projections
    of :mod:`.lean` are then views, not another copy. Tensors outside ``prefix`` are not read,
    nor those in ``skip`` (a group only when all its keys are): they stay on the meta device
    (shapes, no memory), their quantized copies serving instead (:mod:`.weight_cache`)."""
    keep = set(mapped)
    wanted = module.state_dict(keep_vars=True)
    state: dict[str, torch.Tensor] = {}
    skipped = set(skip) & set(wanted)
    fused = [g for g in fused if not skipped.issuperset(g)]
    skipped -= {name for g in fused for name in g}
    in_place: list[str] = []
    try:
        # Two passes, because one file is one mapping, alive while any tensor from it is:
        # the converted tensors' source pages would stay resident beside their copies.
        with _open(path) as f:
            _check_names(f, path, prefix, wanted)
            for group in fused:
                parts = [_checked(f, path, prefix, name, wanted[name]) for name in group]
                buf = torch.empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]), dtype=dtype, device=device)
                row = 0
                for name, part in zip(group, parts):
                    state[name] = buf[row:row + part.shape[0]]
                    state[name].copy_(part)
                    row += part.shape[0]
            for name, like in wanted.items():
                if name in state or name in skipped:
                    continue
                t = _checked(f, path, prefix, name, like)
                converted = t.to(device=device, dtype=dtype) if t.is_floating_point() and name not in keep else t
                if converted is t:
                    in_place.append(name)
                else:
                    state[name] = converted
        if in_place:
            with _open(path) as f:
                state.update((name, f.get_tensor(prefix + name)) for name in in_place)
    except TTSError:
        raise
    except Exception as e:
        raise TTSError("model_load_failed", f"reading {path} failed: {type(e).__name__}: {e}") from e
    missing = module.load_state_dict(state, strict=False, assign=True).missing_keys
    if set(missing) != skipped:
        raise TTSError("model_load_failed", f"{path}: not loaded: {sorted(set(missing) - skipped)[:3]}")
    module.requires_grad_(False)
    module.eval()


def _open(path: str | os.PathLike) -> Any:
    from safetensors import safe_open

    return safe_open(str(path), framework="pt")


def _checked(f: Any, path: str | os.PathLike, prefix: str, name: str, like: torch.Tensor) -> torch.Tensor:
    t = f.get_tensor(prefix + name)
    if t.shape != like.shape:
        raise TTSError("model_load_failed",
                       f"{path}: {prefix + name} has shape {tuple(t.shape)}, expected {tuple(like.shape)}")
    return t


def _check_names(f: Any, path: str | os.PathLike, prefix: str, wanted: dict[str, Any]) -> None:
    """Every tensor the module has, and nothing else under ``prefix``."""
    present = set(f.keys())
    missing = [prefix + k for k in wanted if prefix + k not in present]
    if missing:
        raise TTSError("model_load_failed", f"{path}: missing {len(missing)} tensors, e.g. {missing[:3]}")
    unknown = sorted(k for k in present if k.startswith(prefix) and k[len(prefix):] not in wanted)
    if unknown:
        raise TTSError("model_load_failed", f"{path}: unexpected tensors, e.g. {unknown[:3]}")


__all__ = ["CODEC_DIR", "WEIGHTS_FILE", "CodecDecoderConfig", "ModelConfig", "PredictorConfig", "RopeConfig",
           "TalkerConfig", "load_weights", "read_codec_config", "read_config"]
