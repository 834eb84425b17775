"""What a Qwen3-TTS checkpoint's ``config.json`` and ``generation_config.json`` say about
prompts: the variant, its speakers, dialects and languages, the special text and codec ids,
and the talker's generation settings - read as plain JSON, so the project's own prompt
path (:mod:`.prompts`) needs neither transformers nor qwen-tts's config classes.

Where a key is missing, the value is what qwen-tts's config classes default to
(``Qwen3TTSConfig`` / ``Qwen3TTSTalkerConfig``, qwen-tts 0.1.1), and the generation
settings merge as ``Qwen3TTSModel._merge_generate_kwargs`` merges them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TTSError

# Qwen3TTSConfig's defaults for the text-side special ids.
_TEXT_IDS = {"tts_bos_token_id": 151672, "tts_eos_token_id": 151673, "tts_pad_token_id": 151671}
# Qwen3TTSTalkerConfig's defaults.
_TALKER = {"vocab_size": 3072, "num_code_groups": 32, "hidden_act": "silu", "codec_eos_token_id": 4198,
           "codec_think_id": 4202, "codec_nothink_id": 4203, "codec_think_bos_id": 4204,
           "codec_think_eos_id": 4205, "codec_pad_id": 4196, "codec_bos_id": 4197}
# Qwen3TTSModel._merge_generate_kwargs: used where generation_config.json is silent.
GENERATION_DEFAULTS: dict[str, Any] = {
    "do_sample": True, "top_k": 50, "top_p": 1.0, "temperature": 0.9, "repetition_penalty": 1.05,
    "subtalker_dosample": True, "subtalker_top_k": 50, "subtalker_top_p": 1.0, "subtalker_temperature": 0.9,
    "max_new_tokens": 2048,
}
MIN_NEW_TOKENS = 2  # hard-coded in Qwen3TTSForConditionalGeneration.generate
SUPPRESSED_TAIL = 1024  # generate suppresses the talker vocabulary's last 1024 ids but EOS


@dataclass(frozen=True)
class ModelSpec:
    model_type: str                    # custom_voice | voice_design | base
    model_size: str                    # "0b6", "1b7"
    text_ids: dict[str, int]           # tts_bos/eos/pad token ids (text vocabulary)
    codec_ids: dict[str, int]          # talker config: codec_pad_id, codec_bos_id, ...
    vocab_size: int                    # talker (codebook 0 + control ids)
    num_code_groups: int
    hidden_act: str
    language_ids: dict[str, int]       # codec_language_id (dialects included)
    speaker_ids: dict[str, int]        # spk_id
    dialects: dict[str, Any]           # spk_is_dialect: speaker -> dialect language, or False
    generation: dict[str, Any] = field(default_factory=dict)  # generation_config.json

    @classmethod
    def load(cls, model_dir: str | Path) -> "ModelSpec":
        d = Path(model_dir)
        try:
            config = json.loads((d / "config.json").read_text(encoding="utf-8"))
            gen_path = d / "generation_config.json"
            generation = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.is_file() else {}
            return cls.of(config, generation)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise TTSError("model_load_failed", f"reading {d}'s config: {type(e).__name__}: {e}") from e

    @classmethod
    def of(cls, config: dict[str, Any], generation: dict[str, Any] | None = None) -> "ModelSpec":
        talker = config.get("talker_config") or {}
        t = {k: talker.get(k, v) for k, v in _TALKER.items()}
        return cls(
            model_type=str(config.get("tts_model_type")), model_size=str(config.get("tts_model_size")),
            text_ids={k: int(config.get(k, v)) for k, v in _TEXT_IDS.items()},
            codec_ids={k: int(v) for k, v in t.items() if k.startswith("codec_")},
            vocab_size=int(t["vocab_size"]), num_code_groups=int(t["num_code_groups"]),
            hidden_act=str(t["hidden_act"]),
            language_ids={str(k): int(v) for k, v in (talker.get("codec_language_id") or {}).items()},
            speaker_ids={str(k): int(v) for k, v in (talker.get("spk_id") or {}).items()},
            dialects=dict(talker.get("spk_is_dialect") or {}),
            generation=dict(generation or {}),
        )

    @property
    def languages(self) -> list[str]:
        """What a request may name: ``auto`` and every language that is not a dialect."""
        return sorted(["auto"] + [k for k in self.language_ids if "dialect" not in k])

    @property
    def speakers(self) -> list[str]:
        return sorted(self.speaker_ids)

    @property
    def takes_instruct(self) -> bool:
        """qwen-tts drops a CustomVoice instruct for 0.6B models (its substring test)."""
        return self.model_size not in "0b6"

    def language_id(self, language: str, speaker: str | None) -> int | None:
        """The codec language id of the prompt's think block (None: ``auto``, no block);
        a dialect speaker speaking Chinese or ``auto`` gets its dialect's id."""
        lang = language.lower()
        lid = None if lang == "auto" else self.language_ids[lang]
        if lang in ("chinese", "auto") and speaker and self.dialects[speaker.lower()] is not False:
            lid = self.language_ids[self.dialects[speaker.lower()]]
        return lid

    def talker_settings(self, max_new_tokens: int, sampling: dict[str, Any]) -> dict[str, Any]:
        """The talker's generation kwargs qwen-tts's ``generate`` passes it for a request with
        these sampling overrides (None: the checkpoint's default)."""
        def pick(name: str) -> Any:
            value = max_new_tokens if name == "max_new_tokens" else sampling.get(name)
            if value is not None:
                return value
            return self.generation.get(name, GENERATION_DEFAULTS[name])

        g = {name: pick(name) for name in GENERATION_DEFAULTS}
        eos = self.codec_ids["codec_eos_token_id"]
        return {
            "max_new_tokens": g["max_new_tokens"], "min_new_tokens": MIN_NEW_TOKENS,
            "do_sample": g["do_sample"], "top_k": g["top_k"], "top_p": g["top_p"], "temperature": g["temperature"],
            "subtalker_dosample": g["subtalker_dosample"], "subtalker_top_k": g["subtalker_top_k"],
            "subtalker_top_p": g["subtalker_top_p"], "subtalker_temperature": g["subtalker_temperature"],
            "eos_token_id": eos, "repetition_penalty": g["repetition_penalty"],
            "suppress_tokens": [i for i in range(self.vocab_size - SUPPRESSED_TAIL, self.vocab_size) if i != eos],
            "output_hidden_states": True, "return_dict_in_generate": True,
        }


__all__ = ["GENERATION_DEFAULTS", "ModelSpec"]
