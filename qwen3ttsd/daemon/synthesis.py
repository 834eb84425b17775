"""Synthesis RPC methods: ``tts.synthesize`` (streamed) and ``tts.warmup``.

Routing picks the model and builds the engine request from the typed wire message, without
torch (:class:`Route`); the text is normalized and split off the event loop; the job is
queued (:mod:`.scheduler`) and its typed events become ``tts.progress`` / ``tts.start`` /
``tts.chunk`` / ``tts.caption`` notifications, then exactly one response.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .. import messages as M, protocol as P
from ..audio import AudioFormatError, AudioPipeline
from ..audio.reference import process_reference
from ..checkpoints import ModelEntry, pull_hint
from ..engine.backend import VoiceSource
from ..errors import TTSError
from ..text import SSMLError, prepare_segments
from ..text.language import canonical_language, detect_language
from .job import Audio, Failed, Job, JobDone, Progress, SegmentDone
from .server import Connection
from .state import DaemonState
from .text_stream import TurnText, TurnTimeline, normaliser
from .timeline import Timeline, segment_speed

log = logging.getLogger("qwen3ttsd.service")

MAX_CHUNK_BYTES = 1 << 20   # audio per tts.chunk notification: well under the frame limit
STALL_GRACE_S = 5.0         # a stalled client's last chance to read what is queued, its error last


@dataclass(frozen=True)
class VoiceRef:
    """Where a clone voice's reference audio comes from: a saved voice, or an upload."""

    name: str                      # the engine's voice id (an upload's is its content hash)
    saved: bool                    # True: the voice store's ``name``; False: ``upload``
    upload: bytes = b""
    ref_text: str | None = None


@dataclass(frozen=True)
class Route:
    """Which model serves a request, and the engine request fields it implies."""

    entry: ModelEntry
    request: dict[str, Any] = field(default_factory=dict)   # SynthesisRequest fields (no text)
    voice: VoiceRef | None = None


def _without(model_type: str, svc: DaemonState) -> bool:
    """Whether models are installed but none of ``model_type``."""
    entries = svc.registry.entries.values()
    return bool(entries) and all(e.type != model_type for e in entries)


def route(svc: DaemonState, msg: M.Synthesize) -> Route:
    """Pick the model and build the engine request fields. Validation needs no torch."""
    voice, instruct = msg.voice, msg.instruct
    clone = voice is not None and svc.voices.exists(voice) and voice.lower() not in svc.all_speakers()
    if msg.ref_audio is not None or clone:
        want = "base"
    elif instruct and not voice:
        want = "voice_design"
    else:
        want = "custom_voice"
        if voice and not msg.model and _without("custom_voice", svc):
            raise TTSError("not_found", f"voice {voice!r} does not exist: saved clone voices: "
                           f"{[v['name'] for v in svc.voices.list()]}; no CustomVoice model is installed for "
                           f"built-in speakers ({pull_hint('custom_voice')})")
    entry = svc.registry.pick(msg.model, None if msg.model else want)
    language = canonical_language(msg.language)  # "en" == "english"
    if language not in entry.languages:
        raise TTSError("bad_request", f"unsupported language {msg.language!r}; supported: {entry.languages}",
                       data={"param": "language"})
    req: dict[str, Any] = {"language": language}
    ref: VoiceRef | None = None
    if entry.type == "custom_voice":
        default = M.DEFAULT_SPEAKER if M.DEFAULT_SPEAKER in entry.speakers else entry.speakers[0]
        speaker = (voice or default).lower()
        if speaker not in entry.speakers:
            raise TTSError("bad_request", f"unknown voice {voice!r}; speakers: {entry.speakers}, "
                           f"saved clone voices: {[v['name'] for v in svc.voices.list()]}")
        req.update(speaker=speaker, instruct=instruct)
    elif entry.type == "voice_design":
        if not instruct:
            raise TTSError("bad_request", "a voice-design model needs 'instructions' describing the voice")
        req.update(instruct=instruct)
    elif entry.type == "base":
        if msg.ref_audio is not None:
            name = "oneshot-" + hashlib.sha256(msg.ref_audio).hexdigest()[:16]  # same upload, same prompt
            ref = VoiceRef(name, saved=False, upload=msg.ref_audio, ref_text=msg.ref_text)
        elif voice:
            if not svc.voices.exists(voice):
                raise TTSError("not_found", f"voice {voice!r} is not a saved clone voice")
            ref = VoiceRef(voice, saved=True)
        else:
            raise TTSError("bad_request", "a clone (Base) model needs 'voice' (a saved voice) or 'ref_audio'")
        req.update(voice=ref.name)
    else:
        raise TTSError("unsupported", f"model {entry.name} has unknown type {entry.type!r}")
    return Route(entry, req, ref)


