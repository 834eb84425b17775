"""Pipecat TTS service for qwen3ttsd: Pipecat's own ``WebsocketTTSService`` over the phone
WebSocket.

Why not Pipecat's ``OpenAITTSService``: it makes one HTTP request per sentence, gives up after
3 s without audio, accepts only OpenAI's 13 voice names and cannot stop a generation on
barge-in. This service keeps one WebSocket per call instead: it is opened when the pipeline
starts (the bridge loads the model at connect, so the first reply is warm), LLM tokens go in as
they arrive (``TextAggregationMode.TOKEN`` by default) and a reply is ONE running generation fed
as the LLM writes (``text_mode: "stream"``: heard before any punctuation, no prosody restart at
each clause), audio comes back as 24 kHz pcm16 frames, an interruption becomes ``cancel`` (the
server stops generating within a frame), and the server's sentence ``caption`` events - sent
while the reply speaks - become Pipecat's word timestamps, so its transcripts and sentence
frames follow the audio. Any voice works: built-in speakers, OpenAI names, saved clone voices.

Captions can come before the LLM has ended their sentence (the server speaks a sentence's end
without waiting for the next one's first token). Pipecat's streaming sequencer has no slot for
such a sentence yet and buffers its words, then - when the next token ends it - queues them
behind the sentence's words already waiting to play, which come out first. So the service hands
Pipecat a caption's words only once their sentence has its slot (its announcement frame went
into the audio context) or the turn's text is complete, which is when Pipecat would emit them.

The wire protocol has no context ids: the call speaks its text in order, so audio belongs to
the oldest context not yet ended, a ``flushed`` ends every context sent before that flush, and
after a ``cancel`` everything up to the server's ``cancelled`` belongs to the interrupted turn
and is dropped.

    pip install 'qwen3ttsd[pipecat]'
    tts = Qwen3TTSService(base_url="http://127.0.0.1:8880",
                          settings=Qwen3TTSService.Settings(voice="ryan"))
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    AggregatedTextFrame,
    ErrorFrame,
    Frame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TextAggregationMode, WebsocketTTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.types import NOT_GIVEN, NotGiven
from websockets.protocol import State

from . import phone

# A turn's context ends at the server's "flushed" or at an interruption; the base class's
# quiet-time cut-off (3 s) is only a safety net here, so a slow LLM pause does not end it.
STOP_FRAME_TIMEOUT_S = 10.0


@dataclass
class _Words:
    """A context's caption words on their way to Pipecat (TOKEN aggregation only)."""

    held: list[tuple[str, float]] = field(default_factory=list)  # (word, seconds), in order
    room: int = 0          # words of sentences Pipecat has a slot for, not yet handed over
    all_in: bool = False   # the context's text is complete: every sentence has its slot


@dataclass
class Qwen3TTSSettings(TTSSettings):
    """Runtime-updatable settings (``TTSUpdateSettingsFrame``): a change is sent to the open
    call as a ``session.update``, no reconnect."""

    instructions: str | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    speed: float | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)


