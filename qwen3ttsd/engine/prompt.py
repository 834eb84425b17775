"""A stream's talker prompt for a loaded :class:`.Engine`, two ways.

* :func:`own_prompt`: the project's :class:`.prompts.PromptBuilder` (no transformers, no
  qwen-tts code at build time, thread-safe), fed the loaded model's weights; what the
  batched backend uses by default.
* :func:`build_prompt`: qwen-tts's own ``Qwen3TTSForConditionalGeneration.generate``, its
  talker call intercepted before any decoding: the oracle the tests compare the builder
  with, and the ``qwen-tts`` prompt source. It patches the shared model for the call, so
  it runs on the engine thread only.

Both give every variant (CustomVoice speakers and instruct, VoiceDesign, Base x-vector /
ICL with streaming text input) qwen-tts's prompt: the prefill embeddings, the trailing text
fed one vector per frame, and the talker's generation settings.
"""

from __future__ import annotations

from typing import Any

from ..errors import TTSError
from .engine import Engine, SynthesisRequest
from .loader import derived
from .model_spec import ModelSpec
from .prompts import Prompt, PromptBuilder, PromptWeights
from .text_tokenizer import TextTokenizer


class _Captured(Exception):
    pass


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


def prompt_builder(engine: Engine) -> PromptBuilder:
    """The project's prompt builder for the engine's loaded model (built once per model,
    sharing its weights)."""
    model = engine.serving_model

    def build() -> PromptBuilder:
        spec = ModelSpec.load(engine.model_dir)
        if engine.own is not None:  # the own weights: the talker module holds them by their names
            weights = PromptWeights.from_tensors(
                lambda name: model.talker.get_parameter(name.removeprefix("talker.")).detach(),
                spec.num_code_groups)
        else:
            weights = PromptWeights.of_model(model, spec.num_code_groups)
        return PromptBuilder(spec, TextTokenizer.load(engine.model_dir), weights)

    return derived(model, "_qwen3ttsd_prompts", build)


def own_prompt(engine: Engine, req: SynthesisRequest) -> Prompt:
    """The project's prompt for ``req`` (any thread; :func:`prompt_builder` first built on
    one). A Base request's clone voice must be registered (``Engine.use_voice``)."""
    builder = prompt_builder(engine)
    voice = engine._voices.get(req.voice) if req.voice and builder.spec.model_type == "base" else None
    return builder.build(req, voice)


__all__ = ["Prompt", "build_prompt", "own_prompt", "prompt_builder"]
