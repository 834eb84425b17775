"""Wyoming in-process against a stand-in daemon (``fakedaemon.py``): what it asks the daemon
for, and how many requests one connection holds open. Fast: no model, no uvicorn."""

from __future__ import annotations

import asyncio

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from qwen3ttsd.bridge.facts import DaemonFacts
from qwen3ttsd.bridge.wyoming import WyomingService
from qwen3ttsd.config import BridgeConfig
from qwen3ttsd.formats import CHUNK_PROFILES, MODEL_RATE
from qwen3ttsd.testing import free_port

from .fakedaemon import FakeDaemon


@pytest.fixture()
def daemon(tmp_path):
    (tmp_path / "rt").mkdir()
    d = FakeDaemon(tmp_path / "rt" / "tts.sock", chunk_delay=0.001)
    yield d
    d.close()


def run_wyoming(tmp_path, events: list, until: str, count: int) -> list:
    async def go() -> list:
        port = free_port()
        cfg = BridgeConfig(runtime_dir=str(tmp_path / "rt"), wyoming=f"tcp://127.0.0.1:{port}")
        service = WyomingService(cfg, DaemonFacts(cfg))
        await service.start()
        got = []
        try:
            async with AsyncTcpClient("127.0.0.1", port) as c:
                for ev in events:
                    await c.write_event(ev.event())
                while (ev := await asyncio.wait_for(c.read_event(), 30)) is not None:
                    got.append(ev)
                    if ev.type in (until, "error") and sum(e.type == until for e in got) == count:
                        break
        finally:
            await service.stop()
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
    assert audio(got) == b"First part.|0;First part.|1;Second part.|0;Second part.|1;"
    start = next(e for e in got if e.type == "audio-start")
    assert start.data["rate"] == MODEL_RATE and start.data["width"] == 2
    reqs = [p for m, p in daemon.requests if m == "tts.synthesize"]
    call = CHUNK_PROFILES["call"]
    assert {(p["format"], p["sample_rate"], p["priority"], p["first_chunk_frames"], p["chunk_frames"])
            for p in reqs} == {("pcm16", MODEL_RATE, "realtime", call.first_chunk_frames, call.chunk_frames)}
    assert len({p["session"] for p in reqs}) == 1  # one codec stream for the utterance
