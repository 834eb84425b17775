"""Streamed text into one running generation (issue 22 item 1): engine/text_feed.py and
engine/text_rows.py in the batched engine (fp32 CPU, tiny random checkpoints).

* the feed's tokens, in any split, are the one-shot tokens of the whole text;
* a seeded stream's codes are the same whatever the split and timing of its text
  (per character, per word, all at once, with pauses while it generates), and equal to the
  whole text given at once;
* greedy equals qwen-tts's own streaming-text output (``non_streaming_mode=False``);
* a row waiting for text leaves the other rows' codes unchanged; cancel while waiting ends
  it at once; a flush with nothing buffered ends cleanly.
"""

from __future__ import annotations

import threading

import pytest
import torch

from qwen3ttsd.engine import SynthesisRequest
from qwen3ttsd.engine.backend import Audio, BackendOptions, Done, Failed, Stream
from qwen3ttsd.engine.batched import BatchedBackend
from qwen3ttsd.engine.prompt import prompt_builder
from qwen3ttsd.engine.text_feed import TextFeed, plain, stable_units
from qwen3ttsd.text.normalize import normalize

TEXTS = ["Hello world, this is a test.", "I don't know... maybe 42 apples cost $5.00 today!",
         "你好，世界。我们走吧", "Dr. Smith went to St. Louis on March 5, 2024.",
         "CamelCase words and URLs like example.com/foo."]


def splits(text: str) -> dict[str, list[str]]:
    words = text.split(" ")
    return {"char": list(text), "word": [w + " " for w in words[:-1]] + [words[-1]], "all": [text],
            "odd": [text[i:i + 7] for i in range(0, len(text), 7)]}


def feed_ids(feed: TextFeed, pieces: list[str]) -> list[int]:
    ids: list[int] = []
    for p in pieces:
        feed.append(p)
        ids += feed.pull()
    feed.flush()
    return ids + feed.pull()


# --- the feed ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_feed_tokens_in_any_split_are_the_one_shot_tokens(custom_engine, text):
    tok = prompt_builder(custom_engine).tokenizer
    whole = tok.assistant_ids(text)[3:-5]
    for name, pieces in splits(text).items():
        feed = TextFeed(normalize=None)
        feed.bind(tok.encode)
        assert feed_ids(feed, pieces) == whole, name
        assert feed.ended


@pytest.mark.parametrize("text", TEXTS)
def test_normalised_feed_is_split_invariant(custom_engine, text):
    tok = prompt_builder(custom_engine).tokenizer
    got = set()
    for pieces in splits(text).values():
        feed = TextFeed(normalize=lambda s: normalize(s, "english"))
        feed.bind(tok.encode)
        got.add((tuple(feed_ids(feed, pieces)), feed.spoken))
    assert len(got) == 1


def test_unfinished_words_numbers_and_abbreviations_are_held_back():
    assert stable_units("Hello wor", final=False) == ([], 0)           # "wor" may go on
    assert stable_units("Hello world and", final=False) == (["Hello"], 5)  # " world" once "and" is whole
    assert stable_units("Hello world and more", final=False) == (["Hello", " world"], 11)
    assert stable_units("It costs 5", final=False)[0] == ["It"]          # "costs" may be read with the number
    assert stable_units("See Dr. Smith now", final=False)[0] == []       # "Dr." binds to its neighbours
    assert stable_units("Hello wor", final=True) == (["Hello", " wor"], 9)
    assert plain("world,") and plain("“Quoted”") and not plain("5th") and not plain("a/b") and not plain("St.")


def test_feed_refuses_text_after_flush_and_beyond_its_limit():
    feed = TextFeed(max_chars=10)
    feed.append("12345")
    with pytest.raises(Exception, match="at most 10"):
        feed.append("123456")
    feed.flush()
    with pytest.raises(Exception, match="flushed"):
        feed.append("x")


# --- the engine ---------------------------------------------------------------------------


class Run:
    def __init__(self, req: SynthesisRequest, feed: TextFeed | None = None) -> None:
        self.codes: list[torch.Tensor] = []
        self.result = None
        self.audio = 0
        self.cancel = threading.Event()
        self.stream = Stream(req, sink=self.sink, cancel=self.cancel, on_codes=self.codes.append, text=feed)

    def sink(self, event) -> None:
        if isinstance(event, Audio):
            self.audio += len(event.pcm)
            return
        assert self.result is None, "finished twice"
        self.result = event

    @property
    def all_codes(self) -> torch.Tensor:
        return torch.cat(self.codes) if self.codes else torch.zeros(0, 16, dtype=torch.long)


def backend(engine) -> BatchedBackend:
    return BatchedBackend(engine, BackendOptions(batch_decode=False))


