"""``tts.synthesize`` with ``text_stream``: a turn's text goes into one running generation
as the client sends it (``$/text`` notifications), instead of one generation per clause.

Why: every clause as its own generation restarts prosody at each one and cannot start
speaking before a clause ends; Qwen3-TTS's streaming-text mode takes the text while it
speaks (engine/text_feed.py, engine/text_rows.py). This module is the daemon's side:

* :class:`TurnText` takes the client's text: it goes to the current generation's
  :class:`.TextFeed` (normalised piece by piece in the request's language). A turn longer
  than ``ROLLOVER_CHARS`` continues in a new generation at the next sentence end: the next
  feed is registered with the job *before* the current one is flushed, so the scheduler
  runs it next on the same codec stream (no seam), as it runs a request's segments. A
  generation that ends before the turn's text does (its frame cap, the model's end of
  speech) leaves the text it had not committed to a next generation the same way, so no
  word is dropped;
* :class:`TurnTimeline` reports captions: a generation's sentences (as written, only the
  text it committed) with spans on the delivered audio. A sentence is sent *while* the
  generation speaks, once the text after it is committed and the audio has reached its
  estimated end (``SPOKEN_CHARS_PER_S``: the model's own timing inside one generation is
  not observable); the rest at the generation's end, sharing out what is left of its
  audio by written length, so the spans always add up to the audio exactly.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from ..audio.pipeline import MODEL_RATE, AudioPipeline
from ..engine.request import wide_chars
from ..engine.text_feed import DEFAULT_LOOKAHEAD, TextFeed
from ..text import split_segments
from ..text.markup import strip_markup
from .job import Job
from .timeline import segment_speed

ROLLOVER_CHARS = 3000   # a generation's text before the turn moves on to a new one (context and frame cap)
SPOKEN_CHARS_PER_S = 14.0  # written characters said per second at speed 1 (a live caption's estimated end)
WIDE_CHAR_WEIGHT = 3       # a CJK character takes as long as this many others
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]”’]*(?=\s)|[。！？]+")


def normaliser(language: str, normalize: bool) -> Callable[[str], str]:
    """The spoken form of one piece of streamed text (markup never spoken)."""
    if not normalize:
        return strip_markup

    def spoken(text: str) -> str:
        from ..text.normalize import normalize as norm

        return norm(strip_markup(text), language)

    return spoken


class TurnText:
    """A streamed turn's text: one :class:`TextFeed` per generation of ``job``."""

    def __init__(self, job: Job, lookahead: int | None, normalize: Callable[[str], str],
                 rollover_chars: int = ROLLOVER_CHARS) -> None:
        self.job = job
        self.lookahead = lookahead or DEFAULT_LOOKAHEAD
        self.normalize = normalize
        self.rollover_chars = rollover_chars
        self.written: list[str] = []          # each generation's text as written (captions)
        self.flushed = False
        self._lock = threading.Lock()
        job.feeds = []
        job.segment_end = self.generation_ended
        self._next_feed()

    def _new_feed(self) -> TextFeed:
        feed = TextFeed(self.lookahead, self.normalize)
        feed.on_quiet = lambda: self._quiet(feed)
        return feed

    def _next_feed(self) -> None:
        feed = self._new_feed()
        self.written.append("")
        assert self.job.feeds is not None
        if self.job.feeds:
            self.job.segments.append("")      # the scheduler's next segment: before the flush below
        self.job.feeds.append(feed)

    def take(self, text: str, flush: bool = False) -> None:
        """The client's next text (``flush``: the turn's text is complete)."""
        with self._lock:
            assert self.job.feeds is not None
            while text:
                cut = self._rollover_at(text)
                if cut is None:
                    break
                self._append(text[:cut])
                self._end_current()
                text = text[cut:].lstrip()
            if text:
                self._append(text)
            if flush:
                self.flushed = True
                self.job.feeds[-1].flush()

    def _quiet(self, feed: TextFeed) -> None:
        """The engine saw ``feed``'s generation wait ``QUIET_TURN_S`` for text: it ends at
        the text it has (its slot freed), and the turn's later text goes to a new generation
        on the same codec stream, as at a rollover (the engine thread)."""
        with self._lock:
            assert self.job.feeds is not None
            if self.flushed or feed is not self.job.feeds[-1] or feed.flushed:
                return
            self._end_current()

    def _end_current(self) -> None:
        """End the current generation at its text (rollover, quiet): the next feed is
        registered with the job *before* the current one is flushed, so the scheduler runs
        it next on the same codec stream."""
        assert self.job.feeds is not None
        current = self.job.feeds[-1]
        self._next_feed()
        current.flush()

    def _append(self, text: str) -> None:
        assert self.job.feeds is not None
        self.job.feeds[-1].append(text)
        self.written[-1] += text

    def committed(self, index: int) -> str:
        """Generation ``index``'s text that is final so far (as written)."""
        assert self.job.feeds is not None
        return self.written[index][:self.job.feeds[index].committed]

    def generation_ended(self, index: int) -> None:
        """Generation ``index`` ended (engine thread, before the scheduler picks the next):
        its text is what it committed; the rest of the turn goes to the next generation,
        a new one if the turn is not over."""
        with self._lock:
            assert self.job.feeds is not None
            rest = self.written[index][self.job.feeds[index].committed:].lstrip()
            self.written[index] = self.committed(index)
            if index + 1 < len(self.job.feeds):      # a rollover queued the next: it has not started
                if rest:
                    text = f"{rest} {self.written[index + 1]}".rstrip(" ")
                    self._refeed(index + 1, text, self.job.feeds[index + 1].flushed)
            elif rest or not self.flushed:
                self._next_feed()
                self._refeed(index + 1, rest, self.flushed)

    def _refeed(self, index: int, text: str, flush: bool) -> None:
        assert self.job.feeds is not None
        feed = self.job.feeds[index] = self._new_feed()
        self.written[index] = text
        if text:
            feed.append(text)
        if flush:
            feed.flush()

    def _rollover_at(self, text: str) -> int | None:
        """Where in ``text`` the current generation should end: the first sentence end
        once it holds ``rollover_chars``."""
        have = len(self.written[-1])
        if have + len(text) < self.rollover_chars:
            return None
        for m in _SENTENCE_END.finditer(text):
            if have + m.end() >= self.rollover_chars:
                return m.end()
        return None


