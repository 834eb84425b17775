"""A stream's talker prompt, built by the project from plain weights: qwen-tts's prompt,
without running qwen-tts.

qwen-tts builds a talker prompt inside ``Qwen3TTSForConditionalGeneration.generate``; using
it means importing transformers and qwen-tts and running their ``generate`` up to the
talker call on the engine thread (:mod:`.prompt`). :class:`PromptBuilder` does the same
assembly from the checkpoint's JSON (:class:`.model_spec.ModelSpec`), its text tokenizer
(:class:`.text_tokenizer.TextTokenizer`) and four weights (:class:`PromptWeights`: the text
embedding, the text projection MLP, the codec embeddings), so it can later run from
safetensors alone, and is thread-safe (any thread may build while the engine steps).

Every variant: CustomVoice speakers (dialects, instruct on 1.7B), VoiceDesign (instruct),
Base x-vector and ICL clones (the clone's x-vector and reference codes come from the engine's
``VoicePrompt``: the own encoders, or qwen-tts's ``create_voice_clone_prompt``), ``auto`` and
explicit languages. The math is qwen-tts's, op for op: the text projection runs on the same
slices of ids qwen-tts projects (a matrix product's rounding can depend on its row count),
and the reference codes' embeddings are summed the same way, so the embeddings are
bitwise qwen-tts's on the same kernels (tests: ``test_prompts.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import TTSError
from .model_spec import ModelSpec
from .request import SynthesisRequest, checked
from .text_tokenizer import TextTokenizer

# Checkpoint names (model.safetensors) of the weights a prompt needs.
TEXT_EMBEDDING = "talker.model.text_embedding.weight"
CODEC_EMBEDDING = "talker.model.codec_embedding.weight"
PROJECTION = "talker.text_projection.linear_fc{}.{}"
CODE_EMBEDDING = "talker.code_predictor.model.codec_embedding.{}.weight"


@dataclass
class Prompt:
    """A stream's talker prompt. Its tensors may share storage with the builder's constants
    (``pad`` always does): read them, never modify them in place."""

    embeds: Tensor            # (1, L, D) talker prefill input
    trailing: Tensor          # (T, D) text fed one vector per frame, then ``pad``
    pad: Tensor               # (D,) tts_pad embedding
    settings: dict            # qwen-tts's talker generation kwargs (sampling, eos, ...)
    voice: Any                # VoicePrompt of a clone, else None


@dataclass(frozen=True)
class PromptWeights:
    """The weights a prompt is made of, as plain tensors (the model's dtype and device)."""

    text_embedding: Tensor              # (text vocab, text hidden); may be narrower (stored bf16)
    fc1: tuple[Tensor, Tensor]          # text projection: weight, bias (text hidden -> text hidden)
    fc2: tuple[Tensor, Tensor]          # weight, bias (text hidden -> talker hidden)
    codec_embedding: Tensor             # (talker vocab, hidden): codebook 0 and the control ids
    code_embeddings: tuple[Tensor, ...]  # codebooks 1.. (the code predictor's), for ICL reference codes

    @classmethod
    def from_tensors(cls, get: Callable[[str], Tensor], num_code_groups: int) -> "PromptWeights":
        """By checkpoint name: ``get`` may read a safetensors file or a loaded model."""
        return cls(text_embedding=get(TEXT_EMBEDDING),
                   fc1=(get(PROJECTION.format(1, "weight")), get(PROJECTION.format(1, "bias"))),
                   fc2=(get(PROJECTION.format(2, "weight")), get(PROJECTION.format(2, "bias"))),
                   codec_embedding=get(CODEC_EMBEDDING),
                   code_embeddings=tuple(get(CODE_EMBEDDING.format(i)) for i in range(num_code_groups - 1)))

    @classmethod
    def of_model(cls, model: Any, num_code_groups: int) -> "PromptWeights":
        """From a loaded qwen-tts ``Qwen3TTSForConditionalGeneration`` (shares its storage)."""
        return cls.from_tensors(lambda name: model.get_parameter(name).detach(), num_code_groups)


# transformers' ACT2FN entries the projection may name, as plain functions.
_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"silu": F.silu, "swish": F.silu}


