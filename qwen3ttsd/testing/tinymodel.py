"""Random-weight Qwen3-TTS checkpoints in the exact layout of the real Hugging Face repos.

No machine that builds or tests this project can download weights, so everything that
touches the engine runs on a checkpoint this module writes: the unmodified
``Qwen3TTSModel.from_pretrained(dir)`` loads it offline, with the real special-token,
codec, speaker and language ids. ``size="tiny"`` gives a few-MB model whose generation
takes about 40 ms a frame on CPU; ``"0.6b"``/``"1.7b"`` give the real architecture sizes
with random weights, for GPU benchmarks (speed does not depend on weight values).

Random weights never emit the codec EOS by chance; ``eos="never"`` makes that certain
(the EOS row of the codec head is zeroed), so a generation's length is exactly
``max_new_tokens - 1`` frames.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..checkpoints import RANDOM_WEIGHTS_KEY  # read back by /health, the daemon's log, models list

# Ids of the real checkpoints (config.json of Qwen/Qwen3-TTS-12Hz-*).
TEXT_VOCAB_REGULAR = 151_643  # regular BPE entries; specials start right after
IM_START, IM_END = 151_644, 151_645
TTS_PAD, TTS_BOS, TTS_EOS = 151_671, 151_672, 151_673
CODEC_PAD, CODEC_BOS, CODEC_EOS = 2148, 2149, 2150
CODEC_THINK, CODEC_NOTHINK, CODEC_THINK_BOS, CODEC_THINK_EOS = 2154, 2155, 2156, 2157

SPEAKERS = {
    "serena": 3066, "vivian": 3065, "uncle_fu": 3010, "ryan": 3061, "aiden": 2861,
    "ono_anna": 2873, "sohee": 2864, "eric": 2875, "dylan": 2878,
}
SPEAKER_DIALECT: dict[str, str | bool] = {name: False for name in SPEAKERS}
SPEAKER_DIALECT.update(eric="sichuan_dialect", dylan="beijing_dialect")
LANGUAGES = {
    "chinese": 2055, "english": 2050, "german": 2053, "italian": 2070, "portuguese": 2071,
    "spanish": 2054, "japanese": 2058, "korean": 2064, "french": 2061, "russian": 2069,
    "beijing_dialect": 2074, "sichuan_dialect": 2062,
}

# The 33 added tokens of the Qwen2/Qwen3 family plus the TTS ones, at ids 151643..151675.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>",
    "</think>", "<|audio_start|>", "<|audio_end|>", "<tts_pad>", "<tts_text_bos>",
    "<tts_text_eod>", "<tts_text_bos_single>", "<|audio_pad|>",
]
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CORPUS = [
    "Hello world. This is a test of the speech server, with numbers like 42 and 3.14.",
    "The quick brown fox jumps over the lazy dog! How are you today? I'm fine, thanks.",
    "Bonjour le monde. Hallo Welt. Hola mundo. Ciao mondo. Olá mundo. Привет мир.",
    "你好，世界。今天天气很好。こんにちは世界。안녕하세요 세계.",
    "assistant user system speak slowly and warmly, a calm narrator voice.",
]

GENERATION_CONFIG = {
    "do_sample": True, "repetition_penalty": 1.05, "temperature": 0.9, "top_p": 1.0,
    "top_k": 50, "subtalker_dosample": True, "subtalker_temperature": 0.9,
    "subtalker_top_p": 1.0, "subtalker_top_k": 50, "max_new_tokens": 8192,
}

# Architecture sizes. "tiny" keeps every structural feature (GQA, mrope, sliding windows,
# the full conv stack) at toy widths.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        talker=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                    text_hidden_size=8, mrope_section=[2, 1, 1]),
        predictor=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=8),
        decoder=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                     latent_dim=16, codebook_dim=16, decoder_dim=32, sliding_window=72),
        encoder=dict(hidden_size=16, num_filters=4, num_hidden_layers=1,
                     intermediate_size=32, num_attention_heads=2, num_key_value_heads=2,
                     head_dim=8, codebook_dim=16, vector_quantization_hidden_dimension=16,
                     upsample_groups=16),
        speaker=dict(enc_channels=[16, 16, 16, 16, 48], enc_attention_channels=8,
                     enc_res2net_scale=2, enc_se_channels=8),
        tts_model_size="0b6",
    ),
    "0.6b": dict(
        talker=dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                    num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                    text_hidden_size=2048, mrope_section=[24, 20, 20]),
        predictor=dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=5,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128),
        decoder=dict(hidden_size=512, intermediate_size=1024, num_hidden_layers=8,
                     num_attention_heads=16, num_key_value_heads=16, head_dim=64,
                     latent_dim=1024, codebook_dim=512, decoder_dim=1536, sliding_window=72),
        encoder=dict(hidden_size=512, num_filters=64, num_hidden_layers=8,
                     intermediate_size=2048, num_attention_heads=8, num_key_value_heads=8,
                     head_dim=64, codebook_dim=256, vector_quantization_hidden_dimension=256,
                     upsample_groups=512),
        speaker=dict(enc_channels=[512, 512, 512, 512, 1536], enc_attention_channels=128,
                     enc_res2net_scale=8, enc_se_channels=128),
        tts_model_size="0b6",
    ),
}
# "tiny" whose code predictor's projections fit torch's int4 CPU kernel (engine/int4.py:
# input widths a multiple of 32, outputs of 16): the int4 tests' model.
SIZES["tiny-wide"] = dict(
    SIZES["tiny"],
    predictor=dict(SIZES["tiny"]["predictor"], hidden_size=32, intermediate_size=64, num_attention_heads=4,
                   num_key_value_heads=2),
)
SIZES["1.7b"] = dict(
    SIZES["0.6b"],
    talker=dict(SIZES["0.6b"]["talker"], hidden_size=2048, intermediate_size=6144),
    tts_model_size="1b7",
)
VARIANTS = ("custom_voice", "base", "voice_design")


def build_config(variant: str, size: str) -> dict[str, Any]:
    """config.json for a variant/size: real ids, real structure, the chosen widths."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    s = SIZES[size]
    t = dict(s["talker"])
    mrope = t.pop("mrope_section")
    talker = dict(
        t,
        vocab_size=3072, text_vocab_size=151_936, num_code_groups=16,
        hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_theta=1_000_000, attention_bias=False, use_sliding_window=False,
        rope_scaling={"interleaved": True, "mrope_section": mrope, "rope_type": "default",
                      "type": "default"},
        codec_eos_token_id=CODEC_EOS, codec_think_id=CODEC_THINK, codec_nothink_id=CODEC_NOTHINK,
        codec_think_bos_id=CODEC_THINK_BOS, codec_think_eos_id=CODEC_THINK_EOS,
        codec_pad_id=CODEC_PAD, codec_bos_id=CODEC_BOS,
        codec_language_id=dict(LANGUAGES),
        spk_id=dict(SPEAKERS) if variant == "custom_voice" else {},
        spk_is_dialect=dict(SPEAKER_DIALECT) if variant == "custom_voice" else {},
        code_predictor_config=dict(
            s["predictor"], vocab_size=2048, num_code_groups=16, hidden_act="silu",
            max_position_embeddings=65536, rms_norm_eps=1e-6, rope_theta=1_000_000,
            attention_bias=False, use_sliding_window=False, layer_types=None,
        ),
    )
    cfg: dict[str, Any] = dict(
        architectures=["Qwen3TTSForConditionalGeneration"],
        model_type="qwen3_tts",
        tokenizer_type="qwen3_tts_tokenizer_12hz",
        tts_model_type=variant,
        tts_model_size="1b7" if variant == "voice_design" and size == "tiny" else s["tts_model_size"],
        im_start_token_id=IM_START, im_end_token_id=IM_END,
        tts_pad_token_id=TTS_PAD, tts_bos_token_id=TTS_BOS, tts_eos_token_id=TTS_EOS,
        talker_config=talker,
    )
    if variant == "base":
        # The speaker encoder's x-vector is used as a talker input embedding: enc_dim == hidden.
        cfg["speaker_encoder_config"] = dict(s["speaker"], mel_dim=128,
                                             enc_dim=talker["hidden_size"], sample_rate=24000)
    return cfg