REQ = dict(speaker="vivian", language="english", seed=5, max_frames=40)
TEXT = "Hello there my friend, how are you doing on this fine day"


def stream_run(engine, pieces: list[str], every: int = 1, lookahead: int = 4, b=None, others=()) -> Run:
    """Admit a streamed request at once, append one piece every ``every`` steps, flush
    after the last; ``others`` are admitted beside it."""
    b = b or backend(engine)
    feed = TextFeed(lookahead=lookahead, normalize=None)
    run = Run(SynthesisRequest(text="", **REQ), feed)
    b.admit(run.stream)
    for o in others:
        b.admit(o.stream)
    step, queue = 0, list(pieces)
    while b.active or queue:
        if queue and step % every == 0:
            feed.append(queue.pop(0))
            if not queue:
                feed.flush()
        b.step()
        step += 1
    return run


@pytest.fixture(scope="module")
def one_shot(custom_engine):
    run = stream_run(custom_engine, [TEXT])
    assert isinstance(run.result, Done) and run.all_codes.shape[0] > 5
    return run.all_codes


@pytest.mark.parametrize("how", ["char", "word", "odd"])
@pytest.mark.parametrize("every", [1, 3])
def test_codes_are_the_same_in_any_split_and_timing(custom_engine, one_shot, how, every):
    run = stream_run(custom_engine, splits(TEXT)[how], every=every)
    assert isinstance(run.result, Done)
    assert torch.equal(run.all_codes, one_shot)


def test_waiting_rows_really_wait_and_still_match(custom_engine, one_shot):
    """Words 8 steps apart: the row waits for text (no frames on padding) and ends the same."""
    frames_seen = []
    b = backend(custom_engine)
    feed = TextFeed(lookahead=2, normalize=None)
    run = Run(SynthesisRequest(text="", **REQ), feed)
    b.admit(run.stream)
    words = splits(TEXT)["word"]
    for w in words:
        feed.append(w)
        for _ in range(8):
            b.step()
        frames_seen.append(sum(c.shape[0] for c in run.codes))
    assert run.result is None                         # waiting, not finished on padding
    assert frames_seen[-1] < one_shot.shape[0]
    feed.flush()
    while b.active:
        b.step()
    assert torch.equal(run.all_codes, one_shot)


def test_greedy_equals_qwen_tts_streaming_text_mode(custom_engine):
    req = SynthesisRequest(text=TEXT, speaker="vivian", language="english", max_frames=16)
    kwargs, _ = custom_engine.prepare(req)
    kwargs.update(do_sample=False, subtalker_dosample=False, non_streaming_mode=False)
    with torch.inference_mode():
        ref = custom_engine.tts.model.generate(**kwargs)[0][0]
    b = backend(custom_engine)
    builder = prompt_builder(custom_engine)
    real = b.text.prompt

    def greedy(stream, voice):
        p = real(stream, voice)
        p.settings.update(do_sample=False, subtalker_dosample=False)
        return p

    b.text.prompt = greedy
    feed = TextFeed(normalize=None)
    run = Run(SynthesisRequest(text="", speaker="vivian", language="english", max_frames=16), feed)
    b.admit(run.stream)
    for w in splits(TEXT)["word"]:
        feed.append(w)
        b.step()
    feed.flush()
    while b.active:
        b.step()
    assert builder is prompt_builder(custom_engine)
    n = run.all_codes.shape[0]
    assert n == min(16, ref.shape[0]) and torch.equal(run.all_codes, ref[:n])


def test_a_waiting_row_leaves_the_others_codes_unchanged(custom_engine):
    other = SynthesisRequest(text="Some other words spoken meanwhile.", speaker="ryan", seed=9, max_frames=20)
    solo = Run(other)
    b = backend(custom_engine)
    b.admit(solo.stream)
    while b.active:
        b.step()
    beside = Run(other)
    stream_run(custom_engine, splits(TEXT)["word"], every=6, others=[beside])
    assert isinstance(beside.result, Done)
    assert torch.equal(beside.all_codes, solo.all_codes)


def test_cancel_while_waiting_ends_at_once(custom_engine):
    b = backend(custom_engine)
    feed = TextFeed(lookahead=1, normalize=None)
    run = Run(SynthesisRequest(text="", **REQ), feed)
    b.admit(run.stream)
    feed.append("Hello there ")
    for _ in range(10):
        b.step()
    assert run.result is None and b.active
    run.cancel.set()
    b.step()
    b.step()
    assert isinstance(run.result, Failed) and run.result.error.code == "cancelled"
    assert not b.active


