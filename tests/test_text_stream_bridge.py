"""A phone call's turn as one running generation, through the real bridge and daemon
(tiny model): words without punctuation, sent one at a time, are heard before the flush;
the flush ends the turn with its captions; a cancel mid-turn stops it at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
import websockets

from .test_bridge import _WS, Bridge

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bridge(tiny_models, tmp_path_factory):
    b = Bridge(tmp_path_factory.mktemp("bridge"), tiny_models["custom_voice"].parent)
    yield b
    b.stop()


async def _until(ws: _WS, kind: str) -> tuple[int, list[dict]]:
    audio, msgs = 0, []
    while True:
        m = await ws.recv()
        if isinstance(m, bytes):
            audio += len(m) - 8
            continue
        msgs.append(json.loads(m))
        if msgs[-1]["type"] == kind:
            return audio, msgs


def test_streamed_turn_is_heard_before_flush_and_cancels(bridge):
    async def call():
        async with websockets.connect(bridge.url.replace("http", "ws") + "/v1/audio/speech/stream") as raw:
            ws = _WS(raw)
            assert json.loads(await ws.recv())["session"]["text_mode"] == "stream"  # the default
            await ws.send(json.dumps({"type": "session.update", "voice": "ryan", "seed": 1, "text_lookahead": 2}))
            assert json.loads(await ws.recv())["type"] == "session"
            while not ws.warm:  # the call opened the daemon and loaded the model: as an agent would, wait for it
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.2)
            words = "so here is a long answer without any punctuation at all for you".split()
            heard_at = None
            t0 = time.monotonic()
            for w in words:
                await ws.send(json.dumps({"type": "text", "text": w + " "}))
                try:
                    while True:
                        m = await asyncio.wait_for(ws.recv(), 0.15)
                        if isinstance(m, bytes) and heard_at is None:
                            heard_at = time.monotonic() - t0
                except asyncio.TimeoutError:
                    pass
            flushed_at = time.monotonic() - t0
            await ws.send(json.dumps({"type": "flush"}))
            _, msgs = await _until(ws, "flushed")
            kinds = [m["type"] for m in msgs]
            assert "segment.done" in kinds
            assert [m["text"] for m in msgs if m["type"] == "caption"] == [" ".join(words)]

            # cancel in the middle of a turn: ends at once, the call goes on
            await ws.send(json.dumps({"type": "text", "text": "and now another answer that "}))
            await ws.send(json.dumps({"type": "cancel"}))
            _, msgs = await _until(ws, "cancelled")
            await ws.send(json.dumps({"type": "text", "text": "Okay then."}))
            await ws.send(json.dumps({"type": "flush"}))
            audio, msgs = await _until(ws, "flushed")
            assert audio > 0 and not [m for m in msgs if m["type"] == "error"]
            return heard_at, flushed_at

    heard_at, flushed_at = asyncio.run(call())
    assert heard_at is not None and heard_at < flushed_at  # audio while the words were still coming


def test_a_short_turn_sent_before_warm_is_spoken(bridge):
    """Regression (stream mode hung the call): voice update, then at once ``"Hi."`` and a
    flush without waiting for ``warm``: fewer final tokens than the lookahead stayed parked
    forever. The turn is spoken and flushed."""
    async def call():
        async with websockets.connect(bridge.url.replace("http", "ws") + "/v1/audio/speech/stream") as raw:
            ws = _WS(raw)
            await ws.recv()
            await ws.send(json.dumps({"type": "session.update", "text_mode": "stream"}))
            await ws.send(json.dumps({"type": "session.update", "voice": "ryan"}))
            await ws.send(json.dumps({"type": "text", "text": "Hi."}))
            await ws.send(json.dumps({"type": "flush"}))
            return await asyncio.wait_for(_until(ws, "flushed"), 60)

    audio, msgs = asyncio.run(call())
    assert audio > 0 and not [m for m in msgs if m["type"] == "error"]


async def _streamed_turn(bridge, words: list[str], pause: float, **session) -> tuple[list[dict], list[int], int]:
    """A stream-mode turn fed word by word: (its events in order, the audio bytes received
    before each event, all the turn's audio bytes)."""
    async with websockets.connect(bridge.url.replace("http", "ws") + "/v1/audio/speech/stream") as raw:
        ws = _WS(raw)
        await ws.recv()
        await ws.send(json.dumps({"type": "session.update", "voice": "ryan", "seed": 2, "text_mode": "stream",
                                  **session}))
        assert json.loads(await ws.recv())["type"] == "session"
        while not ws.warm:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.2)
        events: list[dict] = []
        audio_before: list[int] = []
        audio = 0

        async def read(until: str | None) -> None:
            nonlocal audio
            while True:
                m = await ws.recv()
                if isinstance(m, bytes):
                    audio += len(m) - 8
                    continue
                events.append(json.loads(m))
                audio_before.append(audio)
                if events[-1]["type"] == until:
                    return

        reader = asyncio.create_task(read("flushed"))
        for w in words:
            await ws.send(json.dumps({"type": "text", "text": w + " "}))
            await asyncio.sleep(pause)
        await ws.send(json.dumps({"type": "flush"}))
        await asyncio.wait_for(reader, 60)
        return events, audio_before, audio