def build_codec_config(size: str) -> dict[str, Any]:
    """speech_tokenizer/config.json: Mimi encoder (12.5 Hz) + the 12 Hz causal decoder."""
    s = SIZES[size]
    return dict(
        architectures=["Qwen3TTSTokenizerV2Model"],
        model_type="qwen3_tts_tokenizer_12hz",
        encoder_valid_num_quantizers=16, input_sample_rate=24000, output_sample_rate=24000,
        decode_upsample_rate=1920, encode_downsample_rate=1920,
        encoder_config=dict(
            s["encoder"], sampling_rate=24000, frame_rate=12.5, audio_channels=1,
            num_residual_layers=1, upsampling_ratios=[8, 6, 5, 4], kernel_size=7,
            last_kernel_size=3, residual_kernel_size=3, dilation_growth_rate=2,
            use_causal_conv=True, pad_mode="constant", compress=2, codebook_size=2048,
            num_quantizers=32, num_semantic_quantizers=1, sliding_window=250,
            hidden_act="gelu", use_cache=False,
        ),
        decoder_config=dict(
            s["decoder"], codebook_size=2048, num_quantizers=16, num_semantic_quantizers=1,
            semantic_codebook_size=4096, upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2],
            hidden_act="silu", rms_norm_eps=1e-5, rope_theta=10000, max_position_embeddings=8000,
            layer_scale_initial_scale=0.01, attention_bias=False,
        ),
    )


