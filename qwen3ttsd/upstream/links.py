"""One connection kind each: what an upstream offers (discovery) and one segment's audio.

* :class:`RpcLink`  another qwen3ttsd daemon over this project's RPC (``tts.models``,
  ``tts.synthesize`` with ``format: f32`` - the upstream's exact samples - ``normalize:
  false``, the segment's seed and the call's ``session``, so joins stay sample-continuous).
* :class:`HttpLink` an OpenAI-speech server (``shapes.py``): streamed 24 kHz s16le PCM; clone
  voices are uploaded once (``POST /v1/audio/voices``) and uploaded again when the upstream
  answers 404 for one (it restarted and lost them).

Both yield float32 numpy chunks and raise :class:`Unreachable` when the upstream cannot be
reached (the fleet marks it down), :class:`VoiceMissing` for a lost upload, and TTSError
for what the upstream refused. Closing the iterator (cancel) closes the upstream's stream.
"""

from __future__ import annotations

import hashlib
import io
import logging
import wave
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import messages as M
from ..client import AsyncClient, ConnectionLost
from ..engine.backend import VoiceSource
from ..engine.request import SynthesisRequest
from ..errors import TTSError
from ..formats import MODEL_RATE
from ..text.language import LANGUAGES
from . import shapes
from .targets import Target

log = logging.getLogger("qwen3ttsd.upstream")

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 300.0       # between two pieces of audio (an upstream's cold load included)


class Unreachable(TTSError):
    """The upstream could not be reached (refused, reset before answering, timed out)."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)


class VoiceMissing(TTSError):
    """The HTTP upstream does not know a clone voice we uploaded (it restarted)."""

    def __init__(self, message: str) -> None:
        super().__init__("not_found", message)


@dataclass(frozen=True)
class Offer:
    """One model an upstream serves."""

    name: str
    type: str
    speakers: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    size: str = ""


@dataclass
class Result:
    """What the upstream said about a finished segment (frames: codec frames, if known)."""

    frames: int | None = None


class Samples:
    """Bytes of little-endian samples -> float32 chunks, carrying a split sample over."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.rest = b""

    def feed(self, data: bytes) -> np.ndarray | None:
        data = self.rest + data
        n = len(data) - len(data) % self.width
        self.rest = data[n:]
        if not n:
            return None
        if self.width == 4:
            return np.frombuffer(data[:n], "<f4").astype(np.float32)
        return np.frombuffer(data[:n], "<i2").astype(np.float32) / 32768.0


def wav_bytes(voice: VoiceSource) -> bytes:
    """A clone voice's reference as a 16-bit WAV (what both links upload)."""
    pcm = np.clip(np.asarray(voice.wav, np.float32), -1.0, 1.0)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(MODEL_RATE)
        w.writeframes((pcm * 32767.0).round().astype("<i2").tobytes())
    return buf.getvalue()