def test_cancel_before_start_and_flush_with_nothing_end_cleanly(custom_engine):
    b = backend(custom_engine)
    parked = Run(SynthesisRequest(text="", **REQ), TextFeed(normalize=None))
    empty = Run(SynthesisRequest(text="", **REQ), TextFeed(normalize=None))
    b.admit(parked.stream)
    b.admit(empty.stream)
    parked.stream.text.append("Hel")
    b.step()
    assert parked.result is None and empty.result is None
    parked.cancel.set()
    empty.stream.text.flush()
    b.step()
    assert isinstance(parked.result, Failed) and parked.result.error.code == "cancelled"
    assert isinstance(empty.result, Done) and empty.result.stats.frames == 0 and not empty.codes
    assert not b.active


# --- through a real daemon -------------------------------------------------------------------


def test_daemon_speaks_streamed_words_before_flush(custom_voice_daemon):
    """``text_stream`` + ``$/text``: words without punctuation, one at a time, get audio
    before the flush; the flush ends the request with captions of the turn's sentences."""
    import asyncio

    from qwen3ttsd.client import AsyncClient
    from qwen3ttsd.messages import Caption, Chunk, Synthesize, SynthesizeResult, Warmup

    async def main():
        async with AsyncClient(str(custom_voice_daemon / "tts.sock")) as c:
            await c.request(Warmup(voice="ryan", language="english"))  # as a call does: the load is not the turn's
            items, send_text = c.synthesize_streamed(Synthesize(text="", voice="ryan", language="english",
                                                                seed=3, text_lookahead=2))
            words = "so here is a long answer without any punctuation at all for you".split()
            audio_before_flush = 0
            got: list = []

            async def read():
                async for item in items:
                    got.append(item)

            reader = asyncio.create_task(read())
            for w in words:
                await send_text(w + " ", False)
                await asyncio.sleep(0.15)
            audio_before_flush = sum(len(i.audio) for i in got if isinstance(i, Chunk))
            await send_text("", True)
            await asyncio.wait_for(reader, 60)
            return audio_before_flush, got

    before, got = asyncio.run(main())
    assert before > 0
    assert isinstance(got[-1], SynthesizeResult) and got[-1].frames > 0
    caps = [i for i in got if isinstance(i, Caption)]
    assert [c.text for c in caps] == ["so here is a long answer without any punctuation at all for you"]


def test_a_flushed_turn_shorter_than_the_lookahead_starts() -> None:
    """Regression (phone WebSocket hang in stream mode): "Hi." then flush gives fewer final
    tokens than ``text_lookahead``; ``peek`` holds them, so ``ended`` stays false and the
    stream stayed parked forever while the engine spun. A flushed, fully committed turn starts."""
    from types import SimpleNamespace

    from qwen3ttsd.engine.text_rows import TextRows

    feed = TextFeed(lookahead=8)
    feed.bind(lambda text: list(range(len(text.split()))))
    feed.append("Hi.")
    feed.flush()
    sunk: list[object] = []
    stream = SimpleNamespace(text=feed, voice=None, cancel=threading.Event(), sink=sunk.append)
    rows = TextRows(engine=None)
    rows.parked.append(stream)  # type: ignore[arg-type]
    assert rows.starting(1) == [stream] and not rows.parked and not sunk


def test_an_icl_clone_turn_starts_once_flushed() -> None:
    """An ICL clone's prompt needs all of its text: it starts at the flush, not never."""
    from types import SimpleNamespace

    from qwen3ttsd.engine.text_rows import TextRows

    feed = TextFeed(lookahead=1)
    feed.bind(lambda text: list(range(len(text.split()))))
    feed.append("Hello there, how are you today?")
    rows = TextRows(engine=None)
    stream = SimpleNamespace(text=feed, voice=SimpleNamespace(ref_text="ref"), cancel=threading.Event(),
                             sink=lambda item: None)
    rows.parked.append(stream)  # type: ignore[arg-type]
    assert rows.starting(1) == [] and rows.parked == [stream]
    feed.flush()
    assert rows.starting(1) == [stream]


def test_an_engine_with_only_parked_turns_sleeps_instead_of_spinning(custom_engine):
    """Regression: a turn parked for its text (no rows) made every step return at once, so
    the daemon's engine thread spun at full CPU; it now waits for text like waiting rows."""
    import time

    from qwen3ttsd.engine.text_rows import IDLE_WAIT_S

    b = backend(custom_engine)
    feed = TextFeed(lookahead=4, normalize=None)
    run = Run(SynthesisRequest(text="", **REQ), feed)
    b.admit(run.stream)
    t0 = time.perf_counter()
    for _ in range(5):
        b.step()
    assert time.perf_counter() - t0 >= 4 * IDLE_WAIT_S
    feed.append("Hi.")
    feed.flush()
    while b.active:
        b.step()
    assert isinstance(run.result, Done)


