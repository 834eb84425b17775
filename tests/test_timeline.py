"""Captions vs delivered audio: a segment's caption comes after all of its audio, and no
speech is turned into silence at segment ends, at any speed or output rate (issue 20 item 7).

Synthetic PCM (one tone per segment) goes through Timeline + AudioPipeline the way the
daemon's stream loop drives them; the output is raw f32 so every sample can be checked.
"""

from __future__ import annotations

import numpy as np
import pytest

from qwen3ttsd.audio import AudioPipeline
from qwen3ttsd.daemon.timeline import Timeline, segment_speed
from qwen3ttsd.formats import FRAME_SAMPLES, MODEL_RATE
from qwen3ttsd.text import Segment

AMP = 0.3


def tone(samples: int, f: float) -> np.ndarray:
    t = np.arange(samples) / MODEL_RATE
    return (AMP * np.sin(2 * np.pi * f * t + 0.7)).astype(np.float32)


SEGMENTS = [  # (segment, model samples, tone Hz)
    (Segment("one", "One."), 13 * FRAME_SAMPLES, 220.0),
    (Segment("two", "Two.", pause_before_s=0.35), 9 * FRAME_SAMPLES, 330.0),   # <break> before
    (Segment("three", "Three.", rate=0.8), 7 * FRAME_SAMPLES + 611, 262.0),       # <prosody rate>
    (Segment("four", "Four."), 11 * FRAME_SAMPLES, 196.0),
]
TRAILING = 0.2


def run(speed: float, rate: int, chunk: int = 4 * FRAME_SAMPLES) -> tuple[np.ndarray, list[tuple[dict, int]]]:
    """Drive the pipeline like the daemon: feed, then each segment's end. Returns the output
    and, per caption, the number of output samples sent before it."""
    segs = [s for s, _, _ in SEGMENTS]
    pipeline = AudioPipeline("f32", rate, segment_speed(speed, segs[0].rate))
    timeline = Timeline(segs, speed, TRAILING, pipeline)
    out = bytearray(pipeline.header() + timeline.start())
    captions = []
    for i, (_, n, f) in enumerate(SEGMENTS):
        pcm = tone(n, f)
        for j in range(0, n, chunk):
            out += pipeline.feed(pcm[j:j + chunk])
        before, caption, after = timeline.segment_done(i, n)
        out += before
        captions.append((caption, len(out) // 4))
        out += after
    out += timeline.finish() + pipeline.finish()
    return np.frombuffer(bytes(out), np.float32), captions


def longest_zero_run(x: np.ndarray) -> int:
    z = np.concatenate([[0], (x == 0).astype(np.int8), [0]])
    d = np.diff(z)
    starts, ends = np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]
    return int((ends - starts).max()) if len(starts) else 0


def inner(start: float, end: float, rate: int) -> slice:
    """Output samples surely inside [start, end): caption times are rounded to 1 ms."""
    return slice(int(np.ceil((start + 0.0005) * rate)) + 1, int((end - 0.0005) * rate) - 1)


CASES = [(speed, rate) for speed in (0.5, 0.75, 1.0, 1.5) for rate in (8000, 16000, 24000, 48000)]


@pytest.mark.parametrize("speed, rate", CASES)
def test_caption_comes_after_all_of_its_audio(speed, rate):
    out, captions = run(speed, rate)
    for caption, sent in captions:
        # caption times are rounded to 1 ms: allow half of that, nothing more
        assert sent / rate >= caption["end"] - 0.0005, (caption, sent / rate)
        assert sent / rate <= caption["end"] + 0.0005  # and nothing of the next one's pause


@pytest.mark.parametrize("speed, rate", CASES)
def test_no_speech_becomes_silence(speed, rate):
    out, captions = run(speed, rate)
    spans = [c for c, _ in captions]
    assert len(out) / rate == pytest.approx(spans[-1]["end"] + TRAILING, abs=1.5 / rate + 0.0005)
    for c in spans:
        speech = out[inner(c["start"], c["end"], rate)]
        assert longest_zero_run(speech) <= 1, c
        edge = int(0.015 * rate)  # the last 15 ms before a break / the next segment: still the tone
        for part in (speech[:edge], speech[-edge:]):
            assert np.sqrt(np.mean(part.astype(np.float64) ** 2)) > 0.5 * AMP / np.sqrt(2), c
    for prev, nxt in zip(spans, spans[1:]):  # <break>s are exact digital silence
        gap = out[inner(prev["end"], nxt["start"], rate)]
        assert not gap.any()
    assert not out[inner(spans[-1]["end"], len(out) / rate, rate)].any()


@pytest.mark.parametrize("speed", [0.5, 0.75, 1.5])
def test_stretch_starts_and_ends_with_the_input(speed):
    from qwen3ttsd.audio.pipeline import TimeStretch

    x = tone(MODEL_RATE, 220.0)
    ts = TimeStretch(speed)
    y = np.concatenate([ts.process(x[i:i + 1000]) for i in range(0, len(x), 1000)] +
                       [ts.process(np.zeros(0, np.float32), True)])
    assert len(y) == round(len(x) / speed)
    assert y[0] == pytest.approx(x[0], abs=1e-6)        # no fade-in from a zero frame
    edge = int(0.015 * MODEL_RATE)
    assert np.sqrt(np.mean(y[-edge:].astype(np.float64) ** 2)) > 0.8 * AMP / np.sqrt(2)
    assert longest_zero_run(y) == 0
