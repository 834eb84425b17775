"""One loaded Qwen3-TTS model and what every backend shares: request validation (the
exact ``generate`` kwargs qwen-tts would build), clone-voice prompts, codec streams, and
:class:`AudioOut`, which turns a stream's frames into PCM chunks.

The first chunk leaves after ``first_chunk_frames`` frames (1 by default: ~80 ms of
audio), later ones every ``chunk_frames``, each decoded by the exact streaming decoder.
How frames are generated is a backend's business (:mod:`.batched`, :mod:`.sequential`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import TTSError
from ..formats import MODEL_RATE as SAMPLE_RATE
from . import host_sync, voice_cache
from .backend import VoiceSource
from .loader import LoadOptions, load_model
from .request import SynthesisRequest, SynthesisStats, checked, frame_budget  # noqa: F401 - frame_budget: re-exported
from .streaming_decoder import StreamingDecoder

log = logging.getLogger("qwen3ttsd.engine")

@dataclass
class VoicePrompt:
    """A Base-model clone prompt plus the decoder state primed with the reference codes."""

    key: str
    item: Any                 # qwen_tts VoiceClonePromptItem
    decoder_state: dict | None = None
    created: float = field(default_factory=time.time)


@dataclass
class CloneItem:
    """A clone prompt built by the project: qwen-tts's ``VoiceClonePromptItem`` fields."""

    ref_code: Any
    ref_spk_embedding: Any
    x_vector_only_mode: bool
    icl_mode: bool
    ref_text: str | None


class AudioOut:
    """Frames in, PCM chunks out: groups a stream's frames into chunks (the first after
    ``first_chunk_frames``, then every ``chunk_frames``), decodes each through the stream's
    decoder and hands it to ``on_audio``. Keeps the stream's stats."""

    def __init__(self, decoder: StreamingDecoder, req: "SynthesisRequest",
                 on_audio: Callable[[np.ndarray], None],
                 on_codes: Callable[[Any], None] | None = None) -> None:
        self.decoder = decoder
        self.on_audio = on_audio
        self.on_codes = on_codes
        self.first_n = max(1, int(req.first_chunk_frames))
        self.chunk_n = max(1, int(req.chunk_frames))
        self.pending: list[Any] = []
        self.stats = SynthesisStats()
        self.t0 = time.perf_counter()

    def add(self, frame) -> bool:
        """One (1, 16) frame of codes; True when a chunk is due (see :meth:`flush`)."""
        self.pending.append(frame)
        self.stats.frames += 1
        return len(self.pending) >= (self.first_n if self.stats.chunks == 0 else self.chunk_n)

    def flush(self) -> None:
        """Decode and hand over the pending frames (if any)."""
        if self.pending:
            self.emit(self.decoder.push(self.take())[0])

    def take(self):
        """The pending frames as (T, 16) codes, for a caller that decodes them itself."""
        import torch

        codes = torch.cat(self.pending, dim=0)
        self.pending.clear()
        if self.on_codes is not None:
            self.on_codes(codes)
        return codes

    def emit(self, audio) -> None:
        """Hand over the decoded audio (1-D tensor) of the frames last taken."""
        pcm = host_sync.pcm(audio)
        st = self.stats
        if st.first_audio_s is None:
            st.first_audio_s = time.perf_counter() - self.t0
        st.samples += pcm.shape[0]
        st.chunks += 1
        self.on_audio(pcm)

    def finish(self) -> SynthesisStats:
        self.stats.total_s = time.perf_counter() - self.t0
        return self.stats


def warmup_request(engine: "Engine") -> SynthesisRequest | None:
    """A 2-frame request that runs every kernel a first request needs (None for a Base
    model: it has no voice before a clone is registered)."""
    req = SynthesisRequest(text="Hi.", language="auto", max_frames=2, seed=0)
    if engine.model_type == "custom_voice":
        req.speaker = engine.speakers[0]
    elif engine.model_type == "voice_design":
        req.instruct = "neutral"
    else:
        return None
    return req


