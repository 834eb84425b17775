"""Where each segment of a request lands in the audio the client receives.

Captions need the exact time span of every segment in the *delivered* audio: after speed
change, with SSML pauses, per-segment prosody rates and any resampling. The model's sample
count per segment is exact; the output time is that count divided by the speed in effect,
plus the pauses, which are inserted as exact silence after the time-stretch stage. This
object also makes those audio-path changes at each segment boundary, so the timings and
the audio come from one place: at each segment's end the audio path is flushed to the
exact output sample of that end (``segment_done``), so a caption is sent after all of
its audio and the timings never drift from the delivered samples.
"""

from __future__ import annotations

import math

from ..audio.pipeline import MODEL_RATE, SPEED_RANGE, AudioPipeline
from ..text import Segment


def segment_speed(request_speed: float, rate: float) -> float:
    return min(SPEED_RANGE[1], max(SPEED_RANGE[0], request_speed * rate))


class Timeline:
    def __init__(self, segments: list[Segment], speed: float, trailing_pause_s: float,
                 pipeline: AudioPipeline) -> None:
        self.segments = segments
        self.speeds = [segment_speed(speed, s.rate) for s in segments]
        self.trailing_pause_s = trailing_pause_s
        self.pipeline = pipeline
        self.t = 0.0            # seconds of output audio accounted for

    def start(self) -> bytes:
        """Before the first audio: the first segment's speed and leading pause."""
        return self._enter(0)

    def segment_done(self, index: int, samples: int) -> tuple[bytes, dict, bytes]:
        """Segment ``index`` produced ``samples`` model samples: (the rest of its audio, its
        caption, the audio-path change for the next segment). Send them in that order: the
        first part flushes the time-stretch and resampler, so once it is sent the output
        holds the whole segment, exactly up to the caption's end."""
        start = self.t
        self.t += samples / MODEL_RATE / self.speeds[index]
        tail = self.pipeline.flush(self._sample_at(self.t))
        caption = {"index": index, "text": self.segments[index].caption,
                   "start": round(start, 3), "end": round(self.t, 3)}
        return tail, caption, self._enter(index + 1)

    def live(self) -> list[dict]:
        """Captions due while a segment speaks: none, each one follows its segment's end
        (a streamed turn's timeline has some: daemon/text_stream.py)."""
        return []

    def finish(self) -> bytes:
        return self._pause(self.trailing_pause_s)

    def _enter(self, index: int) -> bytes:
        if index >= len(self.segments):
            return b""
        out = self._pause(self.segments[index].pause_before_s)
        return out + self.pipeline.set_speed(self.speeds[index])

    def _pause(self, seconds: float) -> bytes:
        if seconds <= 0:
            return b""
        self.t += seconds
        return self.pipeline.silence(seconds, until=self._sample_at(self.t))

    def _sample_at(self, t: float) -> int:
        """Output sample index of time ``t``: rounded up, so a caption's end is never
        ahead of the audio sent before it."""
        return math.ceil(t * self.pipeline.sample_rate - 1e-6)
