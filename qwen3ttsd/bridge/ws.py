"""WebSocket ``/v1/audio/speech/stream``: incremental text in, audio out - for phone calls.

Client -> server (JSON text messages):

  {"type": "session.update", "voice": "ryan", "language": "english", "format": "mulaw",
   "sample_rate": 8000, "instructions": "...", "speed": 1.0, "seed": 1, "model": "...",
   "audio_header": true, "text_format": "text", "text_mode": "stream", "text_lookahead": 4}
                                                  text_mode "stream" (default): each turn is ONE
                                                  running generation fed as the text arrives (heard
                                                  before any punctuation, prosody unbroken;
                                                  bridge/turns.py); "clause": a generation per
                                                  clause (a daemon that cannot stream text - the
                                                  sequential backend, upstreams - falls back to it)
  {"type": "text", "text": "Hello, how can I"}     LLM deltas; speech starts once text_lookahead tokens
                                                  are final ("clause": at the first clause;
                                                  text_format "ssml": one SSML document, spoken at flush)
  {"type": "flush"}                               end of turn: speak what is buffered
  {"type": "cancel"}                              barge-in: stop now, report what was sent

Server -> client:

  {"type": "session", "session": {...}}           after connect and after each update (the
                                                  first also has "request_id": the x-request-id)
  {"type": "warm", "model": ..., "load_s": ...}   the session's model is loaded (any time)
  {"type": "segment", "index": n, "text": "..."}  a segment was queued (a streamed turn: at its
                                                  first text, with "text": "")
  binary frames: 8-byte header (u32 seq, u32 timestamp_ms, big-endian; the audio time of the
    frame's first sample since the session began) + audio in the session's format;
    with "audio_header": false, the audio alone
  {"type": "caption", "index": n, "text": "...", "start_ms": ..., "end_ms": ...}
                                                  a sentence's span on the call's timeline (subtitles);
                                                  in a streamed turn, sent while the turn speaks
  {"type": "segment.done", "index": n, "sent_ms": ..., "start_ms": ..., "end_ms": ...}
  {"type": "flushed", "sent_ms": ...}             everything up to the flush has been sent
  {"type": "cancelled", "sent_ms": ..., "sent_bytes": ..., "segments_done": n}
  {"type": "error", "code": "...", "message": "...", "index": n?}

Budgets: a message is strict JSON (no NaN/Infinity, deep nesting or lone surrogates:
``bad_request``); a ``text`` message carries at most ``max_input_chars`` characters and a
call holds at most ``MAX_WAITING_SEGMENTS`` segments waiting in the bridge, a streamed turn
at most ``turns.MAX_TURN_CHARS`` characters (else ``payload_too_large``, and the call stays
usable); a frame larger than a ``text`` message
can need closes the socket with 1009 (uvicorn's ``ws_max_size``, set by ``bridge/main.py``).
Large texts are split on a worker thread and their segments announced in batches, so the
bridge's loop (``/health``, other calls) never waits on one.

In clause mode each segment is its own daemon request with ``priority: realtime``;
``segments.OrderedSegments`` keeps up to three of them open so the next ones generate while
the current one plays, and holds the rest of a long turn in the bridge. A streamed turn is
one request (``text_stream``) that sits in the same order.

While a call is open the session holds one extra daemon connection: it asks the daemon to
load the session's model at once (``tts.warmup``: the first utterance does not pay the
load) and pings every 10 s, so the daemon does not idle-exit in the middle of a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import struct
import uuid
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..client import AsyncClient
from ..config import BridgeConfig
from ..errors import TTSError
from ..formats import CALL_RATE, CHUNK_PROFILES, FORMATS, MODEL_RATE, RAW_FORMATS, AudioFormatError, canonical_format
from ..messages import DEFAULT_SPEAKER, Bool, Caption, Chunk, Synthesize, Warmup
from ..text.language import LANG_CODES
from ..text.split import IncrementalSplitter, WholeDocument
from .listeners import MAX_WAITING_SEGMENTS
from .metrics import Metrics
from .openai_compat import VOICE_MAP, parse_json
from .segments import Marker, OrderedSegments, Segment
from .turns import StreamTurn

log = logging.getLogger("qwen3tts.bridge.ws")
CALL_CHUNKS = CHUNK_PROFILES["call"]
FLUSHED = "flushed"   # the marker a flush leaves in the call's order
SESSION_DEFAULTS = {"voice": DEFAULT_SPEAKER, "language": "auto", "format": "pcm16", "sample_rate": MODEL_RATE,
                    "speed": 1.0, "audio_header": True, "text_format": "text", "text_mode": "stream"}
TEXT_FORMATS = ("text", "ssml")   # ssml: the call's text is one SSML document, spoken at flush
TEXT_MODES = ("stream", "clause")  # stream: a turn is one running generation fed as text comes (turns.py)
OFF_LOOP_CHARS = 2000             # texts longer than this are split on a worker thread
ANNOUNCE_BATCH = 32               # segments queued and announced between two yields to the loop
SESSION_FIELDS = ("voice", "language", "format", "sample_rate", "instructions", "speed", "seed", "model",
                  "temperature", "top_k", "top_p", "max_frames", "text_lookahead")



class Session:
    def __init__(self, ws: WebSocket, cfg: BridgeConfig, metrics: Metrics) -> None:
        self.ws = ws
        self.cfg = cfg
        self.metrics = metrics
        self.conf: dict[str, Any] = dict(SESSION_DEFAULTS)
        self.splitter: IncrementalSplitter | WholeDocument = IncrementalSplitter()
        self.segments = OrderedSegments(cfg.tts_socket)
        self.seg_index = 0
        self.seq = 0
        self.sent_samples = 0
        self.sent_bytes = 0
        self.segments_done = 0
        self.backlog = 0                 # segments queued here and not yet played (or failed)
        self.player: asyncio.Task[None] | None = None
        self.keeper: asyncio.Task[None] | None = None
        self.session_id = uuid.uuid4().hex  # the daemon continues one codec stream per call
        self.send_lock = asyncio.Lock()
        self.closed = False
        self.turn: StreamTurn | None = None   # the open turn (text_mode "stream"), until its flush

    # --- config ------------------------------------------------------------------------

    def update(self, msg: dict[str, Any]) -> None:
        if isinstance(msg.get("voice"), dict):  # OpenAI's {"id": ...} for a saved or designed voice
            msg = {**msg, "voice": msg["voice"].get("id")}
        c = dict(self.conf)
        c.update({k: SESSION_DEFAULTS.get(k) if msg[k] is None else msg[k]  # null: back to the default
                  for k in (*SESSION_FIELDS, "audio_header", "text_format", "text_mode") if k in msg})
        if c["text_format"] not in TEXT_FORMATS:
            raise TTSError("bad_request", f"text_format must be one of {list(TEXT_FORMATS)}")
        if c["text_mode"] not in TEXT_MODES:
            raise TTSError("bad_request", f"text_mode must be one of {list(TEXT_MODES)}")
        try:
            fmt = canonical_format(str(c["format"]))
        except AudioFormatError:
            fmt = ""
        if fmt not in RAW_FORMATS:
            raise TTSError("bad_request", f"format must be one of {list(RAW_FORMATS)}")
        if FORMATS[fmt].telephony and "sample_rate" not in msg:
            c["sample_rate"] = CALL_RATE
        c["format"] = fmt
        # types and bounds: the daemon's own declarations, so a bad value fails here, at once
        Synthesize.from_wire({"text": "-", **{k: c[k] for k in SESSION_FIELDS if k in c}}, strict=True)
        Bool().check("audio_header", c["audio_header"], True, None)
        lang = c["language"].lower()
        c["language"] = LANG_CODES.get(lang, lang)
        if self.turn is not None and (c["format"], c["sample_rate"]) != (self.conf["format"], self.conf["sample_rate"]):
            # the open turn's audio is already coming in its format: the call's timeline would break
            raise TTSError("bad_request", "the audio format changes between turns: flush the open turn first",
                           data={"param": "format"})
        if c["text_format"] != self.conf["text_format"]:
            self.splitter = self.new_splitter(c["text_format"])
        self.conf = c

    def new_splitter(self, text_format: str | None = None) -> IncrementalSplitter | WholeDocument:
        fmt = text_format or self.conf["text_format"]
        return WholeDocument(self.cfg.max_input_chars) if fmt == "ssml" else IncrementalSplitter()

    def request(self, text: str) -> Synthesize:
        """The daemon request for one segment of the call."""
        c = self.conf
        seed = c.get("seed")
        return Synthesize(
            text=text, voice=VOICE_MAP.get(c["voice"].lower(), c["voice"]), instruct=c.get("instructions"),
            model=c.get("model"), language=c["language"], format=c["format"], sample_rate=c["sample_rate"],
            speed=float(c["speed"]), seed=None if seed is None else seed + self.seg_index,
            first_chunk_frames=CALL_CHUNKS.first_chunk_frames, chunk_frames=CALL_CHUNKS.chunk_frames,
            priority="realtime", temperature=c.get("temperature"), top_k=c.get("top_k"), top_p=c.get("top_p"),
            max_frames=c.get("max_frames"), session=self.session_id)

    def start_keeper(self) -> None:
        if self.keeper is not None:
            self.keeper.cancel()
        r = self.request("warm up")
        self.keeper = asyncio.create_task(self._keep_warm(
            Warmup(voice=r.voice, instruct=r.instruct, model=r.model, language=r.language)))

    async def _keep_warm(self, warm: Warmup) -> None:
        """Warm the session's model, then keep a live connection (a call is activity)."""
        while not self.closed:
            try:
                async with AsyncClient(self.cfg.tts_socket) as c:
                    try:
                        info = await c.request(warm)
                        await self.send_json({"type": "warm", **info.to_wire()})
                    except TTSError as e:
                        if e.code in ("bad_request", "not_found", "unsupported"):
                            await self.send_json({"type": "error", "code": e.code, "message": e.message})
                            return
                        raise
                    while True:
                        await asyncio.sleep(10)
                        await c.hello("qwen3tts-bridge ws keepalive")
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - daemon restarting: try again shortly
                log.debug("ws keepalive: %s", e)
                await asyncio.sleep(2)

    # --- sending -----------------------------------------------------------------------

    async def send_json(self, obj: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_text(json.dumps(obj))

    @property
    def sent_ms(self) -> int:
        return int(self.sent_samples * 1000 / self.conf["sample_rate"])

    async def send_audio(self, data: bytes) -> None:
        if not data:
            return
        width = FORMATS[self.conf["format"]].sample_width or 1
        frame = struct.pack(">II", self.seq & 0xFFFFFFFF, self.sent_ms & 0xFFFFFFFF) + data \
            if self.conf["audio_header"] else data
        async with self.send_lock:
            await self.ws.send_bytes(frame)
        self.seq += 1
        self.sent_samples += len(data) // width
        self.sent_bytes += len(data)
        self.metrics.audio_bytes += len(data)

    # --- segments ----------------------------------------------------------------------

    @property
    def streams_text(self) -> bool:
        """Turns go to one running generation each (not SSML, not the clause fallback)."""
        return bool(self.conf["text_mode"] == "stream" and self.conf["text_format"] == "text")

    async def stream_text(self, delta: str) -> None:
        """A delta of the current turn (opened, and announced, by its first one)."""
        if self.turn is None:
            if not delta.strip():
                return
            await announce(self, [], extra=1)
            self.seg_index += 1
            request = dataclasses.replace(self.request(""), text_stream=True,
                                          text_lookahead=self.conf.get("text_lookahead"))
            self.turn = self.segments.add_turn(lambda i: StreamTurn(self.cfg.tts_socket, i, request))
            await self.send_json({"type": "segment", "index": self.turn.index, "text": ""})
        self.turn.add(delta)

    def end_turn(self) -> None:
        if self.turn is not None:
            self.turn.flush()
            self.turn = None

    def queue_segments(self, segments: list[str]) -> list[int]:
        idxs = []
        for text in segments:
            self.seg_index += 1
            idxs.append(self.segments.add(self.request(text)).index)
        return idxs

    async def play(self) -> None:
        """Forward segments' audio strictly in order."""
        async for item in self.segments.in_order():
            if isinstance(item, Marker):
                await self.send_json({"type": "flushed", "sent_ms": self.sent_ms})
            else:
                await self.play_segment(item)

    async def play_segment(self, seg: Segment) -> None:
        try:
            await self._play_segment(seg)
        finally:
            self.backlog -= 1

    async def _play_segment(self, seg: Segment | StreamTurn) -> None:
        start_ms = self.sent_ms  # where this segment's audio begins on the call's timeline
        try:
            async for piece in seg.pieces():
                if isinstance(piece, Chunk):
                    await self.send_audio(piece.audio)
                elif isinstance(piece, Caption):  # the daemon's span, moved onto the call's timeline
                    await self.send_json({"type": "caption", "index": seg.index, "text": piece.text,
                                          "start_ms": start_ms + round(piece.start * 1000),
                                          "end_ms": start_ms + round(piece.end * 1000)})
        except TTSError as e:
            await self.send_json({"type": "error", "index": seg.index, "code": e.code, "message": e.message})
            return
        self.segments_done += 1
        if isinstance(seg, StreamTurn) and seg.fell_back:
            self.conf["text_mode"] = "clause"  # this daemon cannot stream text: clauses from now on
        await self.send_json({"type": "segment.done", "index": seg.index, "sent_ms": self.sent_ms,
                              "start_ms": start_ms, "end_ms": self.sent_ms})

    def flush(self) -> None:
        self.segments.mark(FLUSHED)  # "flushed" once everything before it was sent

    async def cancel(self) -> None:
        """Barge-in: stop forwarding at once, cancel every pending daemon request."""
        if self.player is not None:
            self.player.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.player
        await self.segments.cancel()  # closes the daemon connections -> generation stops within a frame
        self.segments = OrderedSegments(self.cfg.tts_socket, first_index=self.seg_index)  # indices go on
        self.backlog = 0
        self.turn = None
        self.splitter = self.new_splitter()
        self.session_id = uuid.uuid4().hex  # after a barge-in the next answer starts a fresh stream
        self.player = asyncio.create_task(self.play())

    async def close(self) -> None:
        """Hang-up: stop every task of the call and wait until each has let go of its
        daemon connection - nothing of a finished call may keep the daemon awake."""
        self.closed = True
        tasks = [t for t in (self.player, self.keeper) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.segments.cancel()


async def split(feed: Callable[[str], list[str]], text: str) -> list[str]:
    """Run the splitter; off the loop for a large text (the call's messages are handled
    one at a time, so the splitter is never used by two threads at once)."""
    if len(text) > OFF_LOOP_CHARS:
        return await asyncio.to_thread(feed, text)
    return feed(text)


async def announce(s: Session, segments: list[str], extra: int = 0) -> None:
    """Queue and announce clause segments (``extra``: a turn about to be queued)."""
    n = len(segments) + extra
    if s.backlog + n > MAX_WAITING_SEGMENTS:
        raise TTSError("payload_too_large", f"the call would have {s.backlog + n} segments waiting "
                       f"to be spoken (at most {MAX_WAITING_SEGMENTS}); send more after segment.done")
    s.backlog += n
    for n, text in enumerate(segments):
        idx, = s.queue_segments([text])
        await s.send_json({"type": "segment", "index": idx, "text": text})
        if n % ANNOUNCE_BATCH == ANNOUNCE_BATCH - 1:
            await asyncio.sleep(0)  # a long text has thousands: let /health and other calls in


async def speech_stream_ws(ws: WebSocket, cfg: BridgeConfig, metrics: Metrics, request_id: str = "") -> bool:
    """Serve one call; whether it sent any audio (then the daemon is up)."""
    await ws.accept()
    s = Session(ws, cfg, metrics)
    s.player = asyncio.create_task(s.play())
    try:
        await s.send_json({"type": "session", "session": s.conf, "request_id": request_id})
        s.start_keeper()
        while True:
            raw = await ws.receive()
            if raw["type"] == "websocket.disconnect":
                break
            text = raw.get("text")
            if text is None:
                await s.send_json({"type": "error", "code": "bad_request", "message": "send JSON text messages"})
                continue
            try:
                msg = parse_json(text.encode("utf-8", "surrogatepass"))
                if not isinstance(msg, dict):
                    raise TTSError("bad_request", "send JSON objects")
            except TTSError as e:
                await s.send_json({"type": "error", "code": e.code, "message": e.message})
                continue
            kind = msg.get("type")
            try:
                if kind in ("session.update", "config"):
                    before = {k: s.conf.get(k) for k in ("voice", "model", "instructions")}
                    s.update(msg.get("session", msg))
                    await s.send_json({"type": "session", "session": s.conf})
                    if before != {k: s.conf.get(k) for k in ("voice", "model", "instructions")}:
                        s.start_keeper()  # another voice may need another model
                elif kind in ("text", "input_text.delta"):
                    delta = msg.get("text", msg.get("delta", ""))
                    if not isinstance(delta, str):
                        raise TTSError("bad_request", "text must be a string")
                    if len(delta) > cfg.max_input_chars:
                        raise TTSError("payload_too_large", f"a text message carries at most "
                                       f"{cfg.max_input_chars} characters; send the text in parts")
                    if s.streams_text:
                        await s.stream_text(delta)
                    else:
                        await announce(s, await split(s.splitter.feed, delta))
                elif kind in ("flush", "input_text.done"):
                    if s.streams_text or s.turn is not None:
                        s.end_turn()
                    if not s.streams_text:
                        await announce(s, await asyncio.to_thread(s.splitter.flush))  # may hold a long text
                    s.flush()
                elif kind == "cancel":
                    await s.cancel()
                    await s.send_json({"type": "cancelled", "sent_ms": s.sent_ms, "sent_bytes": s.sent_bytes,
                                       "segments_done": s.segments_done})
                elif kind == "close":
                    break
                else:
                    raise TTSError("bad_request", f"unknown message type {kind!r}")
            except TTSError as e:
                await s.send_json({"type": "error", "code": e.code, "message": e.message})
    except WebSocketDisconnect:
        pass
    finally:
        await s.close()
        with contextlib.suppress(Exception):
            await ws.close()
    return s.sent_bytes > 0