def _caption_words(events: list[dict]) -> list[str]:
    return " ".join(e["text"] for e in events if e["type"] == "caption").split()


def test_streamed_turn_captions_cover_every_word_live_and_in_order(bridge):
    """Issue 22: a turn's captions list all its words, sentence by sentence, in order on
    the call's timeline - and a sentence's caption comes while the turn still speaks,
    not only when it ends."""
    text = ("Hello there, thanks for calling us today. I can help you move your booking to "
            "another day this week. Which day would suit you best?")
    events, audio_before, audio = asyncio.run(_streamed_turn(bridge, text.split(), 0.05))
    assert not [e for e in events if e["type"] == "error"]
    captions = [e for e in events if e["type"] == "caption"]
    assert _caption_words(events) == text.split()
    assert [c["text"] for c in captions] == ["Hello there, thanks for calling us today.",
                                             "I can help you move your booking to another day this week.",
                                             "Which day would suit you best?"]
    done = next(e for e in events if e["type"] == "segment.done")
    spans = [(c["start_ms"], c["end_ms"]) for c in captions]
    assert spans[0][0] == done["start_ms"] and spans[-1][1] == done["end_ms"]  # the turn's audio, whole
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])) and all(s < e for s, e in spans)
    first = events.index(captions[0])
    assert audio_before[first] < audio  # live: the turn's audio went on after its first caption


def test_streamed_turn_whose_generation_ends_early_speaks_and_captions_the_rest(bridge):
    """A generation that ends before the turn's text does (here its ``max_frames`` cap;
    a model's end-of-speech likewise) leaves the rest to the next generation of the turn,
    on the same codec stream: no word is dropped from the audio or the captions."""
    words = "one two three four five six seven eight nine ten eleven twelve".split()
    events, _, audio = asyncio.run(_streamed_turn(bridge, words, 0.15, max_frames=3, text_lookahead=1))
    assert not [e for e in events if e["type"] == "error"]
    assert _caption_words(events) == words
    generation = 3 * 1920 * 2  # max_frames of pcm16 at 24 kHz
    assert audio % generation == 0 and audio > generation  # more than one generation spoke the turn


def test_a_turn_with_nothing_to_say_and_a_format_change_mid_turn(bridge):
    """Found by a user test: in stream mode "..." or an emoji alone was spoken as seconds of
    audio with no caption (the clause path says nothing); a ``session.update`` of the format
    while a turn was open made that turn's frames carry the new format's timestamps (the
    call's timeline 22 s off). Now: no audio for nothing speakable; the format changes
    between turns (a clear error mid-turn, the call goes on)."""
    async def call():
        async with websockets.connect(bridge.url.replace("http", "ws") + "/v1/audio/speech/stream") as raw:
            ws = _WS(raw)
            await ws.recv()
            await ws.send(json.dumps({"type": "session.update", "voice": "ryan", "seed": 1}))
            await _until(ws, "session")
            out = []
            for text in ("...", "\U0001F600"):
                await ws.send(json.dumps({"type": "text", "text": text}))
                await ws.send(json.dumps({"type": "flush"}))
                out.append(await _until(ws, "flushed"))
            await ws.send(json.dumps({"type": "text", "text": "Hello there "}))
            await ws.send(json.dumps({"type": "session.update", "format": "mulaw"}))
            _, refused = await _until(ws, "error")
            await ws.send(json.dumps({"type": "text", "text": "and goodbye."}))
            await ws.send(json.dumps({"type": "flush"}))
            audio, msgs = await _until(ws, "flushed")
            return out, refused[-1], audio, msgs

    out, refused, audio, msgs = asyncio.run(call())
    for got, msgs_ in out:
        assert got == 0 and msgs_[-1].get("sent_ms", 0) == 0, msgs_
    assert refused["code"] == "bad_request" and "between turns" in refused["message"]
    done = next(m for m in msgs if m["type"] == "segment.done")
    caps = [m for m in msgs if m["type"] == "caption"]
    assert caps[-1]["end_ms"] == pytest.approx(done["end_ms"], abs=2)   # one timeline, in pcm16's own terms
    assert msgs[-1]["sent_ms"] == pytest.approx(audio / 2 / 24, abs=2)   # 24 kHz, 2 bytes a sample
