"""``tts.synthesize`` with ``text_stream``: a turn's text goes into one running generation
as the client sends it (``$/text`` notifications), instead of one generation per clause.

Why: every clause as its own generation restarts prosody at each one and cannot start
speaking before a clause ends; Qwen3-TTS's streaming-text mode takes the text while it
speaks (engine/text_feed.py, engine/text_rows.py). This module is the daemon's side:

* :class:`TurnText` takes the client's text: it goes to the current generation's
  :class:`.TextFeed` (normalised piece by piece in the request's language). A turn longer
  than ``ROLLOVER_CHARS`` continues in a new generation at the next sentence end: the next
  feed is registered with the job *before* the current one is flushed, so the scheduler
  runs it next on the same codec stream (no seam), as it runs a request's segments;
* :class:`TurnTimeline` reports captions: at the end of each generation, its sentences
  (as written) with spans on the delivered audio, shared out by their spoken length (the
  model's own timing inside one generation is not observable).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from ..audio.pipeline import MODEL_RATE, AudioPipeline
from ..engine.text_feed import DEFAULT_LOOKAHEAD, TextFeed
from ..text import split_segments
from ..text.markup import strip_markup
from .job import Job
from .timeline import segment_speed

ROLLOVER_CHARS = 3000   # a generation's text before the turn moves on to a new one (context and frame cap)
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
        self._lock = threading.Lock()
        job.feeds = []
        self._next_feed()

    def _next_feed(self) -> None:
        feed = TextFeed(self.lookahead, self.normalize)
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
                current = self.job.feeds[-1]
                self._next_feed()
                current.flush()
                text = text[cut:].lstrip()
            if text:
                self._append(text)
            if flush:
                self.job.feeds[-1].flush()

    def _append(self, text: str) -> None:
        assert self.job.feeds is not None
        self.job.feeds[-1].append(text)
        self.written[-1] += text

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


class TurnTimeline:
    """The :class:`.Timeline` of a streamed turn: one entry per generation, whose
    captions are its sentences."""

    def __init__(self, turn: TurnText, speed: float, pipeline: AudioPipeline) -> None:
        self.turn = turn
        self.speed = segment_speed(speed, 1.0)
        self.pipeline = pipeline
        self.t = 0.0
        self.index = 0          # captions sent so far

    def start(self) -> bytes:
        return self.pipeline.set_speed(self.speed)

    def segment_done(self, index: int, samples: int) -> tuple[bytes, list[dict], bytes]:
        start = self.t
        self.t += samples / MODEL_RATE / self.speed
        tail = self.pipeline.flush(int(self.t * self.pipeline.sample_rate + 0.999999))
        sentences = split_segments(self.turn.written[index]) if index < len(self.turn.written) else []
        total = sum(len(s) for s in sentences) or 1
        captions, t = [], start
        for s in sentences:
            end = t + (self.t - start) * len(s) / total
            captions.append({"index": self.index, "text": s, "start": round(t, 3), "end": round(end, 3)})
            self.index += 1
            t = end
        return tail, captions, b""

    def finish(self) -> bytes:
        return b""


__all__ = ["ROLLOVER_CHARS", "TurnText", "TurnTimeline", "normaliser"]
