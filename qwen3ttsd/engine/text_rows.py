"""Streamed text in the batched engine: rows whose trailing text arrives while they generate.

A stream with a :class:`.text_feed.TextFeed` (``Stream.text``) is parked at admission until
``text_lookahead`` tokens are final or the turn is flushed; then its streaming-text prompt
is built (:meth:`.prompts.PromptBuilder.build_streaming`) and it joins like any row. Every
step, each such row's new tokens (read up to ``AHEAD_TOKENS`` ahead of it, so a long text
given at once is read as it is spoken) are projected and appended to its trailing text; a row
whose next text vector has not arrived yet *waits*: it is left out of the step (its pending
frame is still completed and its audio delivered) and the rest of the batch goes on - it
never generates ahead on ``tts_pad``. At flush it gets ``tts_eos`` and finishes as qwen-tts
does. Waiting changes no numbers: a row's codes depend on its text, not on when it came.

What :mod:`.batched` calls (small hooks, so the step engine stays one loop):
``park`` / ``starting`` (admission), ``prompt`` (builder thread), ``feed`` / ``ready``
(each step), ``idle`` (nothing can step: sleep until text arrives, briefly).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import torch

from ..errors import Cancelled, TTSError
from .backend import Done, Failed, Stream
from .prompt import prompt_builder
from .prompts import Prompt
from .request import SynthesisStats, frame_budget
from .text_feed import AHEAD_TOKENS

IDLE_WAIT_S = 0.01   # longest sleep of an engine whose every row waits for text (a new call waits at most this)
QUIET_TURN_S = 2.0   # a streamed generation with no text to go on for this long ends where its text does
                     # (TextFeed.quiet): a turn left open (an LLM in a tool call, a stuck client) holds no slot


def streaming(stream: Stream) -> bool:
    return getattr(stream, "text", None) is not None


class TextRows:
    """The batched backend's streamed-text state (see the module docstring)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.parked: list[Stream] = []
        self._wake = threading.Event()

    # --- admission -----------------------------------------------------------------------

    def park(self, stream: Stream) -> None:
        feed = stream.text
        feed.bind(prompt_builder(self.engine).tokenizer.encode)
        waker, wake = feed.on_text, self._wake.set

        def on_text() -> None:
            wake()
            if waker is not None:
                waker()

        feed.on_text = on_text
        self.parked.append(stream)

    def starting(self, room: int) -> list[Stream]:
        """Parked streams whose text can start them now, at most ``room`` (parked ones hold
        no slot: they wait for a free one); cancelled ones fail, and a turn flushed with
        nothing to say ends cleanly (no generation). One holding text short of its lookahead
        for ``QUIET_TURN_S`` is made final (:meth:`.TextFeed.quiet`): it speaks what it has."""
        out: list[Stream] = []
        keep: list[Stream] = []
        now = time.monotonic()
        for s in self.parked:
            feed = s.text
            icl = s.voice is not None and bool(s.voice.ref_text)   # its prompt needs all of the text
            try:
                n = feed.peek(None if icl else feed.lookahead)
            except TTSError as e:
                s.sink(Failed(e))
                continue
            says = feed.says   # a turn of only "..." or emoji starts no generation, as a clause would not
            if s.cancel.is_set():
                s.sink(Failed(Cancelled()))
            elif (feed.ended and n == 0) or (feed.final and not says):
                s.sink(Done(SynthesisStats(), codec=s.continues))   # nothing to say: no generation
            elif (feed.final or (n >= feed.lookahead and not icl)) and says and len(out) < room:
                out.append(s)
            else:
                if n and not feed.final and now - feed.last_text_at >= QUIET_TURN_S:
                    feed.quiet()
                keep.append(s)
        self.parked = keep
        return out

    def prompt(self, stream: Stream, voice: Any) -> Prompt:
        """The stream's streaming-text prompt, from the tokens final now (builder thread)."""
        feed = stream.text
        ids = feed.pull(AHEAD_TOKENS)
        req = dataclasses.replace(stream.request, text=feed.spoken)
        prompt = prompt_builder(self.engine).build_streaming(req, voice, ids, feed.ended)
        feed.eos_sent = feed.ended
        return prompt

    # --- stepping ------------------------------------------------------------------------

    def feed(self, rows: list[Any]) -> None:
        """New tokens of every streaming row onto its trailing text (``tts_eos`` at the end)."""
        builder = None
        for r in rows:
            feed = r.stream.text
            if feed is None or feed.eos_sent:
                continue
            ahead = r.prompt.trailing.shape[0] - (r.frames - 1)   # its text vectors not yet stepped on
            ids = feed.pull(AHEAD_TOKENS - ahead)
            if not ids and not feed.ended:
                continue
            builder = builder or prompt_builder(self.engine)
            parts = [r.prompt.trailing, builder.project_each(ids)]
            if feed.ended:
                parts.append(builder.eos.unsqueeze(0))
                feed.eos_sent = True
            r.prompt = dataclasses.replace(r.prompt, trailing=torch.cat(parts))
            if r.stream.request.max_frames is None:
                r.cap = frame_budget(feed.spoken)

    def quiet(self, rows: list[Any]) -> None:
        """Rows that have waited ``QUIET_TURN_S`` for their next text end where their text
        does (:meth:`.TextFeed.quiet`; the turn's later text starts a new generation)."""
        now = time.monotonic()
        for r in rows:
            feed = r.stream.text
            if feed is None or feed.flushed or self.ready(r):
                r.waiting_since = None
            elif r.waiting_since is None:
                r.waiting_since = now
            elif now - r.waiting_since >= QUIET_TURN_S:
                feed.quiet()

    @staticmethod
    def ready(row: Any) -> bool:
        """Whether the row's next text vector is there (or its text has ended)."""
        feed = row.stream.text
        return feed is None or feed.eos_sent or row.frames - 1 < row.prompt.trailing.shape[0]

    def idle(self) -> None:
        """Every row waits for text: sleep until some arrives (or briefly: cancels, new calls)."""
        self._wake.wait(IDLE_WAIT_S)
        self._wake.clear()


__all__ = ["QUIET_TURN_S", "TextRows", "streaming"]
