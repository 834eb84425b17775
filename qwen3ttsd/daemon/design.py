"""``voices.design``: a voice described in words becomes a saved clone voice.

OpenAI's ``POST /v1/audio/voices`` with ``type: "prompt"`` makes a voice from a description.
Here the VoiceDesign checkpoint speaks a short script in the described voice, and that clip
is saved like an uploaded reference (:class:`.voices.VoiceStore`), so the voice is then
spoken by the Base checkpoint on every surface (HTTP, WebSocket, Wyoming, the page) and,
unlike a description, sounds the same on every request. Both checkpoints are needed; without
one the answer is ``model_missing`` naming the ``qwen3tts-ctl models pull`` to run.

The script's generation is bounded (:data:`MAX_SCRIPT_S`): a random or confused model never
ends on its own, and a reference longer than that adds nothing to a clone.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import numpy as np

from .. import checkpoints, messages as M
from ..audio import AudioFormatError
from ..audio.reference import process_reference
from ..checkpoints import ModelEntry
from ..errors import TTSError
from ..formats import FRAME_SAMPLES, MODEL_RATE
from ..text.language import canonical_language, detect_language
from .job import Audio, Failed, Job, JobDone
from .server import Connection
from .state import DaemonState
from .voices import NAME

MAX_SCRIPT_S = 10.0     # the designed clip's length cap: 3-10 s is what cloning wants
MAX_SCRIPT_FRAMES = int(MAX_SCRIPT_S * MODEL_RATE / FRAME_SAMPLES)
FALLBACK_LANGUAGE = "english"
# What the described voice says when the request gives no script_hint, per language.
SCRIPTS = {
    "english": "Hello! This is my voice. I hope you enjoy listening to it as much as I enjoy speaking.",
    "chinese": "你好！这是我的声音。希望你喜欢听我说话，就像我喜欢和你聊天一样。",
    "japanese": "こんにちは。これが私の声です。楽しんで聞いていただけたらうれしいです。",
    "korean": "안녕하세요. 이것이 제 목소리입니다. 즐겁게 들어 주시면 좋겠습니다.",
    "german": "Hallo! Das ist meine Stimme. Ich hoffe, Sie hören mir so gern zu, wie ich spreche.",
    "french": "Bonjour ! Voici ma voix. J'espère que vous aimerez l'écouter autant que j'aime parler.",
    "russian": "Здравствуйте! Это мой голос. Надеюсь, вам понравится его слушать.",
    "portuguese": "Olá! Esta é a minha voz. Espero que goste de a ouvir tanto quanto eu gosto de falar.",
    "spanish": "¡Hola! Esta es mi voz. Espero que disfrutes escuchándola tanto como yo hablando.",
    "italian": "Ciao! Questa è la mia voce. Spero che ti piaccia ascoltarla quanto a me piace parlare.",
}


def design_models(svc: DaemonState) -> tuple[ModelEntry, ModelEntry]:
    """The VoiceDesign checkpoint that speaks the script and the Base one that will clone it."""
    by_type = {e.type: e for e in reversed(list(svc.registry.entries.values()))}  # the first of each type
    missing = [t for t in ("voice_design", "base") if t not in by_type]
    if missing:
        hints = " and ".join(checkpoints.pull_hint(t) for t in missing)
        raise TTSError("model_missing", f"designing a voice needs a VoiceDesign and a Base checkpoint: {hints}",
                       data={"missing": missing})
    return by_type["voice_design"], by_type["base"]


def script_language(msg: M.VoicesDesign, design: ModelEntry, base: ModelEntry) -> str:
    """The request's language; ``auto``: the script's (or prompt's) if clear, else English."""
    language = canonical_language(msg.language)
    if language == "auto":
        detected, confidence = detect_language(msg.script_hint or msg.prompt)
        language = detected if confidence >= 0.8 and detected in SCRIPTS else FALLBACK_LANGUAGE
    for entry in (design, base):
        if language not in entry.languages:
            raise TTSError("bad_request", f"unsupported language {msg.language!r}; {entry.name} speaks "
                           f"{entry.languages}", data={"param": "language"})
    return language


class Design:
    """``voices.design`` over the service's registry, scheduler and voice store."""

    def __init__(self, svc: DaemonState) -> None:
        self.svc = svc

    async def design(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.VoiceInfo:
        svc = self.svc
        msg = M.VoicesDesign.from_wire(params)
        if msg.name.lower() in svc.all_speakers():
            raise TTSError("bad_request", f"{msg.name!r} is a built-in speaker name", data={"param": "name"})
        if not NAME.match(msg.name):  # before the generation, not after it
            raise TTSError("bad_request", "voice name must be 1-64 of letters, digits, '_', '-', '.'",
                           data={"param": "name"})
        design, base = design_models(svc)
        language = script_language(msg, design, base)
        script = (msg.script_hint or SCRIPTS.get(language, SCRIPTS[FALLBACK_LANGUAGE])).strip()
        pcm = await self._speak(design, script, language, msg)
        try:
            wav = await asyncio.to_thread(process_reference, _wav_bytes(pcm))
        except AudioFormatError as e:
            raise TTSError("internal", f"the designed clip is unusable ({e}); try another seed or prompt") from e
        meta = {"type": "prompt", "prompt": msg.prompt, "designed_with": design.name, "clone_model": base.name,
                "consent": "designed from a description (no real speaker)", "added_by_uid": conn.uid}
        info = await asyncio.to_thread(svc.voices.add, msg.name, wav, script, meta)
        for lm in list(svc.registry.loaded.values()):  # an older voice of that name: its prompt is stale
            lm.model.drop_voice(msg.name)
        return M.VoiceInfo.from_wire(info)

    async def _speak(self, design: ModelEntry, script: str, language: str, msg: M.VoicesDesign) -> Any:
        """The script in the described voice: float32 mono at the model rate."""
        svc = self.svc
        job = Job(model=design, segments=[script], loop=asyncio.get_running_loop(), seed=msg.seed,
                  request={"language": language, "instruct": msg.prompt, "max_frames": MAX_SCRIPT_FRAMES,
                           "first_chunk_frames": svc.cfg.first_chunk_frames, "chunk_frames": svc.cfg.chunk_frames},
                  queue_timeout=svc.cfg.queue_timeout)
        svc.scheduler.submit(job)
        pieces = []
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, Audio):
                    pieces.append(event.pcm)
                elif isinstance(event, Failed):
                    raise event.error
                elif isinstance(event, JobDone):
                    break
        finally:
            job.cancel.set()  # a caller that went away stops the generation
            svc.publish_status()
        if not pieces:
            raise TTSError("internal", "the VoiceDesign model produced no audio")
        return np.concatenate(pieces)


def _wav_bytes(pcm: Any) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(pcm, dtype=np.float32), MODEL_RATE, format="WAV", subtype="FLOAT")
    return buf.getvalue()
