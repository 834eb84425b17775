"""A streamed turn's text and captions in the daemon (daemon/text_stream.py), without a
model: which generation speaks which text, and which captions come when (issue 22).

* a generation that ends before the turn's text does keeps only the text it committed;
  the rest, and whatever comes later, goes to the next generation of the turn;
* a rollover's next generation gets the text its predecessor left;
* a sentence's caption comes once the text after it is committed and the audio has
  reached its estimated end; the generation's end captions the rest, and the spans add
  up to its audio exactly;
* the bridge holds at most MAX_TURN_CHARS of a streamed turn.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from qwen3ttsd.audio.pipeline import MODEL_RATE
from qwen3ttsd.daemon.text_stream import TurnText, TurnTimeline, spoken_seconds


def turn(rollover_chars: int = 3000) -> tuple[TurnText, Any]:
    job = SimpleNamespace(segments=[""], feeds=None, segment_end=None)
    return TurnText(job, 1, lambda s: s, rollover_chars), job  # type: ignore[arg-type]


def commit(t: TurnText, index: int) -> str:
    """The engine's side: generation ``index`` pulls what is final now."""
    feed = t.job.feeds[index]
    feed.bind(lambda s: [0] * len(s.split()))
    feed.pull()
    return t.committed(index)


def test_a_generation_that_ends_early_leaves_the_rest_to_the_next():
    t, job = turn()
    t.take("Hello there. How are")
    assert commit(t, 0) == "Hello there."          # a word is final once the next one is whole
    job.segment_end(0)                             # e.g. its frame cap
    assert t.written[0] == "Hello there." and len(job.segments) == len(job.feeds) == 2
    t.take(" you?", flush=True)
    assert t.written[1] == "How are you?" and job.feeds[1].flushed
    assert commit(t, 1) == "How are you?"
    job.segment_end(1)
    assert len(job.feeds) == 2                     # flushed and all said: the turn is over


def test_a_generation_that_ends_with_all_its_text_said_waits_for_more():
    t, job = turn()
    t.take("Hello there ")
    commit(t, 0)
    job.segment_end(0)                             # the model ended its speech; the turn goes on
    assert len(job.feeds) == 2 and t.written == ["Hello", "there "]


def test_the_rest_of_a_rolled_over_generation_goes_before_the_next_ones_text():
    t, job = turn(rollover_chars=10)
    t.take("One two three. Four five six")
    assert t.written == ["One two three.", "Four five six"]
    job.feeds[0].bind(lambda s: [0])
    job.feeds[0].committed = 4                     # it stopped after "One"
    job.segment_end(0)
    assert t.written == ["One ", "two three. Four five six"] and not job.feeds[1].flushed


class Pipeline:
    """The audio path as the timeline sees it: how much audio was delivered."""

    sample_rate = MODEL_RATE

    def __init__(self) -> None:
        self.duration_s = 0.0

    def set_speed(self, speed: float) -> bytes:
        return b""

    def flush(self, until: int) -> bytes:
        self.duration_s = until / self.sample_rate
        return b""


def test_sentence_captions_come_while_the_generation_speaks():
    t, job = turn()
    pipe = Pipeline()
    tl = TurnTimeline(t, 1.0, pipe)  # type: ignore[arg-type]
    first, second = "Hello there, thanks for calling.", "How can I help you today?"
    t.take(first + " How can I")
    commit(t, 0)
    pipe.duration_s = spoken_seconds(first) - 0.1
    assert tl.live() == []                         # its estimated end is not reached yet
    pipe.duration_s += 0.2
    cap, = tl.live()
    assert cap["text"] == first and cap["start"] == 0 and cap["end"] == round(spoken_seconds(first), 3)
    assert tl.live() == []                         # the next sentence is not complete
    t.take(" help you today? Bye now.", flush=True)
    commit(t, 0)
    job.segment_end(0)
    samples = int(9.0 * MODEL_RATE)
    _, caps, _ = tl.segment_done(0, samples)
    assert [c["text"] for c in caps] == [second, "Bye now."]
    assert caps[0]["start"] == cap["end"] and caps[-1]["end"] == 9.0
    assert caps[1]["start"] == caps[0]["end"]
    assert [c["index"] for c in (cap, *caps)] == [0, 1, 2]


@pytest.mark.parametrize("speed", [0.5, 2.0])
def test_live_caption_spans_follow_the_speed(speed):
    t, _ = turn()
    pipe = Pipeline()
    tl = TurnTimeline(t, speed, pipe)  # type: ignore[arg-type]
    t.take("One more thing. And then we")
    commit(t, 0)
    pipe.duration_s = 100.0
    cap, = tl.live()
    assert cap["end"] == pytest.approx(spoken_seconds("One more thing.") / speed, abs=1e-3)


def test_the_bridge_holds_at_most_max_turn_chars_of_a_streamed_turn():
    """The WebSocket's default text_mode "stream" keeps a turn's text in the bridge as it
    comes (to speak it whole on a daemon that cannot stream text): ``payload_too_large``
    past MAX_TURN_CHARS (ws.py sends it as an error event; the call goes on)."""
    import asyncio

    from qwen3ttsd.bridge.turns import MAX_TURN_CHARS, StreamTurn
    from qwen3ttsd.errors import TTSError
    from qwen3ttsd.messages import Synthesize

    async def go() -> str:
        turn = StreamTurn("/nonexistent.sock", 0, Synthesize(text="", text_stream=True))
        turn.add("x" * MAX_TURN_CHARS)
        with pytest.raises(TTSError) as e:
            turn.add("y")
        assert e.value.code == "payload_too_large"
        return turn.written

    assert asyncio.run(go()) == "x" * MAX_TURN_CHARS
