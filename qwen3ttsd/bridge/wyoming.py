"""Wyoming TTS server (Home Assistant) inside the always-on bridge.

    qwen3tts-bridge --wyoming tcp://0.0.0.0:10200 [--wyoming-zeroconf]

The bridge is the process that is always up, so Home Assistant can connect at any time;
the daemon still starts only when something must be spoken and exits when idle.

* ``describe`` answers from the bridge's cache of what the daemon last reported
  (``facts.DaemonFacts``), falling back to Qwen3's built-in speakers: it never wakes the
  daemon.
* ``synthesize`` speaks the whole text as one daemon request.
* ``synthesize-start`` / ``-chunk`` / ``-stop``: the turn is ONE running generation
  (``turns.StreamTurn``: a ``text_stream`` request fed each chunk's text as it comes), so
  speech starts while the LLM is still writing, before any punctuation, with one prosody
  for the whole answer; ``synthesize-stop`` flushes it. A daemon that cannot stream text
  (sequential or upstream backend: ``unsupported``) gets the clause path instead, from the
  text so far on: text is cut at each clause boundary and each segment requested as soon as
  it is known (``segments.OrderedSegments``); so does SSML (one document, spoken at the
  stop). The whole-text ``synthesize`` that streaming clients also send for old servers is
  ignored on a connection that streams; the stream ends with ``synthesize-stopped``.
* Requests on one connection are spoken one after the other; a request's daemon requests are
  sent only when its turn comes (at most three open at once), so a client that sends many
  never fills the daemon's queue, which every client shares.
* Audio goes out as ``audio-start`` / ``audio-chunk`` / ``audio-stop``: the model's rate,
  16-bit, mono, chunk by chunk as the daemon produces it (a call's chunk profile).
* Errors (unknown voice, empty text, daemon unavailable) become a Wyoming ``error`` event,
  then the connection closes - a client never waits for audio that will not come. A client
  may still be writing then (a stream's turn fails at its start, while Home Assistant
  sends the LLM's chunks from its own task): the bridge ends its side, stops the
  generation, and reads and drops what still comes until the client hangs up (at most
  ``LINGER_S``), as closing with data unread would reset the connection and lose the event.
* A client that disconnects cancels its generation (the daemon connections close): the
  daemon stops it within one step, also mid-turn.

* Budgets: at most ``max_connections`` connections (more get a ``busy`` error event and
  are closed); a connection that sends no whole event for ``wyoming_idle_timeout`` while
  nothing is being spoken is closed (idle, stuck in half an event, or silent in the middle
  of a stream: its running generation waits in the daemon), as is one that stops reading
  audio for as long; events are strict JSON of bounded size - anything else is a
  ``bad_request`` error event, then the connection closes.

Wyoming has no authentication: bind it to the LAN interface Home Assistant uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from typing import Any, AsyncGenerator, AsyncIterator, cast
from urllib.parse import urlparse

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from .. import __version__
from ..client import AsyncClient
from ..config import BridgeConfig
from ..errors import TTSError
from ..formats import CHUNK_PROFILES, FORMATS, MODEL_RATE
from ..messages import Chunk, Synthesize as SynthesizeRequest, Warmup
from ..ratelog import RateLimitedLog
from ..text.language import LANG_CODES
from ..text.split import IncrementalSplitter, WholeDocument
from ..text.ssml import is_ssml
from .facts import DaemonFacts
from .listeners import MAX_WAITING_SEGMENTS
from .metrics import Metrics
from .openai_compat import VOICE_MAP, parse_json
from .segments import OrderedSegments, Piece, Segment
from .turns import StreamTurn

log = logging.getLogger("qwen3tts.bridge.wyoming")
Pieces = AsyncGenerator[Piece, None]          # a request's audio and captions (closed when left)

FORMAT = "pcm16"                             # what we ask the daemon for: the model's rate, mono
RATE, WIDTH, CHANNELS = MODEL_RATE, FORMATS[FORMAT].sample_width or 2, 1
CHUNKS = CHUNK_PROFILES["call"]              # a voice assistant is a call: first audio soonest
MAX_EVENT_BYTES = 1 << 20                    # a text event is small; refuse anything bigger
LINGER_S = 2.0                               # after an error event: what the client still sends is dropped so long
QWEN = Attribution(name="Qwen team, Alibaba Cloud", url="https://github.com/QwenLM/Qwen3-TTS")
PROGRAM = Attribution(name="qwen3ttsd", url="https://github.com/QwenLM/Qwen3-TTS")
# Qwen language name -> ISO 639-1 (what Home Assistant pipelines use)
ISO_CODES = {name: code for code, name in reversed(list(LANG_CODES.items()))}
# a voice request that names only a language gets that language's native speaker
NATIVE_SPEAKER = {"english": "ryan", "chinese": "vivian", "japanese": "ono_anna", "korean": "sohee"}
# shown in Home Assistant's voice picker (every speaker speaks every language)
SPEAKER_NOTES = {"vivian": "female, Chinese", "serena": "female, Chinese", "uncle_fu": "male, Chinese",
                 "dylan": "male, Beijing Chinese", "eric": "male, Sichuan Chinese", "ryan": "male, English",
                 "aiden": "male, American English", "ono_anna": "female, Japanese", "sohee": "female, Korean"}
DEFAULT_SPEAKER = "ryan"


def qwen_language(code: str | None) -> str:
    """'en', 'en-US', 'en_GB', 'English' -> 'english'; None/'' -> 'auto'."""
    if not code:
        return "auto"
    c = code.strip().lower()
    return LANG_CODES.get(c.replace("_", "-").split("-")[0], c)


def voice_params(voice: dict[str, Any] | None) -> dict[str, str]:
    """Wyoming ``voice`` {name, language, speaker} -> daemon voice + language.

    Read from the raw event: the wyoming package keeps the language only when no name is
    given, but a client may send both."""
    voice = voice if isinstance(voice, dict) else {}
    language = qwen_language(voice.get("language"))
    name = voice.get("speaker") or voice.get("name") or NATIVE_SPEAKER.get(language, DEFAULT_SPEAKER)
    name = str(name)
    return {"voice": VOICE_MAP.get(name.lower(), name), "language": language}


def build_info(facts: DaemonFacts) -> Info:
    # ISO codes only (what Home Assistant matches pipelines on); dialects ride on "zh"
    langs = sorted({ISO_CODES[lang] for lang in facts.language_names() if lang in ISO_CODES})
    voices = [TtsVoice(name=s, description=f"{s} ({SPEAKER_NOTES.get(s, 'built-in speaker')})",
                       attribution=QWEN, installed=True,
                       version=facts.model_for("custom_voice", s) or "Qwen3-TTS CustomVoice", languages=langs)
              for s in facts.speakers()]
    voices += [TtsVoice(name=c.name, description=f"{c.name} (saved clone voice)", attribution=QWEN,
                        installed=True, version=facts.model_for("base") or "Qwen3-TTS Base", languages=langs)
               for c in facts.clones()]
    program = TtsProgram(name="qwen3ttsd", description="Qwen3-TTS, streaming (qwen3ttsd)", attribution=PROGRAM,
                         installed=True, version=__version__, voices=voices, supports_synthesize_streaming=True)
    return Info(tts=[program])


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """One Wyoming event, or None at EOF; ``bad_request`` for a malformed or oversized one.

    Like ``wyoming.event.async_read_event`` but with a size limit (that one reads whatever
    ``data_length`` / ``payload_length`` a peer announces into memory) and strict JSON (no
    NaN/Infinity, no deep nesting, no lone surrogates: ``openai_compat.parse_json``)."""
    try:
        line = await reader.readline()
        if not line:
            return None
        head = parse_json(line)
        if not isinstance(head, dict) or not isinstance(head.get("type"), str):
            raise TTSError("bad_request", "a Wyoming event is a JSON object with a type")
        data = head.get("data") or {}
        if not isinstance(data, dict):
            raise TTSError("bad_request", "event data must be a JSON object")
        n, m = head.get("data_length") or 0, head.get("payload_length") or 0
        if not (type(n) is int and type(m) is int and 0 <= n and 0 <= m and n + m <= MAX_EVENT_BYTES):
            raise TTSError("bad_request", f"event data and payload must be at most {MAX_EVENT_BYTES} bytes")
        if n:
            more = parse_json(await reader.readexactly(n))
            if not isinstance(more, dict):
                raise TTSError("bad_request", "event data must be a JSON object")
            data.update(more)
        payload = await reader.readexactly(m) if m else None
        return Event(type=head["type"], data=data, payload=payload)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    except ValueError:  # a line over the reader's limit
        raise TTSError("bad_request", "a Wyoming event line is too long") from None


def check_speakable(text: str) -> None:
    if not any(ch.isalnum() for ch in text):
        raise TTSError("bad_request", "nothing to speak: the text is empty")


def as_ssml(text: str) -> str:
    """Wyoming's ``text_format: ssml`` may carry a fragment: give it its <speak> root."""
    return text if is_ssml(text) else f"<speak>{text}</speak>"


