"""RPC methods of the daemon: one coroutine per method, dispatched by name.

Streaming method: ``tts.synthesize`` sends ``tts.progress`` / ``tts.start`` / ``tts.chunk``
notifications, then exactly one response. Everything else is request -> response.
Admin methods exist only on the admin socket, and only for callers that passed the
SO_PEERCRED check.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .. import __version__, messages as M, protocol as P
from ..audio import AudioFormatError, AudioPipeline
from ..audio.reference import process_reference
from ..config import DaemonConfig
from ..errors import TTSError
from ..text import SSMLError, prepare_segments
from ..text.language import canonical_language, detect_language
from .models import ModelEntry, ModelRegistry
from .scheduler import Job, Scheduler
from .server import Connection, Server
from .sessions import CallSessions
from .timeline import Timeline, segment_speed
from .voices import VoiceStore

log = logging.getLogger("qwen3ttsd.service")

CAPABILITIES = ["stream", "cancel", "clone", "voice_design", "formats", "speed", "resample",
                "seed", "priority"]
_STREAMED = object()


class Service:
    def __init__(self, cfg: DaemonConfig, registry: ModelRegistry, scheduler: Scheduler,
                 voices: VoiceStore, notifier) -> None:
        self.cfg = cfg
        self.registry = registry
        self.scheduler = scheduler
        self.voices = voices
        self.notifier = notifier
        self.server: Server | None = None
        self.started = time.time()
        self.active_streams = 0
        self.served = 0
        self.sockets_info: dict[str, dict] = {}
        self._published = ""   # the last STATUS sent
        self.sessions = CallSessions()
        self.methods = {
            "rpc.hello": self.hello,
            "tts.synthesize": self.synthesize,
            "tts.voices": self.list_voices,
            "tts.models": self.list_models,
            "tts.languages": self.list_languages,
            "tts.warmup": self.warmup,
            "voices.list": self.list_voices,
            "voices.add": self.add_voice,
            "voices.remove": self.remove_voice,
            "admin.status": self.status,
            "admin.load": self.load,
            "admin.unload": self.unload,
            "admin.keepalive": self.keepalive,
            "admin.set": self.set,
            "admin.shutdown": self.shutdown,
            "admin.cache.list": self.cache_list,
            "admin.cache.clear": self.cache_clear,
        }

    async def handle(self, conn: Connection, msgid: int, method: str, params: dict) -> None:
        fn = self.methods.get(method)
        if fn is None:
            raise TTSError("no_such_method", f"unknown method {method!r}")
        if method.startswith("admin.") and conn.kind != "admin":
            raise TTSError("forbidden", f"{method} is only available on the admin socket")
        if conn.kind == "admin" and not conn.admin and method != "rpc.hello":
            raise TTSError("forbidden", f"uid {conn.uid} is not allowed to use the admin socket "
                           f"(needs root, the daemon's user or group {self.cfg.admin_group!r})")
        result = await fn(conn, msgid, params)
        if result is not _STREAMED:
            await conn.send(P.response(msgid, None, result))

    # --- info --------------------------------------------------------------------------

    async def hello(self, conn, msgid, params) -> dict:
        return M.HelloResult(proto=P.PROTOCOL_VERSION, server="qwen3ttsd", version=__version__,
                             capabilities=CAPABILITIES, max_frame=P.MAX_REQUEST_FRAME,
                             admin=conn.admin, socket=conn.kind).to_wire()

    async def list_models(self, conn, msgid, params) -> list:
        return self.registry.list()

    async def list_languages(self, conn, msgid, params) -> list:
        langs = set()
        for e in self.registry.entries.values():
            langs.update(e.languages)
        return sorted(langs)

    async def list_voices(self, conn, msgid, params) -> dict:
        speakers = sorted({s for e in self.registry.entries.values() if e.type == "custom_voice" for s in e.speakers})
        return {"speakers": speakers, "clones": self.voices.list(),
                "voice_design": any(e.type == "voice_design" for e in self.registry.entries.values())}

    # --- synthesis ---------------------------------------------------------------------

    def _route(self, msg: M.Synthesize) -> tuple[ModelEntry, dict, Any]:
        """Pick the model and build the engine request fields. Validation needs no torch."""
        voice, instruct = msg.voice, msg.instruct
        clone = voice is not None and self.voices.exists(voice) and voice.lower() not in self._all_speakers()
        one_shot = msg.ref_audio is not None
        if one_shot or clone:
            want = "base"
        elif instruct and not voice:
            want = "voice_design"
        else:
            want = "custom_voice"
        entry = self.registry.pick(msg.model, None if msg.model else want)
        language = canonical_language(msg.language)  # "en" == "english"
        if language not in entry.languages:
            raise TTSError("bad_request", f"unsupported language {msg.language!r}; supported: {entry.languages}",
                           data={"param": "language"})
        req: dict[str, Any] = {"language": language}
        voice_audio: tuple[str, Any, str | None, str] | None = None   # (kind, bytes or name, ref_text, name)
        if entry.type == "custom_voice":
            default = M.DEFAULT_SPEAKER if M.DEFAULT_SPEAKER in entry.speakers else entry.speakers[0]
            speaker = (voice or default).lower()
            if speaker not in entry.speakers:
                raise TTSError("bad_request", f"unknown voice {voice!r}; speakers: {entry.speakers}, "
                               f"saved clone voices: {[v['name'] for v in self.voices.list()]}")
            req.update(speaker=speaker, instruct=instruct)
        elif entry.type == "voice_design":
            if not instruct:
                raise TTSError("bad_request", "a voice-design model needs 'instructions' describing the voice")
            req.update(instruct=instruct)
        elif entry.type == "base":
            if msg.ref_audio is not None:
                ref = msg.ref_audio
                name = "oneshot-" + hashlib.sha256(ref).hexdigest()[:16]  # cache key: same upload, same prompt
                voice_audio = ("oneshot", ref, msg.ref_text, name)
                req.update(voice=name)
            elif voice:
                if not self.voices.exists(voice):
                    raise TTSError("not_found", f"voice {voice!r} is not a saved clone voice")
                voice_audio = ("saved", voice, None, voice)
                req.update(voice=voice)
            else:
                raise TTSError("bad_request", "a clone (Base) model needs 'voice' (a saved voice) or 'ref_audio'")
        else:
            raise TTSError("unsupported", f"model {entry.name} has unknown type {entry.type!r}")
        return entry, req, voice_audio

    def _all_speakers(self) -> set[str]:
        return {s for e in self.registry.entries.values() for s in e.speakers}

    async def _load_voice(self, voice_audio) -> tuple[Any, dict] | None:
        if voice_audio is None:
            return None
        kind, data, ref_text, name = voice_audio
        if kind == "saved":
            return await asyncio.to_thread(self.voices.get, data)
        try:
            wav = await asyncio.to_thread(process_reference, data)
        except AudioFormatError as e:
            raise TTSError("bad_request", f"ref_audio rejected: {e}") from e
        return wav, {"name": name, "ref_text": ref_text or ""}

    async def synthesize(self, conn: Connection, msgid: int, params: dict):
        t0 = time.monotonic()
        msg = M.Synthesize.from_wire(params, limits={"text": self.cfg.max_text_chars})
        entry, req, voice_audio = self._route(msg)
        req["first_chunk_frames"] = msg.first_chunk_frames or self.cfg.first_chunk_frames
        req["chunk_frames"] = msg.chunk_frames or self.cfg.chunk_frames
        req.update(msg.sampling)
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
            if confidence >= 0.8 and detected in entry.languages:
                req["language"] = detected  # the model's language token beats its own guess
        languages = [s.language or req["language"] for s in segments]
        for lang in set(languages) - set(entry.languages):
            raise TTSError("bad_request", f"unsupported language {lang!r} in the text; supported: {entry.languages}")
        try:
            pipeline = AudioPipeline(msg.format, msg.sample_rate, segment_speed(msg.speed, segments[0].rate))
        except AudioFormatError as e:
            raise TTSError("bad_request", str(e)) from e
        timeline = Timeline(segments, msg.speed, trailing_pause, pipeline)
        try:
            loaded = await self._load_voice(voice_audio)
            job = Job(model=entry, segments=[s.text for s in segments], request=req,
                      languages=languages if any(s.language for s in segments) else None,
                      loop=asyncio.get_running_loop(), priority=msg.priority, seed=msg.seed, voice_audio=loaded,
                      queue_timeout=self.cfg.queue_timeout)
            position = self.sessions.submit(self.scheduler, job, msg.session)
            conn.jobs[msgid] = job
            self.active_streams += 1
            try:
                await self._stream(conn, msgid, job, timeline, position, t0, entry)
            finally:
                self.active_streams -= 1
                conn.jobs.pop(msgid, None)
                job.cancel.set()
                self.publish_status()
        finally:
            pipeline.close()
        return _STREAMED

    async def _stream(self, conn: Connection, msgid: int, job: Job, timeline: Timeline,
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
            if data:
                await send(_notify(M.Chunk(msgid, seq, data)), stall)
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
                    kind, value = await asyncio.wait_for(job.events.get(), timeout)
                except asyncio.TimeoutError:
                    if job.started is None:
                        job.cancel.set()
                        raise TTSError("timeout", f"not started within {job.queue_timeout:.0f} s (GPU busy)") from None
                    continue
                if kind == "pcm":
                    if first_audio is None:
                        first_audio = time.monotonic() - t0
                    await chunk(await asyncio.to_thread(pipeline.feed, value))
                elif kind == "segment_end":
                    caption, audio = await asyncio.to_thread(timeline.segment_end, value["index"], value["samples"])
                    await send(_notify(M.Caption(msgid, **caption)), stall)
                    await chunk(audio)
                elif kind == "progress":
                    if value.get("stage") in ("loading", "generating"):
                        self.publish_status()  # a model this request loads shows at once
                    await send(_notify(M.Progress(msgid, value)), stall)
                elif kind == "error":
                    raise value
                elif kind == "done":
                    await chunk(await asyncio.to_thread(lambda: timeline.finish() + pipeline.finish()))
                    total = time.monotonic() - t0
                    dur = pipeline.duration_s
                    self.served += 1
                    await send(P.response(msgid, None, M.SynthesizeResult(
                        chunks=seq, bytes=nbytes, samples=pipeline.samples_out, duration_s=round(dur, 4),
                        frames=value["frames"], segments=len(job.segments),
                        first_audio_s=round(first_audio or total, 4), total_s=round(total, 4),
                        rtf=round(total / dur, 4) if dur else None, model=entry.name, format=pipeline.format,
                        sample_rate=pipeline.sample_rate, language=job.request.get("language")).to_wire()), stall)
                    return
        except asyncio.TimeoutError:
            job.cancel.set()
            log.warning("client pid %d stalled for %.0f s; cutting it off", conn.pid, stall)
            err = TTSError("client_stalled", f"client did not read audio for {stall:.0f} s")
            with contextlib.suppress(Exception):  # queued behind the unread audio: best effort
                await conn.send(P.response(msgid, err.to_wire()), timeout=1)
            conn.abort()  # unread audio would otherwise hold the connection (and us) open
        except (ConnectionError, OSError):
            job.cancel.set()
            raise asyncio.CancelledError() from None

    async def warmup(self, conn, msgid, params) -> dict:
        """Load the model a request with these parameters would use, without generating.

        The bridge calls this when a phone call connects, so the first utterance does not
        pay the model load. Routing errors (unknown voice...) are reported like synthesize.
        """
        entry, _, _ = self._route(M.Warmup.from_wire(params).as_synthesize())
        t0 = time.monotonic()
        was_loaded = entry.name in self.registry.engines
        await self.scheduler.run_call(lambda: self.registry.engine(entry), asyncio.get_running_loop())
        self.publish_status()
        return M.WarmupResult(model=entry.name, was_loaded=was_loaded,
                              load_s=round(time.monotonic() - t0, 3)).to_wire()

    # --- voices ------------------------------------------------------------------------

    async def add_voice(self, conn, msgid, params) -> dict:
        msg = M.VoicesAdd.from_wire(params)
        if not msg.name:
            raise TTSError("bad_request", "name is required", data={"param": "name"})
        if msg.name.lower() in self._all_speakers():
            raise TTSError("bad_request", f"{msg.name!r} is a built-in speaker name")
        try:
            wav = await asyncio.to_thread(process_reference, msg.audio)
        except AudioFormatError as e:
            raise TTSError("bad_request", f"reference audio rejected: {e}") from e
        meta = {"consent": msg.consent, "added_by_uid": conn.uid}
        info = await asyncio.to_thread(self.voices.add, msg.name, wav, msg.ref_text, meta)
        for eng in list(self.registry.engines.values()):
            eng.drop_voice(msg.name)
        return info

    async def remove_voice(self, conn, msgid, params) -> dict:
        name = M.VoicesRemove.from_wire(params).name
        if not self.voices.remove(name):
            raise TTSError("not_found", f"voice {name!r} does not exist")
        for eng in list(self.registry.engines.values()):
            eng.drop_voice(name)
        return {"removed": name}

    # --- admin -------------------------------------------------------------------------

    @property
    def srv(self) -> Server:
        if self.server is None:
            raise TTSError("unavailable", "the daemon is still starting")
        return self.server

    def publish_status(self) -> None:
        """sd_notify STATUS whenever it changes: the bridge's /health and ``systemctl
        status`` read the daemon's state from it without connecting (which could wake it)."""
        line = self.status_line()
        if line != self._published:
            self._published = line
            self.notifier.status(line)

    def status_line(self) -> str:
        loaded = list(self.registry.engines)
        if self.registry.loading:
            return f"loading {self.registry.loading}"
        if not loaded:
            return "idle, no model loaded"
        return f"ready: {', '.join(loaded)}; {self.active_streams} streams"

    async def status(self, conn, msgid, params) -> dict:
        srv = self.server
        vram = _vram_bytes()
        infos = {n: getattr(e, "info", {}) for n, e in self.registry.engines.items()}
        state = "loading" if self.registry.loading else ("ready" if infos else "idle")
        if srv is not None and srv.stopping:
            state = "draining"
        return {
            "state": state, "pid": os.getpid(), "version": __version__, "models": self.registry.list(),
            "loaded": infos, "vram_bytes": vram, "rss_bytes": _rss_bytes(),
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "active_streams": self.active_streams, "queue_len": self.scheduler.queued,
            "connections": len(srv.connections) if srv else 0, "served": self.served,
            "idle_timeout": srv.idle_timeout if srv else None,
            "idle_exit_in_s": srv.idle_exit_in() if srv else None,
            "uptime_s": round(time.time() - self.started, 3), "torch_imported": "torch" in sys.modules,
            "sockets": self.sockets_info,
            "python": sys.version.split()[0],
        }

    async def load(self, conn, msgid, params) -> dict:
        entry = self.registry.pick(M.AdminLoad.from_wire(params).model)
        self.notifier.status(f"loading {entry.name}")
        loop = asyncio.get_running_loop()
        await self.scheduler.run_call(lambda: self.registry.engine(entry), loop)
        self.publish_status()
        eng = self.registry.engines[entry.name]
        return dict(eng.info, name=entry.name)

    async def unload(self, conn, msgid, params) -> dict:
        msg = M.AdminUnload.from_wire(params)
        if msg.exit:
            self.srv.request_stop("admin.unload exit", drain=True)
            return {"exiting": True}
        name = msg.model
        self.sessions.drop_decoders()  # a call's codec state would pin the unloaded model
        dropped = await self.scheduler.run_call(lambda: self.registry.unload(name), asyncio.get_running_loop())
        self.publish_status()
        return {"unloaded": dropped}

    async def keepalive(self, conn, msgid, params) -> dict:
        secs = M.AdminKeepalive.from_wire(params, limits={"seconds": self.cfg.max_keepalive}).seconds
        self.srv.keepalive_until = time.monotonic() + secs if secs else 0.0
        return {"keepalive_s": secs, "idle_exit_in_s": self.srv.idle_exit_in()}

    async def set(self, conn, msgid, params) -> dict:
        msg = M.AdminSet.from_wire(params)
        if msg.idle_timeout is not None:
            self.srv.idle_timeout = msg.idle_timeout
        if msg.queue_timeout is not None:
            self.cfg.queue_timeout = msg.queue_timeout
        return {"idle_timeout": self.srv.idle_timeout, "queue_timeout": self.cfg.queue_timeout}

    async def shutdown(self, conn, msgid, params) -> dict:
        self.srv.request_stop("admin.shutdown", drain=M.AdminShutdown.from_wire(params).drain)
        return {"stopping": True}

    async def cache_list(self, conn, msgid, params) -> dict:
        def sizes():
            out = []
            for e in self.registry.entries.values():
                total = sum(f.stat().st_size for f in Path(e.path).rglob("*") if f.is_file())
                out.append({"name": e.name, "path": e.path, "bytes": total, "loaded": e.name in self.registry.engines})
            return out

        prompts = sum(e.prompt_count for e in self.registry.engines.values())
        return {"models": await asyncio.to_thread(sizes), "prompts": prompts, "voices": len(self.voices.list())}

    async def cache_clear(self, conn, msgid, params) -> dict:
        msg = M.AdminCacheClear.from_wire(params)
        if msg.what == "prompts":
            n = sum(e.clear_prompts() for e in self.registry.engines.values())
            return {"cleared_prompts": n}
        if msg.what == "model":
            entry = self.registry.pick(msg.model)
            root = Path(self.cfg.models_dir).resolve() if self.cfg.models_dir else None
            path = Path(entry.path).resolve()
            if root is None or root not in path.parents:
                raise TTSError("forbidden", "only checkpoints inside models_dir can be removed")
            if entry.name in self.registry.engines:
                raise TTSError("busy", f"{entry.name} is loaded; unload it first")
            if msg.confirm != entry.name:
                raise TTSError("bad_request", f"pass confirm={entry.name!r} to delete {path}")
            await asyncio.to_thread(shutil.rmtree, path)
            self.registry.entries.pop(entry.name, None)
            return {"removed": entry.name}
        raise TTSError("bad_request", "what must be 'prompts' or 'model'")


def _notify(n: M.Progress | M.Start | M.Chunk | M.Caption) -> bytes:
    return P.notification(n.method, n.to_wire())


def _vram_bytes() -> int | None:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return int(torch.cuda.memory_allocated())
    except (AttributeError, ImportError):
        pass  # torch is half-imported on the GPU thread right now: no figure yet
    return None


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
