"""A stand-in daemon for fast bridge and client tests: the real wire protocol on a real Unix
socket, no model. It speaks each request's text back as its audio (``b"<text>|<n>;"`` per
chunk), so a test can check what was spoken and in which order, and it counts how many
synthesize requests are open at once. A ``text_stream`` request speaks each ``$/text`` piece
as one chunk (its bytes) when it arrives, or answers ``unsupported`` (``stream_unsupported``:
the sequential backend). Runs its own event loop in a thread, so Starlette's
TestClient (another loop) and sync clients can talk to it."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen3ttsd import messages as M, protocol as P
from qwen3ttsd.errors import TTSError, text_stream_unsupported

MODELS = [{"name": "custom_voice", "type": "custom_voice", "size": "0.6B", "loaded": False,
           "speakers": ["ryan", "vivian"], "languages": ["auto", "english"], "future_key": 1},
          {"name": "base", "type": "base", "size": "0.6B", "loaded": True, "speakers": [],
           "languages": ["auto", "english"]}]


def done(req: M.Synthesize, chunks: int) -> M.SynthesizeResult:
    """The response that ends a fake synthesis."""
    return M.SynthesizeResult(chunks=chunks, bytes=0, samples=0, duration_s=0.1, frames=3, segments=1,
                              first_audio_s=0.0, total_s=0.0, rtf=None, model="custom_voice",
                              format=req.format, sample_rate=req.sample_rate, language="english")


@dataclass
class FakeDaemon:
    path: Path
    chunks: int = 2                      # audio chunks per synthesize request
    chunk_delay: float = 0.0             # seconds before each chunk
    busy: dict[str, int] = field(default_factory=dict)      # text -> refuse with `busy` this many times
    hang_up: dict[str, int] = field(default_factory=dict)   # text -> close before audio this many times
    fail_after_audio: dict[str, str] = field(default_factory=dict)  # text -> error code after its audio
    open_now: int = 0
    max_open: int = 0
    texts: list[str] = field(default_factory=list)           # synthesize texts in order of arrival
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # answer text_stream requests `unsupported` (sequential backend): "at once" or "at flush"
    stream_unsupported: str = ""
    stream_error: str = ""               # answer text_stream requests with this plain error code
    stream_hang_up: int = 0              # close text_stream requests' connections this many times

    def last(self, method: str = "tts.synthesize") -> dict[str, Any]:
        """The params of the last ``method`` request (the bridge also asks models/voices)."""
        return [p for m, p in self.requests if m == method][-1]

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_unix_server(self._serve, str(self.path)), self.loop).result(5)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:  # open requests (a streamed turn waits for its text): end them here
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks: list[asyncio.Task[None]] = []
        streams: dict[int, asyncio.Queue[M.TextAppend]] = {}   # text_stream requests' $/text
        try:
            while (msg := await P.read_frame(reader, P.MAX_REQUEST_FRAME)) is not None:
                if msg[0] != P.REQUEST:
                    # $/cancel: closing the connection is what the bridge does
                    if msg[1] == P.N_TEXT and (t := M.TextAppend.from_wire(msg[2])) and t.msgid in streams:
                        streams[t.msgid].put_nowait(t)
                    continue
                msgid, method, params = P.parse_request(msg)
                self.requests.append((method, params))
                if params.get("text_stream"):
                    streams[msgid] = asyncio.Queue()
                    tasks.append(asyncio.create_task(self._answer_stream(writer, msgid, params, streams[msgid])))
                    continue
                tasks.append(asyncio.create_task(self._answer(writer, msgid, method, params)))
        except (ConnectionError, P.ProtocolError):
            pass
        finally:
            for t in tasks:
                t.cancel()
            writer.close()

    async def _answer(self, w: asyncio.StreamWriter, msgid: int, method: str, params: dict[str, Any]) -> None:
        try:
            if method == M.Synthesize.method:
                await self._synthesize(w, msgid, M.Synthesize.from_wire(params))
                return
            result = self.result(method, params)
            w.write(P.response(msgid, None, result))
        except TTSError as e:
            w.write(P.response(msgid, e.to_wire()))

    async def _answer_stream(self, w: asyncio.StreamWriter, msgid: int, params: dict[str, Any],
                             text: asyncio.Queue[M.TextAppend]) -> None:
        """A ``text_stream`` request: each ``$/text`` piece is spoken (as its bytes) at once."""
        if self.stream_unsupported:
            while self.stream_unsupported == "at flush" and not (await text.get()).flush:
                pass
            w.write(P.response(msgid, text_stream_unsupported("the fake daemon").to_wire()))
            return
        if self.stream_error:
            w.write(P.response(msgid, TTSError(self.stream_error, "no such model installed").to_wire()))
            return
        if self.stream_hang_up > 0:
            self.stream_hang_up -= 1
            w.close()
            return
        req = M.Synthesize.from_wire(params)
        self.open_now += 1
        try:
            w.write(P.notification(M.Start.method, M.Start(msgid, req.sample_rate, req.format, "audio/pcm",
                                                         "custom_voice", 1).to_wire()))
            spoken, n = req.text, 0
            while not (piece := await text.get()).flush:
                spoken += piece.text
                if piece.text:
                    w.write(P.notification(M.Chunk.method, M.Chunk(msgid, n, piece.text.encode()).to_wire()))
                    n += 1
            self.texts.append(spoken)
            w.write(P.response(msgid, None, done(req, n).to_wire()))
        finally:
            self.open_now -= 1

    def result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "rpc.hello":
            return {"proto": 1, "server": "fake", "version": "0", "capabilities": [], "max_frame": 1,
                    "admin": False, "socket": "tts", "new_field": True}
        if method == "tts.models":
            return MODELS
        if method == "tts.languages":
            return ["auto", "english"]
        if method in ("voices.list", "tts.voices"):
            return {"speakers": ["ryan"], "clones": [{"name": "narrator", "ref_text": "hi", "created": 5.0,
                                                      "duration_s": 2.5, "consent": "yes"}],
                    "voice_design": False}
        if method == "tts.warmup":
            return {"model": "custom_voice", "was_loaded": True, "load_s": 0.0}
        raise TTSError("no_such_method", method)

    async def _synthesize(self, w: asyncio.StreamWriter, msgid: int, req: M.Synthesize) -> None:
        text = req.text
        if self.busy.get(text, 0) > 0:
            self.busy[text] -= 1
            raise TTSError("busy", "queue full")
        if self.hang_up.get(text, 0) > 0:
            self.hang_up[text] -= 1
            w.close()
            return
        self.texts.append(text)
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            def note(n: M.Progress | M.Start | M.Chunk | M.Caption) -> None:
                w.write(P.notification(n.method, n.to_wire()))

            note(M.Progress(msgid, {"stage": "queued", "position": 0}))
            note(M.Start(msgid, req.sample_rate, req.format, "audio/pcm", "custom_voice", 1))
            note(M.Progress(msgid, {"stage": "generating"}))
            for i in range(self.chunks):
                await asyncio.sleep(self.chunk_delay)
                note(M.Chunk(msgid, i, f"{text}|{i};".encode()))
                await w.drain()
            if text in self.fail_after_audio:
                w.write(P.response(msgid, TTSError(self.fail_after_audio[text], "failed mid-stream").to_wire()))
                return
            note(M.Caption(msgid, 0, text, 0.0, 0.1))
            w.write(P.response(msgid, None, {**done(req, self.chunks).to_wire(), "future_key": "x"}))
        finally:
            self.open_now -= 1