@pytest.mark.slow
def test_turns_left_open_do_not_hold_the_slots_of_other_callers(tiny_models, tmp_path):
    """Found by a user test (HIGH): 16 calls whose turns had text but no flush (an LLM in a
    tool call, or an attacker) held every slot; the next caller got no audio for 120 s and
    then 'not started (GPU busy)'. A generation that waits ``QUIET_TURN_S`` for text ends
    where its text does and frees its slot; the turn's later text goes on in a new
    generation (same codec stream), so nothing is lost."""
    import asyncio

    from qwen3ttsd.client import AsyncClient
    from qwen3ttsd.engine.text_rows import QUIET_TURN_S
    from qwen3ttsd.messages import Caption, Chunk, Synthesize, SynthesizeResult, Warmup

    from .helpers import daemon_env, start_daemon

    rt = tmp_path / "rt"
    p = start_daemon(rt, daemon_env(tiny_models["custom_voice"], rt / "state", idle_timeout=-1, max_batch=2,
                                           queue_timeout=30))
    sock = str(rt / "tts.sock")

    async def open_turn(c: AsyncClient, got: list):
        items, send_text = c.synthesize_streamed(Synthesize(text="", voice="ryan", language="english", seed=1))

        async def read():
            async for item in items:
                got.append(item)

        reader = asyncio.create_task(read())
        await send_text("Well I was just going to say that ", False)
        return reader, send_text

    async def main():
        async with AsyncClient(sock) as a, AsyncClient(sock) as b, AsyncClient(sock) as third:
            await a.request(Warmup(voice="ryan", language="english"))
            got_a: list = []
            got_b: list = []
            reader_a, send_a = await open_turn(a, got_a)
            reader_b, send_b = await open_turn(b, got_b)
            for _ in range(300):   # both speak what they have, then wait for text
                if any(isinstance(i, Chunk) for i in got_a) and any(isinstance(i, Chunk) for i in got_b):
                    break
                await asyncio.sleep(0.05)
            t0 = asyncio.get_running_loop().time()
            items = [i async for i in third.synthesize(Synthesize(text="Me too.", voice="ryan", max_frames=4))]
            waited = asyncio.get_running_loop().time() - t0
            await send_a("the weather is nice.", True)
            await send_b("", True)
            await asyncio.wait_for(asyncio.gather(reader_a, reader_b), 120)
            return items, waited, got_a, got_b

    try:
        items, waited, got_a, got_b = asyncio.run(main())
    finally:
        p.terminate()
        p.wait(30)
    assert isinstance(items[-1], SynthesizeResult) and items[-1].frames == 4
    assert waited < QUIET_TURN_S + 30, waited
    assert isinstance(got_a[-1], SynthesizeResult) and isinstance(got_b[-1], SynthesizeResult)
    words = " ".join(c.text for c in got_a if isinstance(c, Caption)).split()
    assert words == "Well I was just going to say that the weather is nice.".split()
    said_b = " ".join(c.text for c in got_b if isinstance(c, Caption)).split()
    assert said_b == "Well I was just going to say that".split()


def test_a_long_text_sent_at_once_is_normalised_as_it_is_spoken_not_before_its_first_word() -> None:
    """A client sending a whole 20,000-character text in one message: the turn's first audio
    waited for every word to be normalised and tokenized (0.9 s on the tiny model through
    the phone WebSocket). The feed readies what the start needs and the rest as it is spoken."""
    from types import SimpleNamespace

    from qwen3ttsd.engine.text_rows import TextRows

    normalised: list[str] = []
    feed = TextFeed(lookahead=4, normalize=lambda s: normalised.append(s) or s)
    feed.bind(lambda text: [len(w) for w in text.split()])   # a token a word
    feed.append("word " * 4000)
    feed.flush()
    stream = SimpleNamespace(text=feed, voice=None, cancel=threading.Event(), sink=lambda item: None)
    rows = TextRows(engine=None)
    rows.parked.append(stream)  # type: ignore[arg-type]
    assert rows.starting(1) == [stream]
    assert len(normalised) <= feed.lookahead
    from qwen3ttsd.engine.text_feed import AHEAD_TOKENS

    ids = feed.pull(AHEAD_TOKENS)
    assert len(normalised) <= AHEAD_TOKENS and not feed.ended
    while not feed.ended:
        ids += feed.pull(AHEAD_TOKENS)
    assert ids == [4] * 4000 and feed.spoken == " ".join(["word"] * 4000)


def test_a_long_text_at_once_speaks_as_word_by_word(custom_engine):
    text = " ".join([TEXT] * 6)
    at_once = stream_run(custom_engine, [text])
    by_word = stream_run(custom_engine, splits(text)["word"])
    assert isinstance(at_once.result, Done) and at_once.all_codes.shape[0] == REQ["max_frames"]
    assert torch.equal(at_once.all_codes, by_word.all_codes)