async def load_voice(svc: DaemonState, ref: VoiceRef | None) -> VoiceSource | None:
    """The reference audio a clone voice's stream registers with the model."""
    if ref is None:
        return None
    if ref.saved:
        wav, meta = await asyncio.to_thread(svc.voices.get, ref.name)
        return VoiceSource(ref.name, wav, meta.get("ref_text") or None, keep_dir=str(svc.voices.directory(ref.name)))
    try:
        wav = await asyncio.to_thread(process_reference, ref.upload)
    except AudioFormatError as e:
        raise TTSError("bad_request", f"ref_audio rejected: {e}") from e
    return VoiceSource(ref.name, wav, ref.ref_text or None)


class Synthesis:
    """``tts.synthesize`` and ``tts.warmup`` over the service's registry and scheduler."""

    def __init__(self, svc: DaemonState) -> None:
        self.svc = svc
        self.cfg = svc.cfg

    async def synthesize(self, conn: Connection, msgid: int, params: dict[str, Any]) -> None:
        """Streams; the stream's last message is its response (so this returns None)."""
        svc = self.svc
        t0 = time.monotonic()
        msg = M.Synthesize.from_wire(params, limits={"text": self.cfg.max_text_chars})
        r = route(svc, msg)
        req = dict(r.request, first_chunk_frames=msg.first_chunk_frames or self.cfg.first_chunk_frames,
                   chunk_frames=msg.chunk_frames or self.cfg.chunk_frames, **msg.sampling)
        if msg.text_stream:
            return await self._synthesize_streamed(conn, msgid, msg, r, req, t0)
        try:
            # off the event loop: 20k characters of numbers take ~0.1 s to normalise
            segments, trailing_pause = await asyncio.to_thread(
                prepare_segments, msg.text, req["language"], normalize=msg.normalize)
        except (SSMLError, ValueError) as e:
            raise TTSError("bad_request", str(e)) from e
        if not segments:
            raise TTSError("bad_request", "text has nothing to speak")
        if req["language"] == "auto":  # judged on the words as written, never on SSML markup
            detected, confidence = detect_language(" ".join(s.caption for s in segments))
            if confidence >= 0.8 and detected in r.entry.languages:
                req["language"] = detected  # the model's language token beats its own guess
        languages = [s.language or req["language"] for s in segments]
        for lang in set(languages) - set(r.entry.languages):
            raise TTSError("bad_request", f"unsupported language {lang!r} in the text; supported: {r.entry.languages}")
        try:
            pipeline = AudioPipeline(msg.format, msg.sample_rate, segment_speed(msg.speed, segments[0].rate))
        except AudioFormatError as e:
            raise TTSError("bad_request", str(e)) from e
        timeline = Timeline(segments, msg.speed, trailing_pause, pipeline)
        try:
            job = Job(model=r.entry, segments=[s.text for s in segments], request=req,
                      languages=languages if any(s.language for s in segments) else None,
                      loop=asyncio.get_running_loop(), priority=msg.priority, seed=msg.seed,
                      voice=await load_voice(svc, r.voice), queue_timeout=self.cfg.queue_timeout)
            position = svc.sessions.submit(svc.scheduler, job, msg.session)
            conn.jobs[msgid] = job
            svc.active_streams += 1
            try:
                await self._stream(conn, msgid, job, timeline, position, t0, r.entry)
            finally:
                svc.active_streams -= 1
                conn.jobs.pop(msgid, None)
                job.cancel.set()
                svc.publish_status()
        finally:
            pipeline.close()

    async def _synthesize_streamed(self, conn: Connection, msgid: int, msg: M.Synthesize, r: Route,
                                   req: dict[str, Any], t0: float) -> None:
        """``text_stream``: one running generation per turn, fed by ``$/text`` (text_stream.py)."""
        try:
            pipeline = AudioPipeline(msg.format, msg.sample_rate, segment_speed(msg.speed, 1.0))
        except AudioFormatError as e:
            raise TTSError("bad_request", str(e)) from e
        try:
            job = Job(model=r.entry, segments=[""], request=req, loop=asyncio.get_running_loop(),
                      priority=msg.priority, seed=msg.seed, voice=await load_voice(self.svc, r.voice),
                      queue_timeout=self.cfg.queue_timeout)
            turn = TurnText(job, msg.text_lookahead, normaliser(req["language"], msg.normalize))
            job.text_in = turn.take
            if msg.text:
                turn.take(msg.text)
            for text, flush in conn.early_text.pop(msgid, []):  # sent while the voice loaded
                turn.take(text, flush)
            timeline = TurnTimeline(turn, msg.speed, pipeline)
            await self._run_job(conn, msgid, job, timeline, r.entry, msg.session, t0)
        finally:
            pipeline.close()

    async def _run_job(self, conn: Connection, msgid: int, job: Job, timeline: Timeline | TurnTimeline,
                       entry: ModelEntry, session: str | None, t0: float) -> None:
        svc = self.svc
        position = svc.sessions.submit(svc.scheduler, job, session)
        conn.jobs[msgid] = job
        svc.active_streams += 1
        try:
            await self._stream(conn, msgid, job, timeline, position, t0, entry)
        finally:
            svc.active_streams -= 1
            conn.jobs.pop(msgid, None)
            job.cancel.set()
            svc.publish_status()

    async def _stream(self, conn: Connection, msgid: int, job: Job, timeline: Timeline | TurnTimeline,
                      position: int, t0: float, entry: ModelEntry) -> None:
        pipeline = timeline.pipeline
        stall = self.cfg.stall_timeout
        send = conn.send
        await send(_notify(M.Progress(msgid, {"stage": "queued", "position": position})), stall)
        await send(_notify(M.Start(msgid, pipeline.sample_rate, pipeline.format, pipeline.mime, entry.name,
                                   len(job.segments))), stall)
        seq = 0
        nbytes = 0
        first_audio = None

        async def chunk(data: bytes) -> None:
            nonlocal seq, nbytes
            for i in range(0, len(data), MAX_CHUNK_BYTES):  # every frame under the limit
                await send(_notify(M.Chunk(msgid, seq, data[i:i + MAX_CHUNK_BYTES])), stall)
                seq += 1
            nbytes += len(data)

        try:
            # Encoding (time-stretch, resampling, libsndfile, ffmpeg pipes) runs in a worker
            # thread: the event loop serves every other client meanwhile.
            await chunk(await asyncio.to_thread(lambda: pipeline.header() + timeline.start()))
            while True:
                timeout = None
                if job.started is None:
                    timeout = max(0.05, job.queue_timeout - (time.monotonic() - job.enqueued))
                try:
                    event = await asyncio.wait_for(job.events.get(), timeout)
                except asyncio.TimeoutError:
                    if job.started is None:
                        job.cancel.set()
                        raise TTSError("timeout", f"not started within {job.queue_timeout:.0f} s (GPU busy)") from None
                    continue
                if isinstance(event, Audio):
                    if first_audio is None:
                        first_audio = time.monotonic() - t0
                    await chunk(await asyncio.to_thread(pipeline.feed, event.pcm))
                    for cap in timeline.live():  # a streamed turn's sentences, as it speaks them
                        await send(_notify(M.Caption(msgid, **cap)), stall)
                elif isinstance(event, SegmentDone):  # the segment's last audio, then its caption
                    tail, caption, audio = await asyncio.to_thread(timeline.segment_done, event.index, event.samples)
                    await chunk(tail)
                    caps: list[Any] = caption if isinstance(caption, list) else [caption]
                    for cap in caps:  # a streamed turn's generation: each of its sentences
                        await send(_notify(M.Caption(msgid, **cap)), stall)
                    await chunk(audio)
                elif isinstance(event, Progress):
                    if event.info.get("stage") in ("loading", "generating"):
                        self.svc.publish_status()  # a model this request loads shows at once
                    await send(_notify(M.Progress(msgid, event.info)), stall)
                elif isinstance(event, Failed):
                    raise event.error
                elif isinstance(event, JobDone):
                    await chunk(await asyncio.to_thread(lambda: timeline.finish() + pipeline.finish()))
                    total = time.monotonic() - t0
                    dur = pipeline.duration_s
                    self.svc.served += 1
                    await send(P.response(msgid, None, M.SynthesizeResult(
                        chunks=seq, bytes=nbytes, samples=pipeline.samples_out, duration_s=round(dur, 4),
                        frames=event.frames, segments=len(job.segments),
                        first_audio_s=round(first_audio or total, 4), total_s=round(total, 4),
                        rtf=round(total / dur, 4) if dur else None, model=entry.name, format=pipeline.format,
                        sample_rate=pipeline.sample_rate, language=job.request.get("language"),
                        final_header=pipeline.final_header() or None).to_wire()), stall)
                    return
        except asyncio.TimeoutError:
            job.cancel.set()
            log.warning("client pid %d stalled for %.0f s; cutting it off", conn.pid, stall)
            err = TTSError("client_stalled", f"client did not read audio for {stall:.0f} s")
            _cut_off(conn, P.response(msgid, err.to_wire()))
        except (ConnectionError, OSError):
            job.cancel.set()
            raise asyncio.CancelledError() from None

    async def warmup(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.WarmupResult:
        """Load the model a request with these parameters would use, without generating.

        The bridge calls this when a phone call connects, so the first utterance does not
        pay the model load. Routing errors (unknown voice...) are reported like synthesize.
        """
        svc = self.svc
        msg = M.Warmup.from_wire(params)
        if msg.model and not (msg.voice or msg.instruct):  # a model by name: load it, whatever it needs to speak
            entry = svc.registry.pick(msg.model)
        else:
            entry = route(svc, msg.as_synthesize()).entry
        t0 = time.monotonic()
        was_loaded = entry.name in svc.registry.loaded
        await svc.scheduler.run_call(lambda: svc.registry.load(entry), asyncio.get_running_loop())
        svc.publish_status()
        return M.WarmupResult(model=entry.name, was_loaded=was_loaded, load_s=round(time.monotonic() - t0, 3))


def _cut_off(conn: Connection, last: bytes) -> None:
    """Hang up on a stalled client, not silently: ``last`` (its error response) is queued
    behind the unread audio and the connection closes once that is read, so a client that
    reads again gets its audio, then the error. One that does not is dropped after
    ``STALL_GRACE_S``: unread data would otherwise hold the connection (and the daemon) open."""
    conn.closed = True              # nothing else is sent on this connection
    transport = conn.writer.transport
    transport.write(last)           # whole frames only are queued: framing stays intact
    transport.close()               # flushes what is queued, then closes
    asyncio.get_running_loop().call_later(STALL_GRACE_S, transport.abort)


def _notify(n: M.Progress | M.Start | M.Chunk | M.Caption) -> bytes:
    return P.notification(n.method, n.to_wire())