class Qwen3TTSService(WebsocketTTSService):
    """Streaming TTS over qwen3ttsd's phone WebSocket (``/v1/audio/speech/stream``)."""

    Settings = Qwen3TTSSettings
    _settings: Qwen3TTSSettings

    def __init__(self, *, base_url: str = "http://127.0.0.1:8880", api_key: str | None = None,
                 settings: Qwen3TTSSettings | None = None, session: dict[str, Any] | None = None,
                 text_aggregation_mode: TextAggregationMode = TextAggregationMode.TOKEN, **kwargs: Any) -> None:
        defaults = Qwen3TTSSettings(model=None, voice=None, language=None,
                                    instructions=None, speed=None)
        if settings is not None:
            defaults.apply_update(settings)
        kwargs.setdefault("stop_frame_timeout_s", STOP_FRAME_TIMEOUT_S)
        super().__init__(sample_rate=phone.SAMPLE_RATE, push_start_frame=True, push_stop_frames=False,
                         push_text_frames=False, pause_frame_processing=True,
                         text_aggregation_mode=text_aggregation_mode, settings=defaults, **kwargs)
        self._url = phone.ws_url(base_url)
        self._api_key = api_key
        self._session_extra = dict(session or {})  # other session.update fields: seed, max_frames...
        self._receive_task: Any = None
        self._speaking: deque[str] = deque()   # contexts sent to the server, oldest first
        self._flushes: deque[str] = deque()    # the context each unanswered "flush" ended
        self._origin_ms: dict[str, int] = {}   # a context's first audio on the call's timeline
        self._cancels = 0                      # "cancel"s sent whose "cancelled" has not come back
        self._words: dict[str, _Words] = {}    # caption words held until Pipecat can place them
        self._hold_words = text_aggregation_mode == TextAggregationMode.TOKEN

    def can_generate_metrics(self) -> bool:
        return True

    def language_to_service_language(self, language: Language) -> str | None:
        return str(language.value).split("-")[0]

    def _options(self) -> phone.SessionOptions:
        s = self._settings

        def given(v: Any) -> Any:
            return None if isinstance(v, NotGiven) else v

        return phone.SessionOptions(voice=given(s.voice), model=given(s.model),
                                    language=given(s.language), instructions=given(s.instructions),
                                    speed=given(s.speed), extra=self._session_extra)

    # --- connection: opened when the pipeline starts, so the server warms the model ------

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]  # as Pipecat's own
        await super().setup(setup)
        await self._connect()

    async def _connect(self) -> None:
        await super()._connect()
        await self._connect_websocket()
        if self._websocket and not self._receive_task:
            self._receive_task = self.create_task(self._receive_task_handler(self._report_error))

    async def _disconnect(self) -> None:
        await super()._disconnect()
        if self._receive_task:
            await self.cancel_task(self._receive_task)
            self._receive_task = None
        await self._disconnect_websocket()

    async def _connect_websocket(self) -> None:
        try:
            if self._websocket and self._websocket.state is State.OPEN:
                return
            self._websocket = await self._websocket_connect(
                self._url, additional_headers=phone.auth_headers(self._api_key))
            self._forget()
            self._cancels = 0
            await self._send(self._options().message())
            await self._call_event_handler("on_connected")
        except Exception as e:  # noqa: BLE001 - reported as Pipecat reports connection errors
            self._websocket = None
            await self.push_error(error_msg=f"{self} cannot connect to {self._url}: {e}", exception=e)
            await self._call_event_handler("on_connection_error", f"{e}")

    async def _disconnect_websocket(self) -> None:
        try:
            await self.stop_all_metrics()
            if self._websocket:
                await self._websocket.close()
        except Exception as e:  # noqa: BLE001 - closing a broken socket
            logger.debug(f"{self} close: {e}")
        finally:
            self._websocket = None
            self._forget()
            await self._call_event_handler("on_disconnected")

    def _forget(self) -> None:
        self._speaking.clear()
        self._flushes.clear()
        self._origin_ms.clear()
        self._words.clear()

    async def _send(self, msg: dict[str, Any]) -> None:
        if self._websocket is None:
            raise ConnectionError("not connected")
        await self._websocket.send(json.dumps(msg))

    async def _update_settings(self, delta: TTSSettings) -> dict[str, Any]:  # type: ignore[override]
        changed = await super()._update_settings(delta)
        if changed and self._websocket and self._websocket.state is State.OPEN:
            await self._send(self._options().message())  # the open call takes it from its next text
        return changed

    # --- text in -----------------------------------------------------------------------

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        try:
            if not self._websocket or self._websocket.state is State.CLOSED:
                await self._connect()
            if context_id not in self._speaking:
                self._speaking.append(context_id)
            await self._send(phone.text(text))
            await self.start_tts_usage_metrics(text)
        except Exception as e:  # noqa: BLE001 - the turn fails, the pipeline goes on
            yield ErrorFrame(error=f"{self} error sending text: {e}")
            return
        yield None  # the audio arrives on the receive task

    async def flush_audio(self, context_id: str | None = None) -> None:
        """End of the LLM's turn: the server speaks what it holds, then answers ``flushed``."""
        ctx = context_id or (self._speaking[-1] if self._speaking else None)
        if ctx is not None:  # Pipecat calls this after the turn's last sentence got its slot
            await self._all_in(ctx)
        if self._websocket and ctx is not None and ctx in self._speaking and ctx not in self._flushes:
            try:
                await self._send(phone.FLUSH)
                self._flushes.append(ctx)
            except Exception as e:  # noqa: BLE001 - the receive task reconnects
                logger.warning(f"{self} flush: {e}")

    async def append_to_audio_context(self, context_id: str | None, frame: Any) -> None:
        await super().append_to_audio_context(context_id, frame)
        if (context_id and self._hold_words and isinstance(frame, AggregatedTextFrame)
                and not isinstance(frame, TTSTextFrame) and frame.will_be_spoken):
            # Pipecat's streaming sequencer announces a sentence it now has a slot for
            self._words.setdefault(context_id, _Words()).room += len(frame.text.split())
            await self._pass_words(context_id)

    async def _all_in(self, ctx: str) -> None:
        """The context's text is complete: every held word goes to Pipecat."""
        self._words.setdefault(ctx, _Words()).all_in = True
        await self._pass_words(ctx)

    async def _pass_words(self, ctx: str) -> None:
        """Hand Pipecat the held words it has sentences for, in order."""
        w = self._words.get(ctx)
        if w is None or not w.held:
            return
        n = len(w.held) if w.all_in or not self._hold_words else min(w.room, len(w.held))
        words, w.held = w.held[:n], w.held[n:]
        w.room = max(0, w.room - n)
        if words:
            await self.add_word_timestamps(words, ctx)

    async def on_audio_context_interrupted(self, context_id: str) -> None:
        """Barge-in: one ``cancel`` for everything the call still has queued."""
        await self.stop_all_metrics()
        self._words.pop(context_id, None)
        if self._speaking and self._websocket:
            self._forget()
            try:
                await self._send(phone.CANCEL)
                self._cancels += 1
            except Exception as e:  # noqa: BLE001 - a closed socket has stopped generating anyway
                logger.warning(f"{self} cancel: {e}")
        await super().on_audio_context_interrupted(context_id)

    # --- audio and events out ------------------------------------------------------------

    async def _receive_messages(self) -> None:
        assert self._websocket is not None
        async for message in self._websocket:
            if isinstance(message, bytes):
                await self._on_audio(message)
            else:
                await self._on_event(json.loads(message))

    async def _on_audio(self, message: bytes) -> None:
        if self._cancels or not self._speaking:
            return  # the interrupted turn's last frames
        ctx = self._speaking[0]
        ts_ms, pcm = phone.audio_frame(message)
        self._origin_ms.setdefault(ctx, ts_ms)
        await self.append_to_audio_context(ctx, TTSAudioRawFrame(pcm, phone.SAMPLE_RATE, 1, context_id=ctx))

    async def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "error":
            await self.push_error(error_msg=f"{self}: {ev.get('code')}: {ev.get('message')}")
        elif kind == "cancelled":
            self._cancels = max(0, self._cancels - 1)
        elif self._cancels:
            return  # the interrupted turn's captions and flush
        elif kind == "caption" and self._speaking:
            ctx = self._speaking[0]
            origin = self._origin_ms.setdefault(ctx, int(ev["start_ms"]))
            self._words.setdefault(ctx, _Words()).held.extend(
                (w, start) for w, start, _ in phone.caption_words(ev, origin))
            await self._pass_words(ctx)
        elif kind == "flushed" and self._flushes:
            await self.stop_all_metrics()
            last = self._flushes.popleft()  # everything sent before this flush has been spoken
            while last in self._speaking:
                await self._end_context(self._speaking.popleft())

    async def _end_context(self, ctx: str) -> None:
        self._origin_ms.pop(ctx, None)
        if ctx in self._words:  # (a context ends after its flush: nothing is held by then)
            await self._all_in(ctx)
            del self._words[ctx]
        if self.audio_context_available(ctx):
            await self.append_to_audio_context(ctx, TTSStoppedFrame(context_id=ctx))
            await self.remove_audio_context(ctx)