def _write_tokenizer(out: Path) -> None:
    """Byte-level BPE with the Qwen2 split, padded so the 33 specials land on their real ids.

    The filler entries have no merges that produce them, so they are never emitted; a dense
    vocab matters because a sparse one makes every tokenizer copy print a huge warning.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(vocab_size=600, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    trainer_tok.train_from_iterator(_CORPUS * 4, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    vocab: dict[str, int] = dict(trained["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    next_id = len(vocab)
    while next_id < TEXT_VOCAB_REGULAR:
        vocab[f"<|filler_{next_id}|>"] = next_id
        next_id += 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    assert tok.token_to_id("<|im_start|>") == IM_START and tok.token_to_id("<tts_pad>") == TTS_PAD
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token=None, bos_token=None, model_max_length=131072, clean_up_tokenization_spaces=False,
        errors="replace", split_special_tokens=False,
    )
    fast.save_pretrained(str(out))


def _reinit_(module, seed: int) -> None:
    """Re-draw every parameter. HF's init leaves codebooks and decoder convs at zero, which
    would make the audio independent of the codes and hide decoding bugs."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1 and ("norm" in name or name.endswith("weight") and "norm" in name):
                p.fill_(1.0)
            elif "cluster_usage" in name:
                p.fill_(1.0)
            elif name.endswith(".alpha") or name.endswith(".beta"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith("scale") or name.endswith("gamma"):
                p.fill_(0.1)
            elif p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            else:
                fan_in = max(1, p[0].numel())
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def _calibrate_decoder_(decoder, seed: int) -> None:
    """Scale the last conv so random codes decode to rms ~0.1 (no clipping at ±1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2048, (1, decoder.config.num_quantizers, 24), generator=g)
    with torch.no_grad():
        last = decoder.decoder[-1].conv
        for _ in range(4):
            wav = decoder(codes)  # clamps to [-1, 1]; iterate so clipping cannot fool the scale
            rms = float(wav.pow(2).mean().sqrt())
            if rms <= 0:
                break
            last.weight.mul_(0.1 / rms)
            if last.bias is not None:
                last.bias.mul_(0.1 / rms)


def _pin_eos_(model) -> None:
    """Zero the codec-EOS row of the head: its logit is then exactly 0 while the sampled
    candidates (top-k of ~2048 unit-variance logits) all sit well above 0, so EOS is never
    drawn and a generation is exactly max_new_tokens - 1 frames long."""
    import torch

    with torch.no_grad():
        model.talker.codec_head.weight[CODEC_EOS].zero_()


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def build(out_dir: str | os.PathLike, variant: str = "custom_voice", size: str = "tiny",
          seed: int = 1234, eos: str = "never", dtype: str = "bfloat16") -> Path:
    """Write a loadable checkpoint directory and return its path.

    Deterministic: the same arguments give byte-identical files.
    """
    import torch
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2Config,
    )
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2Model,
    )

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}")
    if eos not in ("never", "random"):
        raise ValueError("eos must be never|random")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32,
                   "float16": torch.float16}[dtype]
    big = not size.startswith("tiny")

    cfg_dict = build_config(variant, size)
    cfg = Qwen3TTSConfig(**cfg_dict)
    torch.manual_seed(seed)
    model = Qwen3TTSForConditionalGeneration(cfg)
    if not big:
        _reinit_(model, seed)
    if eos == "never":
        _pin_eos_(model)
    model.to(torch_dtype).save_pretrained(str(out), safe_serialization=True)
    # Our own config.json, not save_pretrained's: the serialised sub-configs carry keys
    # (model_type, ...) that Qwen3TTSSpeakerEncoderConfig refuses on load, as the real
    # repos' hand-written config.json never has them.
    _write_json(out / "config.json", dict(cfg_dict, dtype=dtype, transformers_version="4.57.3",
                                          **{RANDOM_WEIGHTS_KEY: True}))
    with open(out / "generation_config.json", "w") as f:
        json.dump(GENERATION_CONFIG, f, indent=2)
    del model

    st = out / "speech_tokenizer"
    st.mkdir(exist_ok=True)
    codec_dict = build_codec_config(size)
    codec_cfg = Qwen3TTSTokenizerV2Config(**codec_dict)
    torch.manual_seed(seed + 1)
    codec = Qwen3TTSTokenizerV2Model(codec_cfg)
    _reinit_(codec, seed + 1)
    _calibrate_decoder_(codec.decoder, seed + 2)
    codec.save_pretrained(str(st), safe_serialization=True)
    _write_json(st / "config.json", dict(codec_dict, dtype="float32", transformers_version="4.57.3"))
    with open(st / "preprocessor_config.json", "w") as f:
        json.dump({
            "chunk_length_s": None, "feature_extractor_type": "EncodecFeatureExtractor",
            "feature_size": 1, "overlap": None, "padding_side": "right", "padding_value": 0.0,
            "return_attention_mask": True, "sampling_rate": 24000,
        }, f, indent=2)
    with open(st / "configuration.json", "w") as f:
        json.dump({"framework": "pytorch", "task": "feature-extraction"}, f)
    with open(out / "configuration.json", "w") as f:
        json.dump({"framework": "pytorch", "task": "text-to-speech"}, f)
    _write_tokenizer(out)
    with open(out / "preprocessor_config.json", "w") as f:
        json.dump({"processor_class": "Qwen3TTSProcessor"}, f)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="qwen3tts-ctl make-tiny-model",
                                 description="Write a random-weight Qwen3-TTS checkpoint.")
    ap.add_argument("dir")
    ap.add_argument("--variant", choices=VARIANTS, default="custom_voice")
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--eos", choices=("never", "random"), default="never")
    ap.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default="bfloat16")
    a = ap.parse_args(argv)
    path = build(a.dir, a.variant, a.size, a.seed, a.eos, a.dtype)
    print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
