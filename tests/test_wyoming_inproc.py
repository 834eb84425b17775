"""Wyoming in-process against a stand-in daemon (``fakedaemon.py``): what it asks the daemon
for, and how many requests one connection holds open. Fast: no model, no uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from qwen3ttsd.bridge.facts import DaemonFacts
from qwen3ttsd.bridge.wyoming import WyomingService
from qwen3ttsd.config import BridgeConfig
from qwen3ttsd.formats import CHUNK_PROFILES, MODEL_RATE
from qwen3ttsd.testing import free_port

from .fakedaemon import FakeDaemon
from .helpers import wait_for


@pytest.fixture()
def daemon(tmp_path):
    (tmp_path / "rt").mkdir()
    d = FakeDaemon(tmp_path / "rt" / "tts.sock", chunk_delay=0.001)
    yield d
    d.close()


@contextlib.asynccontextmanager
async def serving_wyoming(tmp_path, **conf) -> AsyncIterator[int]:
    """The bridge's Wyoming service on a free loopback port (yielded), for the block's length."""
    port = free_port()
    cfg = BridgeConfig(runtime_dir=str(tmp_path / "rt"), wyoming=f"tcp://127.0.0.1:{port}", **conf)
    service = WyomingService(cfg, DaemonFacts(cfg))
    await service.start()
    try:
        yield port
    finally:
        await service.stop()


def run_wyoming(tmp_path, events: list, until: str, count: int, **conf) -> list:
    async def go() -> list:
        got = []
        async with serving_wyoming(tmp_path, **conf) as port, AsyncTcpClient("127.0.0.1", port) as c:
            for ev in events:
                await c.write_event(ev.event())
            while (ev := await asyncio.wait_for(c.read_event(), 30)) is not None:
                got.append(ev)
                if ev.type in (until, "error") and sum(e.type == until for e in got) == count:
                    break
        return got

    return asyncio.run(go())


def audio(events: list) -> bytes:
    return b"".join(e.payload or b"" for e in events if e.type == "audio-chunk")


def test_80_synthesize_events_on_one_connection_hold_at_most_3_daemon_requests(tmp_path, daemon):
    texts = [f"Announcement number {i}." for i in range(80)]
    got = run_wyoming(tmp_path, [Synthesize(text=t) for t in texts], "audio-stop", 80)
    assert not [e for e in got if e.type == "error"]
    assert audio(got) == b"".join(f"{t}|{i};".encode() for t in texts for i in range(2))
    assert daemon.texts == texts and daemon.max_open <= 3


def test_streaming_request_is_typed_from_the_formats_table(tmp_path, daemon):
    got = run_wyoming(tmp_path, [SynthesizeStart(), SynthesizeChunk(text="First part. Second part."),
                                 SynthesizeStop()], "synthesize-stopped", 1)
    assert audio(got) == b"First part. Second part."  # one running generation (fakedaemon: text as audio)
    start = next(e for e in got if e.type == "audio-start")
    assert start.data["rate"] == MODEL_RATE and start.data["width"] == 2
    reqs = [p for m, p in daemon.requests if m == "tts.synthesize"]
    call = CHUNK_PROFILES["call"]
    assert {(p["format"], p["sample_rate"], p["priority"], p["first_chunk_frames"], p["chunk_frames"])
            for p in reqs} == {("pcm16", MODEL_RATE, "realtime", call.first_chunk_frames, call.chunk_frames)}
    assert len({p["session"] for p in reqs}) == 1  # one codec stream for the utterance
    assert [p["text_stream"] for p in reqs] == [True]


WORDS = "so here is a long answer without any punctuation at all".split()


def word_by_word(words: list[str]) -> list:
    return [SynthesizeStart(), *(SynthesizeChunk(text=w + " ") for w in words), SynthesizeStop()]


def test_a_streamed_turn_is_one_running_generation(tmp_path, daemon):
    """synthesize-chunk text goes into ONE text_stream request as it comes (issue 22), not a
    request per clause; Home Assistant gets the same events as before."""
    got = run_wyoming(tmp_path, word_by_word(WORDS), "synthesize-stopped", 1)
    reqs = [p for m, p in daemon.requests if m == "tts.synthesize"]
    assert len(reqs) == 1 and reqs[0]["text_stream"] is True and reqs[0]["text"] == ""
    assert daemon.texts == ["".join(w + " " for w in WORDS)]
    assert audio(got) == daemon.texts[0].encode()  # each piece spoken as it came, once
    types = [e.type for e in got]
    assert types[0] == "audio-start" and set(types[1:-2]) == {"audio-chunk"}
    assert types[-2:] == ["audio-stop", "synthesize-stopped"]


@pytest.mark.parametrize("when", ["at once", "at flush"])
def test_a_daemon_that_cannot_stream_text_gets_clauses(tmp_path, when):
    """The sequential and upstream backends answer ``unsupported`` (at once, or only after
    the stop: a model still loading): the turn goes on with the clause path (a request per
    clause, the text before the answer included); the connection's next stream goes
    straight to clauses."""
    (tmp_path / "rt").mkdir()
    d = FakeDaemon(tmp_path / "rt" / "tts.sock", chunk_delay=0.001, stream_unsupported=when)
    turn = [SynthesizeStart(), SynthesizeChunk(text="First part. Sec"), SynthesizeChunk(text="ond part."),
            SynthesizeStop()]
    try:
        got = run_wyoming(tmp_path, turn + turn, "synthesize-stopped", 2)
    finally:
        d.close()
    clauses = b"First part.|0;First part.|1;Second part.|0;Second part.|1;"
    assert audio(got) == clauses * 2
    assert d.texts == ["First part.", "Second part."] * 2
    reqs = [p for m, p in d.requests if m == "tts.synthesize"]
    assert [p.get("text_stream", False) for p in reqs] == [True] + [False] * 4
    assert len({p["session"] for p in reqs[:3]}) == 1  # one codec stream for the utterance
    types = [e.type for e in got]
    assert types.count("audio-start") == types.count("audio-stop") == types.count("synthesize-stopped") == 2
    assert [e.type for e in got][-2:] == ["audio-stop", "synthesize-stopped"]


def test_only_the_text_stream_unsupported_answer_falls_back(tmp_path):
    """Another ``unsupported`` (here: no model of the kind installed) is the turn's error,
    not a reason to ask again clause by clause."""
    (tmp_path / "rt").mkdir()
    d = FakeDaemon(tmp_path / "rt" / "tts.sock", stream_error="unsupported")
    try:
        got = run_wyoming(tmp_path, word_by_word(WORDS[:3]), "error", 1)
    finally:
        d.close()
    assert got[-1].type == "error" and got[-1].data["code"] == "unsupported"
    assert [p.get("text_stream", False) for m, p in d.requests if m == "tts.synthesize"] == [True]


def test_a_turn_whose_daemon_connection_drops_before_audio_is_asked_once_more(tmp_path):
    """A daemon exiting as the turn began (idle exit) or crashing: the turn goes to a new
    connection with its text so far, as the clause path retries a segment."""
    (tmp_path / "rt").mkdir()
    d = FakeDaemon(tmp_path / "rt" / "tts.sock", stream_hang_up=1)
    try:
        got = run_wyoming(tmp_path, word_by_word(WORDS), "synthesize-stopped", 1)
    finally:
        d.close()
    assert audio(got) == "".join(w + " " for w in WORDS).encode()
    assert [p.get("text_stream", False) for m, p in d.requests if m == "tts.synthesize"] == [True, True]


def test_a_client_that_hangs_up_mid_turn_stops_the_generation(tmp_path, daemon):
    async def go() -> None:
        async with serving_wyoming(tmp_path) as port:
            async with AsyncTcpClient("127.0.0.1", port) as c:
                for ev in word_by_word(WORDS)[:4]:  # no synthesize-stop: the turn is still open
                    await c.write_event(ev.event())
                while (ev := await asyncio.wait_for(c.read_event(), 30)).type != "audio-chunk":
                    pass
                assert daemon.open_now == 1
            for _ in range(200):  # the bridge noticed, the daemon connection closed
                if daemon.open_now == 0:
                    break
                await asyncio.sleep(0.01)
            assert daemon.open_now == 0 and daemon.texts == []  # cancelled, never finished

    asyncio.run(go())


def test_a_chunk_of_thousands_of_clauses_is_refused_on_the_clause_path(tmp_path):
    """After an ``unsupported`` answer the connection speaks clauses: a 20,000-character
    chunk of "Hi. " would hold 5,000 segments in the bridge (~5 KB each)."""
    (tmp_path / "rt").mkdir()
    d = FakeDaemon(tmp_path / "rt" / "tts.sock", stream_unsupported="at once")
    first = [SynthesizeStart(), SynthesizeChunk(text="Hi."), SynthesizeStop()]
    try:
        # the first turn learns that the daemon cannot stream text
        got = run_wyoming(tmp_path, [*first, SynthesizeStart(), SynthesizeChunk(text="Hi. " * 4_999)], "error", 1)
    finally:
        d.close()
    assert got[-1].type == "error" and got[-1].data["code"] == "payload_too_large", got[-1]


def test_a_stream_left_open_is_closed_after_the_idle_timeout(tmp_path, daemon):
    """synthesize-start, some text, then silence: the client, not the bridge, is the one
    that should speak; its running generation must not hold the daemon for ever."""
    got = run_wyoming(tmp_path, word_by_word(WORDS)[:3], "never", 1, wyoming_idle_timeout=0.5)
    assert audio(got) == b"so here "  # what it sent was spoken, then the connection closed
    wait_for(lambda: daemon.open_now == 0, 5, what="the generation cancelled")
    assert daemon.texts == []


def test_an_error_at_the_start_of_a_stream_reaches_a_client_still_writing(tmp_path):
    """No daemon: the turn fails at synthesize-start while the client (Home Assistant writes
    the LLM's chunks in its own task) is still sending. Its error event must not be lost to
    a connection reset: the bridge reads what the client still sends before closing."""
    (tmp_path / "rt").mkdir()  # no daemon socket in it

    async def go() -> list:
        async with serving_wyoming(tmp_path) as port, AsyncTcpClient("127.0.0.1", port) as c:
            await c.write_event(SynthesizeStart().event())
            await asyncio.sleep(0.5)  # the bridge has answered the error by now
            for ev in word_by_word(WORDS)[1:]:
                await c.write_event(ev.event())
            got = []
            while (ev := await asyncio.wait_for(c.read_event(), 10)) is not None:
                got.append(ev)
            return got

    got = asyncio.run(go())
    assert [e.type for e in got] == ["error"] and got[0].data["code"] == "unavailable"