class Turn(StreamTurn):
    """A streamed utterance as one running generation. Unlike ``StreamTurn``'s own fallback
    (the whole turn at the flush), a daemon that cannot stream text gets the utterance's
    clause path at once: the text so far is split, the rest follows as it comes."""

    def __init__(self, utterance: Utterance, request: SynthesizeRequest) -> None:
        super().__init__(utterance.handler.service.cfg.tts_socket, 0, request)
        self.utterance = utterance

    async def _whole(self) -> AsyncIterator[Piece]:
        self.utterance.to_clauses()
        async with contextlib.aclosing(self.utterance.clauses()) as pieces:
            async for piece in pieces:
                yield piece


class Utterance:
    """One request being spoken: text in (one running generation, or segments), Wyoming
    audio events out."""

    def __init__(self, handler: "WyomingHandler", voice: dict[str, Any] | None, streaming: bool,
                 ssml: bool = False) -> None:
        self.handler = handler
        self.streaming = streaming
        cfg = handler.service.cfg
        v = voice_params(voice)
        self.request = SynthesizeRequest(
            text="-", voice=v["voice"], language=v["language"], format=FORMAT, sample_rate=RATE, priority="realtime",
            first_chunk_frames=CHUNKS.first_chunk_frames, chunk_frames=CHUNKS.chunk_frames,
            session=uuid.uuid4().hex)  # one codec stream for the utterance: seamless joins
        # held until the utterances before it on the connection are spoken: a client's many
        # requests wait here, never in the daemon's queue (shared by every client)
        self.segments = OrderedSegments(cfg.tts_socket, held=True)
        # SSML is spoken as one document (its tags span sentences); the daemon splits it
        self.splitter = WholeDocument(cfg.max_input_chars) if ssml else IncrementalSplitter()
        self.ssml = ssml
        self.chars = 0
        self.reserved = 0  # of the connection's waiting_segments
        self.turn: Turn | None = None  # the running generation, until a fallback to clauses
        if streaming and not ssml and handler.streams_text:
            self._reserve()
            self.turn = Turn(self, dataclasses.replace(self.request, text="", text_stream=True))
        # a stream's text may take a while to reach its first clause (and its turn's own
        # request waits for the utterances before it): start the daemon and load the
        # voice's model meanwhile
        self.warm = asyncio.create_task(self._warm_up()) if streaming else None

    async def _warm_up(self) -> None:
        with contextlib.suppress(Exception):
            async with AsyncClient(self.handler.service.cfg.tts_socket) as c:
                await c.request(Warmup(voice=self.request.voice, language=self.request.language))

    def _reserve(self) -> None:
        h = self.handler
        if h.waiting_segments >= MAX_WAITING_SEGMENTS:  # bounds the bridge's memory per connection
            raise TTSError("payload_too_large", f"at most {MAX_WAITING_SEGMENTS} segments may wait on one "
                           "connection; send more after audio-stop")
        h.waiting_segments += 1
        self.reserved += 1

    def add(self, text: str) -> None:
        self._reserve()
        self.segments.add(dataclasses.replace(self.request, text=text))

    async def close(self) -> None:
        if self.warm is not None:
            self.warm.cancel()
        await self.segments.cancel()

    def feed(self, text: str) -> None:
        self.chars += len(text)
        if self.chars > self.handler.service.cfg.max_input_chars:
            raise TTSError("payload_too_large", "text is longer than the bridge's max_input_chars")
        if self.turn is not None:
            self.turn.add(text)
        else:
            self.feed_clauses(text)

    def finish(self) -> None:
        """The text is complete. A streamed answer with nothing to say (an emoji, "...") ends
        with no audio, as an empty answer should (the daemon starts no generation for it);
        a whole-text ``synthesize`` of nothing is refused before it gets here."""
        if self.turn is not None:
            self.turn.flush()
            return
        for seg in self.splitter.flush():
            self.add(as_ssml(seg) if self.ssml else seg)
        if self.segments.count == 0 and not self.streaming:
            raise TTSError("bad_request", "nothing to speak: the text is empty")
        self.segments.close()

    def to_clauses(self) -> None:
        """The daemon cannot stream text: the clause path from here on (this connection's
        next streams too), the turn's text so far first."""
        turn, self.turn = self.turn, None
        assert turn is not None
        self.handler.streams_text = False
        self.feed_clauses(turn.text)
        if turn.flushed.is_set():
            self.finish()

    def feed_clauses(self, text: str) -> None:
        for seg in self.splitter.feed(text):
            self.add(seg)

    async def clauses(self) -> AsyncGenerator[Piece, None]:
        """The segments' audio and captions, in order."""
        async for seg in self.segments.in_order():
            if isinstance(seg, Segment):
                async with contextlib.aclosing(cast(Pieces, seg.pieces())) as pieces:
                    async for piece in pieces:
                        yield piece

    async def audio(self) -> AsyncGenerator[bytes, None]:
        """The utterance's audio as the daemon produces it; raises its TTSError."""
        if self.turn is not None and not self.handler.streams_text:  # an earlier turn fell back
            self.to_clauses()
        source = cast(Pieces, self.turn.pieces()) if self.turn is not None else self.clauses()
        try:
            async with contextlib.aclosing(source) as pieces:
                async for piece in pieces:
                    if isinstance(piece, Chunk) and piece.audio:
                        yield piece.audio
        finally:
            await self.segments.cancel()

    async def speak(self) -> None:
        """Send the audio as it comes; on failure an ``error`` event, then hang up."""
        h = self.handler
        metrics = h.service.metrics
        if metrics is not None:
            metrics.active += 1
        sent = 0
        self.segments.start()
        try:
            async with contextlib.aclosing(self.audio()) as audio:  # a cancel closes the daemon requests
                async for data in audio:
                    if sent == 0:
                        await h.write_event(AudioStart(rate=RATE, width=WIDTH, channels=CHANNELS).event())
                    await h.write_event(AudioChunk(rate=RATE, width=WIDTH, channels=CHANNELS, audio=data,
                                                   timestamp=sent * 1000 // (RATE * WIDTH)).event())
                    sent += len(data)
                    if metrics is not None:
                        metrics.audio_bytes += len(data)
            if sent == 0:
                await h.write_event(AudioStart(rate=RATE, width=WIDTH, channels=CHANNELS).event())
            await h.write_event(AudioStop(timestamp=sent * 1000 // (RATE * WIDTH)).event())
            if self.streaming:
                await h.write_event(SynthesizeStopped().event())
            h.service.facts.refresh_soon()  # the daemon is up now: learn its voices for describe
        except TTSError as e:
            await h.fail(e)
        finally:
            if metrics is not None:
                metrics.active -= 1


class WyomingHandler(AsyncEventHandler):
    """One client connection. Requests on it are spoken one after the other."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 service: "WyomingService") -> None:
        super().__init__(reader, writer)
        self.service = service
        self.stream: Utterance | None = None      # the open synthesize-start .. -stop
        self.streamed = False                     # this connection is a streaming client's
        self.streams_text = True                  # False once the daemon answered `unsupported`
        self.task: asyncio.Task[None] | None = None  # the latest utterance being spoken
        self.waiting_segments = 0                 # of the utterances not yet finished
        self.progress = time.monotonic()          # last whole event read, or speech ended
        self.failed_at: float | None = None       # when an error event was sent (then: linger)

    async def run(self) -> None:
        service = self.service
        if service.open >= service.cap:
            service.refused()  # logged at most once per interval: not through fail()
            with contextlib.suppress(Exception):
                await self.write_event(Error(text="too many Wyoming connections; try again later",
                                             code="busy").event())
            self.writer.close()
            return
        service.open += 1
        try:
            while (event := await self.next_event()) is not None:
                if not await self.handle_event(event):
                    break
        except TTSError as e:
            await self.fail(e)
        finally:
            service.open -= 1
            await self.disconnect()
            self.writer.close()

    def idle_for(self) -> float:
        if self.stream is None and self.task is not None and not self.task.done():
            return 0.0  # speaking: the client waits for audio, it need not send anything
        # (an open stream waits for the client's text: a client that sends none is idle)
        return time.monotonic() - self.progress

    async def next_event(self) -> Event | None:
        """The next event; None at EOF or after ``wyoming_idle_timeout`` without one."""
        limit = self.service.cfg.wyoming_idle_timeout
        read = asyncio.ensure_future(read_event(self.reader))
        try:
            while not read.done():
                await asyncio.wait({read}, timeout=min(1.0, limit / 4, LINGER_S / 4))
                if self.lingered():
                    return None
                if not read.done() and self.idle_for() > limit:
                    log.info("wyoming: closing a connection idle for %.0f s", limit)
                    return None
            event = read.result()
            self.progress = time.monotonic()
            return None if self.lingered() else event
        finally:
            read.cancel()

    def lingered(self) -> bool:
        return self.failed_at is not None and time.monotonic() - self.failed_at > LINGER_S

    async def write_event(self, event: Event) -> None:
        """Bounded: a client that stops reading audio is cut off (``client_stalled``)."""
        try:
            await asyncio.wait_for(super().write_event(event), self.service.cfg.wyoming_idle_timeout)
        except TimeoutError:
            self.writer.transport.abort()  # close() would wait for the reader that stalled
            raise TTSError("client_stalled", "the Wyoming client stopped reading audio") from None

    async def handle_event(self, event: Event) -> bool:
        if self.failed_at is not None:
            return True  # after the error event: dropped until the client hangs up
        try:
            return await self._handle(event)
        except TTSError as e:
            await self.fail(e)
            return True

    async def _handle(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.service.facts.refresh_if_running(timeout=1.0)
            await self.write_event(build_info(self.service.facts).event())
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        elif SynthesizeStart.is_type(event.type):
            if self.stream is not None:
                raise TTSError("bad_request", "synthesize-start inside an open stream")
            self.stream = Utterance(self, event.data.get("voice"), streaming=True,
                                    ssml=event.data.get("text_format") == "ssml")
            self.streamed = True
            self._speak(self.stream)
        elif SynthesizeChunk.is_type(event.type):
            if self.stream is None:
                raise TTSError("bad_request", "synthesize-chunk without synthesize-start")
            self.stream.feed(str(event.data.get("text") or ""))
        elif SynthesizeStop.is_type(event.type):
            if self.stream is None:
                raise TTSError("bad_request", "synthesize-stop without synthesize-start")
            stream, self.stream = self.stream, None
            stream.finish()
        elif Synthesize.is_type(event.type):
            if self.streamed:
                # the whole-text copy a streaming client sends for old servers (before or,
                # from some clients, after synthesize-stop): one request per connection
                return True
            text = str(event.data.get("text") or "")
            check_speakable(text)
            if len(text) > self.service.cfg.max_input_chars:
                raise TTSError("payload_too_large", "text is longer than the bridge's max_input_chars")
            u = Utterance(self, event.data.get("voice"), streaming=False)
            if event.data.get("text_format") == "ssml":
                text = as_ssml(text)
            u.add(text)  # the daemon splits a whole text itself, on one codec stream
            u.segments.close()
            self._speak(u)
        return True

    def _speak(self, u: Utterance) -> None:
        prev = self.task

        async def after_previous() -> None:
            try:
                if prev is not None:
                    with contextlib.suppress(Exception):
                        await prev
                await u.speak()
            finally:
                self.waiting_segments -= u.reserved
                self.progress = time.monotonic()  # the idle clock starts when speech ends
                await u.close()

        self.task = asyncio.create_task(after_previous())

    async def fail(self, e: TTSError) -> None:
        """The ``error`` event, then EOF; the generation stops; the read loop drops what the
        client still sends until it hangs up or ``LINGER_S`` passed (module docstring)."""
        if self.failed_at is not None:
            return
        self.failed_at = time.monotonic()
        log.info("wyoming: %s: %s", e.code, e.message)
        with contextlib.suppress(Exception):
            await self.write_event(Error(text=e.message, code=e.code).event())
            if self.writer.can_write_eof():
                self.writer.write_eof()
        await self.disconnect()

    async def disconnect(self) -> None:
        """The client went away (or we hung up): cancel generation in the daemon."""
        if self.stream is not None:
            await self.stream.close()
            self.stream = None
        task = self.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class WyomingService:
    """The server, its handlers and (optionally) the zeroconf announcement."""

    def __init__(self, cfg: BridgeConfig, facts: DaemonFacts, metrics: Metrics | None = None,
                 cap: int | None = None) -> None:
        self.cfg = cfg
        self.facts = facts
        self.metrics = metrics
        self.cap = cfg.max_connections if cap is None else cap
        self.open = 0                           # connections being served
        self.refusals = RateLimitedLog(log)
        if urlparse(cfg.wyoming).scheme not in ("tcp", "unix"):
            raise ValueError(f"--wyoming must be tcp://HOST:PORT or unix://PATH, not {cfg.wyoming!r}")
        self.server = AsyncServer.from_uri(cfg.wyoming)
        self.zeroconf: Any = None  # wyoming.zeroconf.HomeAssistantZeroconf, imported only when asked

    def refused(self) -> None:
        if self.metrics is not None:
            self.metrics.refused_connection("wyoming")
        self.refusals.hit("Wyoming connection cap (%d) reached: refusing new connections", self.cap)

    async def start(self) -> None:
        await self.server.start(lambda r, w: WyomingHandler(r, w, self))
        log.info("Wyoming TTS on %s", self.cfg.wyoming)
        if self.cfg.wyoming_zeroconf:
            await self._announce()

    async def _announce(self) -> None:
        uri = urlparse(self.cfg.wyoming)
        if uri.scheme != "tcp" or uri.port is None:
            log.warning("--wyoming-zeroconf needs a tcp://HOST:PORT Wyoming address; not announcing")
            return
        from wyoming.zeroconf import HomeAssistantZeroconf  # imports zeroconf: only when asked

        name = self.cfg.wyoming_zeroconf if self.cfg.wyoming_zeroconf not in ("1", "true", "yes") else None
        host = uri.hostname if uri.hostname not in ("0.0.0.0", "::", "") else None
        try:
            self.zeroconf = HomeAssistantZeroconf(port=uri.port, name=name, host=host)
            await self.zeroconf.register_server()
        except OSError as e:  # no multicast route (containers without host networking)
            log.warning("zeroconf announcement failed: %s", e)

    async def stop(self) -> None:
        await self.server.stop()
        if self.zeroconf is not None:
            with contextlib.suppress(Exception):
                await self.zeroconf._aiozc.async_close()


@contextlib.asynccontextmanager
async def wyoming_service(cfg: BridgeConfig, facts: DaemonFacts, metrics: Metrics | None = None,
                          cap: int | None = None) -> AsyncIterator[Any]:
    """Run the Wyoming server for the app's lifetime when ``cfg.wyoming`` is set."""
    if not cfg.wyoming:
        yield None
        return
    service = WyomingService(cfg, facts, metrics, cap)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