def spoken_seconds(text: str) -> float:
    """About how long ``text`` takes to say at speed 1 (a live caption's estimated span)."""
    return (len(text) + (WIDE_CHAR_WEIGHT - 1) * wide_chars(text)) / SPOKEN_CHARS_PER_S


class TurnTimeline:
    """The :class:`.Timeline` of a streamed turn: one entry per generation, whose
    captions are its sentences (live, see the module docstring)."""

    def __init__(self, turn: TurnText, speed: float, pipeline: AudioPipeline) -> None:
        self.turn = turn
        self.speed = segment_speed(speed, 1.0)
        self.pipeline = pipeline
        self.t = 0.0            # seconds of output audio of the generations that ended
        self.index = 0          # captions sent so far
        self.generation = 0     # the generation speaking now
        self.captioned = 0      # characters of its text captioned so far
        self.caption_t = 0.0    # where its last caption ended

    def start(self) -> bytes:
        return self.pipeline.set_speed(self.speed)

    def live(self) -> list[dict]:
        """Captions of the current generation's sentences that are complete (text after
        them committed) and whose estimated end the delivered audio has reached."""
        if self.generation >= len(self.turn.written):
            return []
        text = self.turn.committed(self.generation)
        captions = []
        for s in split_segments(text[self.captioned:])[:-1]:
            end = self.caption_t + spoken_seconds(s) / self.speed
            if end > self.pipeline.duration_s:
                break
            at = text.find(s, self.captioned)
            if at < 0:  # not a piece of the text as written (cannot happen): leave it to the end
                break
            captions.append(self._caption(s, end))
            self.captioned = at + len(s)
        return captions

    def segment_done(self, index: int, samples: int) -> tuple[bytes, list[dict], bytes]:
        self.t += samples / MODEL_RATE / self.speed
        tail = self.pipeline.flush(int(self.t * self.pipeline.sample_rate + 0.999999))
        text = self.turn.written[index][self.captioned:] if index < len(self.turn.written) else ""
        sentences = split_segments(text)
        total = sum(len(s) for s in sentences) or 1
        start, captions = self.caption_t, []
        for n, s in enumerate(sentences):
            end = self.t if n == len(sentences) - 1 else self.caption_t + (self.t - start) * len(s) / total
            captions.append(self._caption(s, end))
        self.generation, self.captioned, self.caption_t = index + 1, 0, self.t
        return tail, captions, b""

    def _caption(self, text: str, end: float) -> dict:
        caption = {"index": self.index, "text": text, "start": round(self.caption_t, 3), "end": round(end, 3)}
        self.index += 1
        self.caption_t = end
        return caption

    def finish(self) -> bytes:
        return b""


__all__ = ["ROLLOVER_CHARS", "SPOKEN_CHARS_PER_S", "TurnText", "TurnTimeline", "normaliser", "spoken_seconds"]