class Engine:
    """Owns one model. Thread-safe: generations are serialised by an internal lock."""

    def __init__(self, model_dir: str, options: LoadOptions = LoadOptions(),
                 voice_cache_size: int = 64) -> None:
        self.model_dir = model_dir
        self.options = options
        self.tts: Any = None
        self.own: tuple[Any, Any] | None = None   # (TalkerWeights, CodecDecoder) with weights="own"
        self.weight_cache: Any = None             # WeightCache of the own weights' quantized form, if any
        self._kept_key: str | None = None         # what kept clone registrations depend on (voice_cache.py)
        self.speaker_encoder: Any = None          # the own one (Base, weights="own" without qwen-tts)
        self.codec_encoder: Any = None            # the own one, loaded by the first ICL clone (ditto)
        self.load_info: dict[str, Any] = {}       # without qwen-tts (weights="own", not Base)
        self.lock = threading.Lock()
        self._voices: OrderedDict[str, VoicePrompt] = OrderedDict()
        self._voice_cache_size = voice_cache_size
        self.cache_hits = 0
        self.cache_misses = 0

    # --- lifecycle ---------------------------------------------------------------------

    def load(self) -> None:
        if self.options.weights not in ("qwen_tts", "own"):
            raise TTSError("bad_request", f"unknown weights loader {self.options.weights!r} (qwen_tts | own)")
        if self.options.weights == "own" and self._lean_load():
            return
        self.tts = load_model(self.model_dir, self.options)
        if self.options.weights == "own":
            device, dtype = self.tts.model.talker.device, self.tts.model.talker.dtype
            self.own = self._load_own(device, dtype)
        if self.model_type == "base":
            self._warm_speaker_encoder()

    def _lean_load(self) -> bool:
        """weights="own" without qwen-tts at all (issue 19): no transformers, qwen_tts or
        librosa import, weights by mmap. A Base checkpoint also gets the own speaker encoder
        (x-vectors); an ICL clone's reference codes need the own codec encoder, loaded when
        the first such clone registers (:meth:`_clone_item`)."""
        import time

        from .loader import resolve
        from .model_spec import ModelSpec

        try:
            spec = ModelSpec.load(self.model_dir)
        except (OSError, ValueError, KeyError) as e:
            raise TTSError("model_load_failed", f"reading {self.model_dir} failed: {e}") from e
        t0 = time.monotonic()
        device, dtype, _ = resolve(self.options)
        if self.options.threads > 0:
            import torch

            torch.set_num_threads(self.options.threads)
        self.spec = spec
        self.own = self._load_own(device, dtype)
        if spec.model_type == "base":
            from .speaker_encoder import load_speaker_encoder

            self.speaker_encoder = load_speaker_encoder(self.model_dir, dtype, device)
        self.load_info = {"path": str(self.model_dir), "device": device, "weights": "own",
                          "dtype": str(dtype).removeprefix("torch."), "load_s": round(time.monotonic() - t0, 3)}
        return True

    def _load_own(self, device: Any, dtype: Any) -> tuple[Any, Any]:
        """The project's own talker and codec decoder. Where quantized weights are cached
        (:mod:`.weight_cache`), the fp32 weights they replace are not read."""
        from .codec_model import load_codec_decoder
        from .talker_model import load_talker

        cache = self.weight_cache = self._open_weight_cache(device, dtype)
        skip = None if cache is None else cache.peek()
        reading = None
        if skip is not None:  # the cache is read (checked, repacked) while the rest loads
            reading = threading.Thread(target=cache.load, name="qwen3ttsd-weight-cache-read")
            reading.start()
        elif cache is not None:
            cache.load()   # a miss, or a bad file: reported and removed
        talker = load_talker(self.model_dir, dtype, device, skip=skip or ())
        codec = load_codec_decoder(self.model_dir, dtype, device)
        if reading is not None:
            reading.join()
            if not cache.hit:  # unusable after all: the skipped weights are needed
                talker = load_talker(self.model_dir, dtype, device)
        return talker, codec

    def _open_weight_cache(self, device: Any, dtype: Any) -> Any:
        """The weight cache for this load, where one applies: a quantized CPU backend and a
        cache directory."""
        from .lean import serving_int8

        o = self.options
        if not (o.cache_dir and serving_int8(o.quant, str(device).split(":")[0], dtype)):
            return None
        from .backend import int4_rows
        mode = "int8" if int4_rows(o.quant) == 0 else "int4"   # int4 adds copies (int4.py)
        from .checkpoint import WEIGHTS_FILE
        from .weight_cache import WeightCache

        try:
            cache = WeightCache(o.cache_dir, self.model_dir, ["config.json", WEIGHTS_FILE], mode, device, dtype)
        except OSError as e:
            log.warning("no weight cache for %s: %s", self.model_dir, e)
            return None
        cache.check = self._int8_layout_check()
        return cache

    def _int8_layout_check(self) -> Any:
        """The weight cache's structure check for this checkpoint's int8 layout (lean.py)."""
        from .checkpoint import read_config
        from .lean import int8_layout_problem

        talker = read_config(self.model_dir).talker_config
        predictor = talker.code_predictor_config
        return lambda value: int8_layout_problem(value, talker.num_hidden_layers, predictor.num_hidden_layers,
                                                 predictor.num_code_groups - 1)

    @property
    def loaded(self) -> bool:
        return self.tts is not None or self.own is not None

    @property
    def serving_model(self) -> Any:
        """What the batched engine runs: the own weights where loaded, else qwen-tts's model
        (both have ``talker`` with its code predictor, and ``config.talker_config``)."""
        return self.own[0] if self.own is not None else self.tts.model

    def _warm_speaker_encoder(self) -> None:
        """A clone prompt's first build compiles numba/kernels for the speaker encoder:
        paid at load, not on the first clone request. (Generation kernels are warmed by
        the backend, which runs its own path: :func:`warmup_request`.)"""
        sr = SAMPLE_RATE
        t = np.arange(sr) / sr
        wav = (0.2 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
        self.tts.create_voice_clone_prompt(ref_audio=(wav, sr), x_vector_only_mode=True)

    @property
    def info(self) -> dict:
        from .serving_size import memory_by_part

        if self.tts is None and self.own is None:
            return {"model_type": None, "size": None, "memory_bytes": None}
        load_info = self.load_info or getattr(self.tts, "load_info", {})
        return dict(load_info, model_type=self.model_type, size=self.serving_model.tts_model_size,
                    memory_bytes=memory_by_part(self.serving_model, self._codec_decoder),
                    weight_cache=None if self.weight_cache is None else dict(self.weight_cache.status))

    @property
    def model_type(self) -> str:
        return str(self.serving_model.tts_model_type)

    @property
    def speakers(self) -> list[str]:
        return sorted(str(s) for s in self.serving_model.get_supported_speakers())

    @property
    def languages(self) -> list[str]:
        return sorted(str(s) for s in self.serving_model.get_supported_languages())

    # --- voices (Base model clone prompts) ---------------------------------------------

    @staticmethod
    def voice_key(voice_id: str, wav: np.ndarray, ref_text: str | None) -> str:
        h = hashlib.sha256(np.ascontiguousarray(wav, dtype=np.float32).tobytes())
        h.update((ref_text or "").encode())
        return f"{voice_id}:{h.hexdigest()[:16]}"

    def add_voice(self, voice_id: str, wav: np.ndarray, sr: int, ref_text: str | None = None,
                  x_vector_only: bool | None = None, keep_dir: str | None = None) -> VoicePrompt:
        """Register (or refresh) a clone voice. Cached by id + content hash: a cache hit
        costs nothing; changed audio or text for the same id builds a new prompt. With
        ``keep_dir`` (a saved voice's directory) and the own weights, the registration is
        kept there for the next start (:mod:`.voice_cache`)."""
        if self.model_type != "base":
            raise TTSError("unsupported", f"voice cloning needs a Base model, loaded model is {self.model_type}")
        key = self.voice_key(voice_id, wav, ref_text)
        with self.lock:
            cached = self._voices.get(voice_id)
            if cached is not None and cached.key == key:
                self.cache_hits += 1
                self._voices.move_to_end(voice_id)
                return cached
            self.cache_misses += 1
            xvec = (not ref_text) if x_vector_only is None else x_vector_only
            keep = Path(keep_dir) if keep_dir and self.tts is None else None
            tag = voice_cache.registration_tag(key, xvec, self._checkpoint_key(), self._codec_decoder) if keep else ""
            kept = voice_cache.load(keep, tag, self._codec_decoder, self.serving_model.device) if keep else None
            if kept is not None:
                prompt = VoicePrompt(key=key, item=CloneItem(**kept[0]), decoder_state=kept[1])
            else:
                prompt = self._register(key, wav, sr, ref_text, xvec)
                if keep:
                    voice_cache.store(keep, tag, prompt.item, prompt.decoder_state, self._codec_decoder)
            self._voices[voice_id] = prompt
            while len(self._voices) > self._voice_cache_size:
                self._voices.popitem(last=False)
            return prompt

    def _register(self, key: str, wav: np.ndarray, sr: int, ref_text: str | None, xvec: bool) -> VoicePrompt:
        """A clone's prompt item, and an ICL clone's codec state primed with its reference."""
        try:
            item = self._clone_item(np.asarray(wav, dtype=np.float32), int(sr), ref_text or None, xvec)
        except ValueError as e:
            raise TTSError("bad_request", f"reference audio rejected: {e}") from e
        prompt = VoicePrompt(key=key, item=item)
        if item.ref_code is not None:
            dec = StreamingDecoder(self._codec_decoder)
            dec.prime(item.ref_code.to(self.serving_model.device))  # its state, not its audio
            prompt.decoder_state = dec.get_state()
        return prompt

    def _checkpoint_key(self) -> str:
        if self._kept_key is None:
            from .checkpoint import WEIGHTS_FILE

            root = Path(self.model_dir)
            self._kept_key = voice_cache.checkpoint_key([root / WEIGHTS_FILE, root / "speech_tokenizer" / WEIGHTS_FILE],
                                                        self._codec_decoder)
        return self._kept_key

    def _clone_item(self, wav: np.ndarray, sr: int, ref_text: str | None, xvec: bool) -> Any:
        """A clone's prompt item: qwen-tts's ``create_voice_clone_prompt`` where qwen-tts is
        loaded, else (the own weights) the same fields from the own modules - the clip
        resampled as librosa does, the x-vector from the own speaker encoder, an ICL clone's
        reference codes from the own codec encoder - each bitwise qwen-tts's."""
        if self.tts is not None:
            return self.tts.create_voice_clone_prompt(ref_audio=(wav, sr), ref_text=ref_text,
                                                      x_vector_only_mode=xvec)[0]
        from .resample import resample

        if not xvec and not ref_text:
            raise ValueError("ref_text is required for an ICL clone (x_vector_only_mode=False)")
        mono = resample(wav.mean(axis=-1).astype(np.float32) if wav.ndim > 1 else wav, sr, SAMPLE_RATE)
        code = None if xvec else self._own_codec_encoder().encode(mono)
        return CloneItem(ref_code=code, ref_spk_embedding=self.speaker_encoder.embed(mono),
                         x_vector_only_mode=xvec, icl_mode=not xvec, ref_text=ref_text)

    def _own_codec_encoder(self) -> Any:
        """The own codec encoder, loaded on first use (in the codec decoder's dtype and device)."""
        if self.codec_encoder is None:
            from .codec_encoder import load_codec_encoder

            t0 = time.monotonic()
            codec = self._codec_decoder
            self.codec_encoder = load_codec_encoder(self.model_dir, codec.dtype, codec.device)
            log.info("codec encoder loaded in %.2f s (ICL clone reference codes)", time.monotonic() - t0)
        return self.codec_encoder

    def drop_voice(self, voice_id: str) -> None:
        with self.lock:
            self._voices.pop(voice_id, None)

    @property
    def prompt_count(self) -> int:
        """Clone prompts cached in memory."""
        return len(self._voices)

    def clear_prompts(self) -> int:
        """Forget every cached clone prompt (rebuilt on next use); returns how many."""
        with self.lock:
            n = len(self._voices)
            self._voices.clear()
        return n

    # --- synthesis -----------------------------------------------------------------------

    def new_decoder(self) -> StreamingDecoder:
        return StreamingDecoder(self._codec_decoder)

    def owns_decoder(self, decoder: StreamingDecoder) -> bool:
        """Whether ``decoder`` streams this model's codec (a call may continue it)."""
        return decoder.decoder is self._codec_decoder

    def continuable(self, codec: StreamingDecoder | None) -> StreamingDecoder:
        """The codec stream a call's next segment runs on: the call's previous one when it
        belongs to this model (seamless join), else a fresh one."""
        return codec if codec is not None and self.owns_decoder(codec) else self.new_decoder()

    def use_voice(self, voice: VoiceSource | None) -> None:
        """Register a stream's clone voice (a no-op when cached with the same audio)."""
        if voice is not None:
            self.add_voice(voice.name, voice.wav, SAMPLE_RATE, voice.ref_text, keep_dir=voice.keep_dir)

    @property
    def _codec_decoder(self):
        return self.own[1] if self.own is not None else self.tts.model.speech_tokenizer.model.decoder

    def start_decoder(self, decoder: StreamingDecoder | None, prompt: VoicePrompt | None) -> StreamingDecoder:
        """The codec stream a generation continues: the caller's (a session's previous
        segment), else a fresh one, primed with an ICL clone's reference codes."""
        if decoder is None:
            decoder = self.new_decoder()
        if decoder.frames_seen == 0 and prompt is not None and prompt.decoder_state is not None:
            decoder.set_state(prompt.decoder_state)  # ICL clone: continue from the reference
        return decoder

    def prepare(self, req: SynthesisRequest) -> tuple[dict, VoicePrompt | None]:
        """Validate and build the exact ``model.generate`` kwargs the qwen-tts wrapper would
        (so outputs match it bit for bit), minus the final one-shot decode."""
        tts = self.tts
        text, language, cap, sampling = checked(req, self.languages)
        # qwen-tts returns max_new_tokens - 1 frames, and max_new_tokens=1 crashes.
        gen = tts._merge_generate_kwargs(max_new_tokens=max(2, int(cap) + 1), **sampling)
        input_ids = tts._tokenize_texts([tts._build_assistant_text(text)])
        mtype = self.model_type
        kw: dict[str, Any] = dict(input_ids=input_ids, languages=[language], **gen)
        prompt = None
        if mtype == "custom_voice":
            speaker = (req.speaker or "").lower()
            if speaker not in self.speakers:
                raise TTSError("bad_request", f"unknown speaker {req.speaker!r}; available: {self.speakers}")
            instruct = req.instruct if tts.model.tts_model_size not in "0b6" else None
            kw.update(speakers=[speaker], instruct_ids=[self._instruct_ids(instruct)],
                      non_streaming_mode=True)
        elif mtype == "voice_design":
            kw.update(instruct_ids=[self._instruct_ids(req.instruct)], non_streaming_mode=True)
        elif mtype == "base":
            if not req.voice:
                raise TTSError("bad_request", "a Base (clone) model needs a voice: register one first")
            prompt = self._voices.get(req.voice)
            if prompt is None:
                raise TTSError("not_found", f"voice {req.voice!r} is not registered")
            item = prompt.item
            ref_ids = [tts._tokenize_texts([tts._build_ref_text(item.ref_text)])[0]
                       if item.icl_mode and item.ref_text else None]
            kw.update(ref_ids=ref_ids, voice_clone_prompt=tts._prompt_items_to_voice_clone_prompt([item]),
                      non_streaming_mode=False)
        else:
            raise TTSError("unsupported", f"unknown model type {mtype!r}")
        return kw, prompt

    def _instruct_ids(self, instruct: str | None):
        if not instruct:
            return None
        return self.tts._tokenize_texts([self.tts._build_instruct_text(instruct)])[0]
