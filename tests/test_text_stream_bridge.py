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
            assert json.loads(await ws.recv())["session"]["text_mode"] == "clause"  # the default, as before
            await ws.send(json.dumps({"type": "session.update", "voice": "ryan", "seed": 1, "text_lookahead": 2,
                                      "text_mode": "stream"}))
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