class RpcLink:
    """Another qwen3ttsd daemon (``unix:///path/tts.sock``)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._refs: dict[str, bytes] = {}   # clone voice name -> its WAV (small LRU)

    async def discover(self) -> list[Offer]:
        try:
            async with AsyncClient(self.target.address, connect_timeout=CONNECT_TIMEOUT_S) as c:
                models = (await c.request(M.Models())).models
        except ConnectionLost as e:
            raise Unreachable(f"{self.target.url}: {e.message}") from None
        return [Offer(m.name, m.type, list(m.speakers), list(m.languages), m.size or "") for m in models]

    def _ref(self, voice: VoiceSource) -> bytes:
        key = f"{voice.name}:{id(voice.wav)}"
        if key not in self._refs:
            while len(self._refs) >= 16:
                self._refs.pop(next(iter(self._refs)))
            self._refs[key] = wav_bytes(voice)
        return self._refs[key]

    async def speak(self, offer: Offer, req: SynthesisRequest, voice: VoiceSource | None,
                    session: str | None, result: Result) -> AsyncGenerator[np.ndarray, None]:
        msg = M.Synthesize(text=req.text, model=offer.name, language=req.language, format="f32",
                           sample_rate=MODEL_RATE, seed=req.seed, first_chunk_frames=req.first_chunk_frames,
                           chunk_frames=req.chunk_frames, temperature=req.temperature, top_k=req.top_k,
                           top_p=req.top_p, repetition_penalty=req.repetition_penalty,
                           max_frames=req.max_frames, normalize=False, session=session,
                           voice=req.speaker if offer.type == "custom_voice" else None,
                           instruct=req.instruct)
        if voice is not None:
            msg.ref_audio, msg.ref_text = self._ref(voice), voice.ref_text
        samples = Samples(4)
        client = AsyncClient(self.target.address, connect_timeout=CONNECT_TIMEOUT_S)
        try:
            try:
                await client.connect()
            except ConnectionLost as e:
                raise Unreachable(f"{self.target.url}: {e.message}") from None
            async for item in client.synthesize(msg):
                if isinstance(item, M.Chunk):
                    pcm = samples.feed(item.audio)
                    if pcm is not None:
                        yield pcm
                elif isinstance(item, M.SynthesizeResult):
                    result.frames = item.frames
        finally:
            await client.close()   # a cancel lands here: the upstream sees the hang-up at once

    async def close(self) -> None:
        pass


class HttpLink:
    """An OpenAI-speech server (``http(s)://host:port[/prefix]``)."""

    def __init__(self, target: Target) -> None:
        import httpx  # the front's one HTTP dependency; only this mode imports it

        self.target = target
        self.flavour = "omni"
        self.uploaded: set[str] = set()    # clone voices this upstream has (by upstream name)
        headers = {"Authorization": f"Bearer {target.key}"} if target.key else {}
        self._httpx = httpx
        self.client = httpx.AsyncClient(base_url=target.address, headers=headers,
                                        timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
                                        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    def _unreachable(self, e: Exception) -> Unreachable:
        return Unreachable(f"{self.target.url}: {type(e).__name__}: {e}")

    async def _get(self, path: str) -> Any:
        httpx = self._httpx
        try:
            r = await self.client.get(path)
        except (httpx.TransportError, OSError) as e:
            raise self._unreachable(e) from None
        if r.status_code != 200:
            raise _status_error(self.target, r.status_code, r.content)
        return r.json()

    async def discover(self) -> list[Offer]:
        models, self.flavour = shapes.read_models(await self._get(shapes.MODELS))
        try:
            speakers, uploaded = shapes.read_voices(await self._get(shapes.VOICES))
        except TTSError as e:
            if isinstance(e, Unreachable):
                raise
            speakers, uploaded = [], []
        self.uploaded &= set(uploaded)   # what a restart lost is uploaded again on use
        languages = ["auto", *LANGUAGES]
        return [Offer(name, t, speakers if t == "custom_voice" else [], languages) for name, t in models]

    @staticmethod
    def upstream_voice(voice: VoiceSource, wav: bytes) -> str:
        """The name a clone voice has upstream: its own plus its audio's hash, so an edited
        voice is a new upload and two fronts' same-named voices never clobber each other."""
        return f"{voice.name[:40]}-{hashlib.sha256(wav).hexdigest()[:12]}"

    async def register(self, voice: VoiceSource) -> str:
        wav = wav_bytes(voice)
        name = self.upstream_voice(voice, wav)
        if name in self.uploaded:
            return name
        httpx = self._httpx
        try:
            r = await self.client.post(shapes.VOICES, data=shapes.voice_form(name, voice.ref_text),
                                       files={"audio_sample": ("voice.wav", wav, "audio/wav")})
        except (httpx.TransportError, OSError) as e:
            raise self._unreachable(e) from None
        if r.status_code not in (200, 201, 409):   # 409: it has it already
            raise _status_error(self.target, r.status_code, r.content)
        log.info("registered clone voice %s with %s", name, self.target.url)
        self.uploaded.add(name)
        return name

    async def speak(self, offer: Offer, req: SynthesisRequest, voice: VoiceSource | None,
                    session: str | None, result: Result) -> AsyncGenerator[np.ndarray, None]:
        httpx = self._httpx
        name = await self.register(voice) if voice is not None else None
        speaker = req.speaker if offer.type == "custom_voice" else None
        body = shapes.speech_body(self.flavour, offer.name, offer.type, req, name if voice is not None else speaker)
        samples = Samples(2)
        try:
            async with self.client.stream("POST", shapes.SPEECH, json=body) as r:
                if r.status_code != 200:
                    err = _status_error(self.target, r.status_code, await r.aread())
                    if r.status_code == 404 and name is not None:
                        self.uploaded.discard(name)
                        raise VoiceMissing(err.message)
                    raise err
                async for data in r.aiter_raw():
                    pcm = samples.feed(data)
                    if pcm is not None:
                        yield pcm
        except httpx.TransportError as e:
            raise self._unreachable(e) from None

    async def close(self) -> None:
        await self.client.aclose()


def _status_error(target: Target, status: int, body: bytes) -> TTSError:
    """An upstream's HTTP error in our vocabulary: its 4xx are the request's fault (not
    retried), 401/403 a key problem, 429/5xx retryable elsewhere."""
    msg = f"upstream {target.url}: {shapes.error_message(status, body)}"
    if status in (401, 403):
        return TTSError("unavailable", msg + " (check QWEN3TTSD_UPSTREAM_KEY)", retryable=True)
    if status == 404:
        return TTSError("not_found", msg)
    if status in (400, 413, 422):
        return TTSError("bad_request", msg)
    if status == 429:
        return TTSError("busy", msg)
    return TTSError("unavailable", msg)


def make_link(target: Target) -> RpcLink | HttpLink:
    return RpcLink(target) if target.kind == "unix" else HttpLink(target)