class PromptBuilder:
    """Requests -> :class:`Prompt`, for one loaded checkpoint (see the module docstring)."""

    def __init__(self, spec: ModelSpec, tokenizer: TextTokenizer, weights: PromptWeights) -> None:
        if spec.hidden_act not in _ACTIVATIONS:
            raise TTSError("model_load_failed", f"text projection activation {spec.hidden_act!r} is not supported")
        self.spec = spec
        self.tokenizer = tokenizer
        self.w = weights
        self.device = weights.codec_embedding.device
        self.dtype = weights.codec_embedding.dtype
        self._act = _ACTIVATIONS[spec.hidden_act]
        self._ids = spec.codec_ids
        with torch.inference_mode():  # tts_bos, tts_eos, tts_pad: the same for every prompt
            t = spec.text_ids
            special = self._text([[t["tts_bos_token_id"], t["tts_eos_token_id"], t["tts_pad_token_id"]]])
            self._bos, self._eos, self._pad = special.chunk(3, dim=1)

    # --- request -> prompt ---------------------------------------------------------------

    def build(self, req: SynthesisRequest, voice: Any = None) -> Prompt:
        """The prompt of ``req`` (``voice``: the registered clone a Base request names).
        Bad requests raise ``TTSError`` with the messages of :meth:`.Engine.prepare`."""
        language, speaker, instruct, settings = self._request(req, voice)
        with torch.inference_mode():
            embeds, trailing = self._assemble(self.tokenizer.assistant_ids(req.text.strip()), language, speaker,
                                              instruct, None if voice is None else voice.item)
        return Prompt(embeds=embeds, trailing=trailing[0], pad=self._pad.reshape(-1), settings=settings,
                      voice=voice)

    def build_streaming(self, req: SynthesisRequest, voice: Any, ids: list[int], final: bool) -> Prompt:
        """qwen-tts's streaming-text prompt (``non_streaming_mode=False``) of text whose
        first tokens are ``ids`` (``req.text``: that text, for the checks and the frame cap):
        ``ids[0]`` in the prompt, the rest trailing, each projected alone
        (:meth:`project_each`, so any split of the text gives the same vectors), then
        ``tts_eos`` when ``final``. An ICL clone's prompt holds the text that overlaps
        its reference codes: it is built from the whole text only (``final``)."""
        language, speaker, instruct, settings = self._request(req, voice)
        clone = None if voice is None else voice.item
        icl = clone is not None and clone.icl_mode
        if not ids or (icl and not final):
            raise TTSError("internal", "a streaming prompt needs its first token (an ICL clone: all of them)")
        wrap = self.tokenizer.assistant_ids("")
        with torch.inference_mode():
            embeds, trailing = self._assemble(wrap[:3] + ids + wrap[3:], language, speaker, instruct, clone,
                                              streaming=True)
            if not icl:
                parts = [self.project_each(ids[1:])] + ([self._eos[0]] if final else [])
                trailing = torch.cat(parts)[None]
        return Prompt(embeds=embeds, trailing=trailing[0], pad=self._pad.reshape(-1), settings=settings,
                      voice=voice)

    def project_each(self, ids: list[int]) -> Tensor:
        """Trailing text vectors (n, D) of ``ids``, each projected on its own."""
        if not ids:
            return self._pad.reshape(1, -1)[:0]
        return torch.cat([self._project(self._tensor([[i]]))[0] for i in ids])

    @property
    def eos(self) -> Tensor:
        """The ``tts_eos`` vector (D,) that ends the trailing text."""
        return self._eos.reshape(-1)

    def _request(self, req: SynthesisRequest, voice: Any) -> tuple[str, str | None, str | None, dict]:
        """The request's language, speaker, instruct and talker settings, checked."""
        spec = self.spec
        text, language, cap, sampling = checked(req, spec.languages)
        # qwen-tts returns max_new_tokens - 1 frames, and max_new_tokens=1 crashes.
        settings = spec.talker_settings(max(2, int(cap) + 1), sampling)
        speaker = instruct = None
        if spec.model_type == "custom_voice":
            speaker = (req.speaker or "").lower()
            if speaker not in spec.speaker_ids:
                raise TTSError("bad_request", f"unknown speaker {req.speaker!r}; available: {spec.speakers}")
            instruct = req.instruct if spec.takes_instruct else None
        elif spec.model_type == "voice_design":
            instruct = req.instruct
        elif spec.model_type == "base":
            if not req.voice:
                raise TTSError("bad_request", "a Base (clone) model needs a voice: register one first")
            if voice is None:
                raise TTSError("not_found", f"voice {req.voice!r} is not registered")
        else:
            raise TTSError("unsupported", f"unknown model type {spec.model_type!r}")
        return language, speaker, instruct, settings

    # --- assembly (qwen-tts's generate, one request) -------------------------------------

    def _assemble(self, text_ids: list[int], language: str, speaker: str | None, instruct: str | None,
                  clone: Any, streaming: bool = False) -> tuple[Tensor, Tensor]:
        ids = self._tensor([text_ids])
        pad, bos, eos = self._pad, self._bos, self._eos
        codec = self._codec_head(self.spec.language_id(language, speaker), speaker, clone)
        role = self._project(ids[:, :3])  # <|im_start|>assistant\n
        head = torch.cat((pad.expand(-1, codec.shape[1] - 2, -1), bos), dim=1) + codec[:, :-1]
        embeds = torch.cat((role, head), dim=1)
        words = ids[:, 3:-5]  # the text itself, without the chat wrapping
        if clone is not None and clone.icl_mode:
            if not clone.ref_text or clone.ref_code is None:
                raise TTSError("internal", "an ICL clone prompt without its reference text or codes")
            ref_words = self._tensor([self.tokenizer.ref_ids(clone.ref_text)])[:, 3:-2]
            icl, trailing = self._icl(words, ref_words, clone.ref_code.to(self.device))
            embeds = torch.cat([embeds, icl], dim=1)
        elif clone is None and not streaming:  # CustomVoice / VoiceDesign: the whole text in the prompt
            pads = self._codec([[self._ids["codec_pad_id"]] * (words.shape[1] + 1)])
            body = torch.cat((self._project(words), eos), dim=1) + pads
            embeds = torch.cat([embeds, body, pad + self._codec([[self._ids["codec_bos_id"]]])], dim=1)
            trailing = pad
        else:  # x-vector clone, or streaming text: the text streams in, one token per frame
            embeds = torch.cat([embeds, self._project(ids[:, 3:4]) + codec[:, -1:]], dim=1)
            trailing = torch.cat((self._project(ids[:, 4:-5]), eos), dim=1)
        if instruct:
            embeds = torch.cat([self._project(self._tensor([self.tokenizer.instruct_ids(instruct)])), embeds], dim=1)
        return embeds, trailing

    def _codec_head(self, language_id: int | None, speaker: str | None, clone: Any) -> Tensor:
        """Think block (with the language), speaker, codec pad + bos: (1, 5 or 6, D)."""
        c = self._ids
        if language_id is None:
            think = [[c["codec_nothink_id"], c["codec_think_bos_id"], c["codec_think_eos_id"]]]
        else:
            think = [[c["codec_think_id"], c["codec_think_bos_id"], language_id, c["codec_think_eos_id"]]]
        if clone is not None:
            spk = (clone.ref_spk_embedding.to(self.device).to(self.dtype)
                   if clone.x_vector_only_mode or clone.icl_mode else None)
        elif speaker:
            spk = F.embedding(torch.tensor(self.spec.speaker_ids[speaker], device=self.device),
                              self.w.codec_embedding)
        else:
            spk = None
        parts = [self._codec(think)] + ([] if spk is None else [spk.view(1, 1, -1)])
        return torch.cat(parts + [self._codec([[c["codec_pad_id"], c["codec_bos_id"]]])], dim=1)

    def _icl(self, text_ids: Tensor, ref_ids: Tensor, ref_code: Tensor) -> tuple[Tensor, Tensor]:
        """qwen-tts's ``generate_icl_prompt`` in streaming-text mode (what Base prompts use):
        reference + target text over the reference codes; the text that is left trails."""
        text = torch.cat([self._project(torch.cat([ref_ids, text_ids], dim=-1)), self._eos], dim=1)
        tables = (self.w.codec_embedding,) + self.w.code_embeddings
        codes = torch.cat([F.embedding(ref_code[:, i:i + 1], tables[i]) for i in range(len(tables))], dim=1)
        codes = torch.cat([self._codec([[self._ids["codec_bos_id"]]]), codes.sum(1).unsqueeze(0)], dim=1)
        n_text, n_codes = text.shape[1], codes.shape[1]
        if n_text > n_codes:
            return text[:, :n_codes] + codes, text[:, n_codes:]
        text = torch.cat([text] + [self._pad] * (n_codes - n_text), dim=1)
        return text + codes, self._pad

    # --- pieces ----------------------------------------------------------------------------

    def _tensor(self, ids: list[list[int]]) -> Tensor:
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def _codec(self, ids: list[list[int]]) -> Tensor:
        return F.embedding(self._tensor(ids), self.w.codec_embedding)

    def _text(self, ids: list[list[int]]) -> Tensor:
        return self._project(self._tensor(ids))

    def _project(self, ids: Tensor) -> Tensor:
        """The talker's text projection of the text embeddings of ``ids`` (1, n). A table kept
        at a narrower stored dtype (bf16 beside an fp32 model) is widened row by row: exactly
        the values of a widened table."""
        (w1, b1), (w2, b2) = self.w.fc1, self.w.fc2
        table = self.w.text_embedding  # may stay on the CPU (mmap'd) beside a CUDA model
        rows = F.embedding(ids.to(table.device), table).to(device=w1.device, dtype=w1.dtype)
        return F.linear(self._act(F.linear(rows, w1, b1)), w2, b2)


__all__ = ["Prompt", "PromptBuilder", "PromptWeights"]
