"""LiveKit Agents TTS for qwen3ttsd: a ``tts.TTS`` with ``streaming=True`` whose
``SynthesizeStream`` runs over the phone WebSocket.

Why not ``livekit.plugins.openai.TTS``: it is not streaming (one HTTP request per sentence,
after LiveKit's own sentence splitter), so the model restarts at every sentence and an
interruption can only drop the HTTP response. Here an agent's reply is one stream on a pooled
WebSocket: ``prewarm()`` (called by ``AgentSession`` when the call starts) opens it, and the
bridge loads the model at connect; LLM tokens go in as they arrive into ONE running generation
per reply (``text_mode: "stream"``), 24 kHz pcm16 frames come out, ``stream.aclose()`` on an
interruption sends ``cancel`` (the server stops generating within a frame, and the connection
goes back to the pool once the server says ``cancelled``), and the server's sentence
``caption`` events, sent while the reply speaks, become the aligned transcript
(``TimedString``) LiveKit syncs its captions with. Any voice works: built-in speakers, OpenAI
names, saved clone voices.

    pip install 'qwen3ttsd[livekit]'
    session = AgentSession(tts=qwen3ttsd.integrations.livekit.TTS(voice="ryan"), ...)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import weakref
from typing import Any

import websockets
from livekit.agents import APIConnectionError, APIConnectOptions, APIError, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given
from livekit.agents.voice.io import TimedString
from websockets.asyncio.client import ClientConnection

from ..errors import CODES
from . import phone

CANCEL_TIMEOUT_S = 5.0   # how long a cancelled stream's connection may take to say "cancelled"


class TTS(tts.TTS[Any]):
    """qwen3ttsd over its phone WebSocket (``/v1/audio/speech/stream``)."""

    def __init__(self, *, base_url: str = "http://127.0.0.1:8880", voice: str | None = None,
                 model: str | None = None, language: str | None = None, instructions: str | None = None,
                 speed: float | None = None, api_key: str | None = None,
                 session: dict[str, Any] | None = None) -> None:
        """``voice``: a built-in speaker, an OpenAI name or a saved clone voice (None: the server's
        default). ``session``: any other ``session.update`` field (``seed``, ``max_frames``...)."""
        super().__init__(capabilities=tts.TTSCapabilities(streaming=True, aligned_transcript=True),
                         sample_rate=phone.SAMPLE_RATE, num_channels=1)
        self._url = phone.ws_url(base_url)
        self._api_key = api_key
        self._opts = phone.SessionOptions(voice=voice, model=model, language=language,
                                          instructions=instructions, speed=speed,
                                          extra=dict(session or {}))
        self._pool = utils.ConnectionPool[ClientConnection](connect_cb=self._connect_ws, close_cb=self._close_ws)
        self._streams: weakref.WeakSet[SynthesizeStream] = weakref.WeakSet()  # open ones, for aclose()
        self._recycling: set[asyncio.Task[None]] = set()

    @property
    def model(self) -> str:
        return self._opts.model or "qwen3-tts"

    @property
    def provider(self) -> str:
        return "qwen3ttsd"

    async def _connect_ws(self, timeout: float) -> ClientConnection:
        try:
            return await websockets.connect(self._url, additional_headers=phone.auth_headers(self._api_key),
                                            open_timeout=timeout, max_size=None)
        except (OSError, websockets.WebSocketException, TimeoutError) as e:
            raise APIConnectionError(f"cannot connect to {self._url}: {e}") from e

    async def _close_ws(self, ws: ClientConnection) -> None:
        await ws.close()

    def prewarm(self) -> None:
        """Open a connection now: the bridge loads the voice's model while the call rings."""
        self._pool.prewarm()

    def update_options(self, *, voice: NotGivenOr[str] = NOT_GIVEN, model: NotGivenOr[str | None] = NOT_GIVEN,
                       language: NotGivenOr[str | None] = NOT_GIVEN,
                       instructions: NotGivenOr[str | None] = NOT_GIVEN,
                       speed: NotGivenOr[float | None] = NOT_GIVEN) -> None:
        """Takes effect from the next stream (each stream starts with a ``session.update``)."""
        asked = dict(voice=voice, model=model, language=language, instructions=instructions, speed=speed)
        changes: dict[str, Any] = {k: v for k, v in asked.items() if is_given(v)}
        self._opts = dataclasses.replace(self._opts, **changes)

    def synthesize(self, text: str, *,
                   conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> tts.ChunkedStream:
        return self._synthesize_with_stream(text, conn_options=conn_options)

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> SynthesizeStream:
        s = SynthesizeStream(tts=self, conn_options=conn_options)
        self._streams.add(s)
        return s

    def _recycle(self, ws: ClientConnection, reading: asyncio.Future[Any] | None) -> None:
        """An interrupted stream's connection: ``cancel``, then back to the pool once the server
        says ``cancelled`` (the rest of the turn's audio is drained); closed if it does not."""
        async def run() -> None:
            try:
                async with asyncio.timeout(CANCEL_TIMEOUT_S):
                    if reading is not None:  # the stream's own read must end before ours starts
                        reading.cancel()
                        await asyncio.wait([reading])
                    await ws.send(json.dumps(phone.CANCEL))
                    async for m in ws:
                        if isinstance(m, str) and json.loads(m).get("type") == "cancelled":
                            self._pool.put(ws)
                            return
            except Exception:  # noqa: BLE001 - a broken connection is closed below
                pass
            self._pool.remove(ws)

        task = asyncio.create_task(run(), name="qwen3ttsd.cancel")
        self._recycling.add(task)
        task.add_done_callback(self._recycling.discard)

    async def aclose(self) -> None:
        for s in list(self._streams):
            await s.aclose()
        self._streams.clear()
        if self._recycling:
            await asyncio.gather(*self._recycling, return_exceptions=True)
        await self._pool.aclose()


class SynthesizeStream(tts.SynthesizeStream):
    """One agent reply: text pieces in as the LLM writes them, one segment per flush."""

    def __init__(self, *, tts: TTS, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, conn_options=conn_options)
        self._qtts = tts
        self._opts = tts._opts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(request_id=utils.shortuuid(), sample_rate=phone.SAMPLE_RATE, num_channels=1,
                                  mime_type="audio/pcm", stream=True)
        pool = self._qtts._pool
        ws = await pool.get(timeout=self._conn_options.timeout)
        self._acquire_time, self._connection_reused = pool.last_acquire_time, pool.last_connection_reused
        turn = _Turn(output_emitter)
        try:
            await ws.send(json.dumps(self._opts.message()))
            sender = asyncio.create_task(self._send_text(ws, turn))
            try:
                await self._receive(ws, turn, sender)
            finally:
                await utils.aio.cancel_and_wait(sender)
        except BaseException:
            self._qtts._recycle(ws, turn.reading)  # interrupted or failed: the server must stop this turn
            raise
        pool.put(ws)

    async def _send_text(self, ws: ClientConnection, turn: _Turn) -> None:
        has_text = False
        async for data in self._input_ch:
            if isinstance(data, self._FlushSentinel):
                if has_text:
                    await ws.send(json.dumps(phone.FLUSH))
                    turn.flushes_sent += 1
                    has_text = False
                continue
            if not has_text:
                turn.segment_ids.append(utils.shortuuid())
                has_text = True
            self._mark_started()
            await ws.send(json.dumps(phone.text(data)))
        turn.input_done = True

    async def _receive(self, ws: ClientConnection, turn: _Turn, sender: asyncio.Task[None]) -> None:
        while not turn.finished:
            recv = turn.reading = turn.reading or asyncio.ensure_future(ws.recv())  # one read at a time
            await asyncio.wait({recv} if sender.done() else {recv, sender}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and not sender.cancelled() and sender.exception() is not None:
                raise APIConnectionError(f"sending text: {sender.exception()}")
            if not recv.done():
                continue  # the input ended: is everything flushed?
            turn.reading = None
            try:
                m = recv.result()
            except websockets.ConnectionClosed as e:
                raise APIConnectionError(f"the server closed the call: {e}") from e
            if isinstance(m, bytes):
                turn.audio(*phone.audio_frame(m))
            else:
                turn.event(json.loads(m))
        if turn.reading is not None:  # (safe in websockets: a cancelled read loses no message)
            turn.reading.cancel()
            await asyncio.wait([turn.reading])
            turn.reading = None


@dataclasses.dataclass
class _Turn:
    """Where a stream stands: its segments (one per flushed piece of text) and which is playing."""

    emitter: tts.AudioEmitter
    segment_ids: list[str] = dataclasses.field(default_factory=list)
    started: int = 0                 # segments started on the emitter
    open: bool = False               # a segment is open (its audio is arriving)
    origin_ms: int = 0               # the open segment's first audio on the call's timeline
    flushes_sent: int = 0
    flushed: int = 0
    input_done: bool = False
    reading: asyncio.Future[Any] | None = None  # the receive in progress

    @property
    def finished(self) -> bool:
        return self.input_done and self.flushed >= self.flushes_sent

    def _open(self, at_ms: int) -> None:
        if not self.open and self.started < len(self.segment_ids):
            self.emitter.start_segment(segment_id=self.segment_ids[self.started])
            self.started += 1
            self.open, self.origin_ms = True, at_ms

    def audio(self, ts_ms: int, pcm: bytes) -> None:
        self._open(ts_ms)
        if self.open:
            self.emitter.push(pcm)

    def event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "caption" and self.open:
            self.emitter.push_timed_transcript([TimedString(w + " ", start_time=a, end_time=b)
                                                for w, a, b in phone.caption_words(ev, self.origin_ms)])
        elif kind == "flushed":
            self._open(int(ev.get("sent_ms", 0)))  # a segment that produced no audio still ends
            if self.open:
                self.emitter.end_segment()
            self.open = False
            self.flushed += 1
        elif kind == "error":
            code = str(ev.get("code"))
            raise APIError(f"qwen3ttsd: {code}: {ev.get('message')}", body=ev,
                           retryable=CODES.get(code, (0, False))[1])
