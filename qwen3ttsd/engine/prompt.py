"""A stream's talker prompt, exactly as qwen-tts builds it.

Prompts are built by qwen-tts's own ``Qwen3TTSForConditionalGeneration.generate`` (its
talker call is intercepted before any decoding), so every variant (CustomVoice speakers
and instruct, VoiceDesign, Base x-vector / ICL with streaming text input) gets exactly
qwen-tts's prompt: the prefill embeddings, the trailing text fed one vector per frame, and
the talker's generation settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..errors import TTSError
from .engine import Engine, SynthesisRequest
from .loader import derived


class _Captured(Exception):
    pass


@dataclass
class Prompt:
    embeds: Tensor            # (1, L, D) talker prefill input
    trailing: Tensor          # (T, D) text fed one vector per frame, then ``pad``
    pad: Tensor               # (D,) tts_pad embedding
    settings: dict            # qwen-tts's talker generation kwargs (sampling, eos, ...)
    voice: Any                # VoicePrompt of a clone, else None


class _ConfigReads:
    """A read-only, caching view of a transformers config (nested configs too).

    qwen-tts's ``generate`` builds its suppressed-token list with two config reads per
    vocabulary entry; transformers' ``__getattribute__`` makes that thousands of slow reads,
    half of building a prompt (bench/RESULTS.md (Design measurements)). The values never change once loaded.
    """

    def __init__(self, config: Any) -> None:
        self._config = config

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._config, name)
        if type(value).__module__.startswith(("transformers.", "qwen_tts.")) and hasattr(value, "to_dict"):
            value = _ConfigReads(value)
        setattr(self, name, value)
        return value


def build_prompt(engine: Engine, req: SynthesisRequest) -> Prompt:
    """qwen-tts's own prompt for ``req``: runs its ``generate`` up to the talker call."""
    kwargs, voice = engine.prepare(req)
    model = engine.tts.model
    talker = model.talker
    seen: dict[str, Any] = {}

    def capture(**kw: Any) -> None:
        seen.update(kw)
        raise _Captured()

    config = model.config
    reads = derived(model, "_qwen3ttsd_config_reads", lambda: _ConfigReads(config))
    talker.generate = capture
    model.config = reads
    try:
        model.generate(**kwargs)
    except _Captured:
        pass
    finally:
        model.config = config
        del talker.generate  # back to the class method
    if not seen:
        raise TTSError("internal", "qwen-tts did not reach its talker call")
    mask = seen.pop("attention_mask")
    if not bool(mask.all()):
        raise TTSError("internal", "unexpected padding in a single-request prompt")
    return Prompt(embeds=seen.pop("inputs_embeds"), trailing=seen.pop("trailing_text_hidden")[0],
                  pad=seen.pop("tts_pad_embed").reshape(-1), settings=seen, voice=voice)


__all__ = ["Prompt", "build_prompt"]
