"""Wyoming TTS in the real bridge (--activate, tiny models), driven by the ``wyoming``
package's own client as Home Assistant would."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from qwen3ttsd.bridge.wyoming import qwen_language, read_event, voice_params
from qwen3ttsd.engine.engine import frame_budget
from qwen3ttsd.errors import TTSError
from qwen3ttsd.testing import free_port

from .helpers import wait_for
from .test_bridge import Bridge, _ref_wav

pytestmark = pytest.mark.slow
FRAME_BYTES = 1920 * 2  # one 80 ms frame of pcm16 at 24 kHz


def wyoming_bridge(root: Path, models_dir: Path) -> Bridge:
    """A bridge serving Wyoming on a free loopback port (``.wyoming_port``)."""
    port = free_port()
    b = Bridge(root, models_dir, args=["--wyoming", f"tcp://127.0.0.1:{port}"])
    b.wyoming_port = port
    return b


@pytest.fixture(scope="module")
def wy(tiny_models, tmp_path_factory):
    b = wyoming_bridge(tmp_path_factory.mktemp("wyoming"), tiny_models["custom_voice"].parent)
    yield b
    b.stop()


def client(b: Bridge) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", b.wyoming_port)


async def read_until(c: AsyncTcpClient, *types: str, timeout: float = 120) -> list:
    """Events up to and including the first of ``types`` (or the connection's end)."""
    events = []
    while True:
        ev = await asyncio.wait_for(c.read_event(), timeout)
        if ev is None:
            return events
        events.append(ev)
        if ev.type in types:
            return events


def audio_of(events: list) -> bytes:
    return b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type))


def test_voice_and_language_mapping():
    assert qwen_language("en") == "english" and qwen_language("en-US") == "english"
    assert qwen_language("de_DE") == "german" and qwen_language(None) == "auto"
    assert voice_params({"name": "alloy"}) == {"voice": "vivian", "language": "auto"}
    assert voice_params({"language": "ja"}) == {"voice": "ono_anna", "language": "japanese"}
    assert voice_params({"name": "ryan", "language": "en"}) == {"voice": "ryan", "language": "english"}


def test_oversized_or_malformed_events_are_refused_before_reading_them():
    async def read(raw: bytes):
        r = asyncio.StreamReader()
        r.feed_data(raw)
        r.feed_eof()
        return await read_event(r)

    huge = b'{"type": "synthesize", "data_length": 1073741824}\n'
    with pytest.raises(TTSError, match="at most"):
        asyncio.run(read(huge))  # refused from the header: nothing buffered
    with pytest.raises(TTSError, match="not valid JSON"):
        asyncio.run(read(b"not json\n"))
    assert asyncio.run(read(b"")) is None
    ok = asyncio.run(read(b'{"type": "synthesize", "data_length": 15}\n{"text": "Hi."}'))
    assert ok.type == "synthesize" and ok.data == {"text": "Hi."}


def test_describe_answers_without_waking_the_daemon(wy):
    async def go():
        async with client(wy) as c:
            t0 = time.monotonic()
            await c.write_event(Describe().event())
            ev = await asyncio.wait_for(c.read_event(), 5)
            return Info.from_event(ev), time.monotonic() - t0

    info, took = asyncio.run(go())
    tts = info.tts[0]
    assert tts.supports_synthesize_streaming and tts.attribution.url.startswith("https://")
    names = {v.name for v in tts.voices}
    assert {"vivian", "ryan", "ono_anna", "sohee"} <= names
    assert "en" in tts.voices[0].languages and "zh" in tts.voices[0].languages
    assert wy.health()["daemon"]["spawns"] == 0  # nothing woke the daemon


def test_synthesize_whole_text(wy):
    text = "Hello from Wyoming."

    async def go():
        async with client(wy) as c:
            await c.write_event(Synthesize(text=text, voice=SynthesizeVoice(name="ryan")).event())
            return await read_until(c, AudioStop().event().type)

    events = asyncio.run(go())
    assert AudioStart.is_type(events[0].type) and AudioStop.is_type(events[-1].type)
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    assert len(audio_of(events)) == frame_budget(text) * FRAME_BYTES


def test_bridge_with_wyoming_stays_small_and_torch_free(wy):
    maps = Path(f"/proc/{wy.proc.pid}/maps").read_text()
    for lib in ("numpy", "torch", "soundfile", "libsndfile"):
        assert lib not in maps, lib
    rss_kb = int(next(line for line in Path(f"/proc/{wy.proc.pid}/status").read_text().splitlines()
                      if line.startswith("VmRSS")).split()[1])
    assert rss_kb < 40 * 1024  # the budget; bench/bench_wyoming.py reports the exact figure


WORDS = "so the lights in the kitchen are now off and the front door is locked for the night".split()


async def stream_words(c: AsyncTcpClient, got: list, until_audio: bool = False) -> int:
    """An LLM's answer word by word (no punctuation), a word per 0.15 s, again and again
    while ``until_audio`` and none came (the daemon may still be loading the model): how
    many words were sent. ``got`` fills with the events read meanwhile."""
    await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name="aiden")).event())
    sent = 0
    while sent < len(WORDS) or until_audio and "audio-chunk" not in {e.type for e in got} and sent < 800:
        await c.write_event(SynthesizeChunk(text=WORDS[sent % len(WORDS)] + " ").event())
        sent += 1
        await asyncio.sleep(0.15)
    return sent


async def read_into(c: AsyncTcpClient, got: list, until: str) -> None:
    while (ev := await c.read_event()) is not None:
        got.append(ev)
        if ev.type in (until, "error"):
            return


def test_streaming_is_one_generation_heard_before_the_text_ends(wy):
    """Issue 22: a streamed turn is ONE running generation fed as the words come; words
    without punctuation are heard before synthesize-stop, and the events are as before."""
    served_before = wy.admin("admin.status")["served"]

    async def go():
        async with client(wy) as c:
            got: list = []
            reader = asyncio.create_task(read_into(c, got, "synthesize-stopped"))
            sent = await stream_words(c, got, until_audio=True)
            heard = len(audio_of(got))
            await c.write_event(Synthesize(text=" ".join(WORDS)).event())  # for old servers: ignored
            await c.write_event(SynthesizeStop().event())
            await asyncio.wait_for(reader, 120)
            return sent, heard, got

    sent, heard, events = asyncio.run(go())
    assert heard > 0 and sent < 800  # audio while the "LLM" was still writing
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types.count("audio-start") == 1
    assert types[-2:] == ["audio-stop", "synthesize-stopped"]
    assert set(types[1:-2]) == {"audio-chunk"}
    stamps = [AudioChunk.from_event(e).timestamp for e in events if e.type == "audio-chunk"]
    assert stamps == sorted(stamps) and stamps[0] == 0
    assert len(audio_of(events)) > heard
    assert wy.admin("admin.status")["served"] == served_before + 1  # one generation, not one per clause


def test_hanging_up_mid_turn_cancels_the_generation(wy):
    served_before = wy.admin("admin.status")["served"]

    async def go():
        async with client(wy) as c:
            got: list = []
            reader = asyncio.create_task(read_into(c, got, "audio-chunk"))
            await stream_words(c, got, until_audio=True)
            await asyncio.wait_for(reader, 60)
        # leaving the block closes the connection mid-turn (no synthesize-stop)

    asyncio.run(go())
    wait_for(lambda: wy.admin("admin.status")["active_streams"] == 0, 20, what="daemon stream cancelled")
    assert wy.admin("admin.status")["served"] == served_before


def test_whole_text_copy_after_synthesize_stop_is_not_spoken_again(wy):
    async def go():
        async with client(wy) as c:
            for ev in (SynthesizeStart(), SynthesizeChunk(text="Hi there."), SynthesizeStop(),
                       Synthesize(text="Hi there.")):
                await c.write_event(ev.event())
            events = await read_until(c, "synthesize-stopped")
            with pytest.raises(asyncio.TimeoutError):
                await read_until(c, "audio-start", timeout=1.5)
            return events

    events = asyncio.run(go())
    assert len(audio_of(events)) == frame_budget("Hi there.") * FRAME_BYTES


def test_unknown_voice_and_empty_text_are_errors(wy):
    async def ask(*events) -> list:
        async with client(wy) as c:
            for ev in events:
                await c.write_event(ev.event())
            return await read_until(c, "error", timeout=60)

    got = asyncio.run(ask(Synthesize(text="Hi.", voice=SynthesizeVoice(name="no-such-voice"))))
    assert got[-1].type == "error" and "no-such-voice" in Error.from_event(got[-1]).text
    got = asyncio.run(ask(Synthesize(text="  ")))
    assert got[-1].type == "error" and Error.from_event(got[-1]).code == "bad_request"
    got = asyncio.run(ask(SynthesizeStart(voice=SynthesizeVoice(name="nobody")),
                          SynthesizeChunk(text="Hello there, friend."), SynthesizeStop()))
    assert got[-1].type == "error"


def test_a_streamed_answer_with_nothing_to_say_ends_quietly(wy):
    """An LLM's answer of only an emoji or punctuation (a thumbs-up): Home Assistant gets
    an empty audio and ``synthesize-stopped``, not an error it would show as a TTS failure
    (found by a user test). A whole-text ``synthesize`` of nothing stays a ``bad_request``."""
    async def ask(*events) -> list:
        async with client(wy) as c:
            for ev in events:
                await c.write_event(ev.event())
            return await read_until(c, "synthesize-stopped", "error", timeout=60)

    for text in (" ", "\U0001F44D", "...", ""):
        chunks = [SynthesizeChunk(text=text)] if text else []
        got = asyncio.run(ask(SynthesizeStart(), *chunks, SynthesizeStop()))
        assert [e.type for e in got] == ["audio-start", "audio-stop", "synthesize-stopped"], (text, got)


def test_disconnect_cancels_generation(wy):
    served_before = wy.admin("admin.status")["served"]

    async def go():
        async with client(wy) as c:
            await c.write_event(Synthesize(text="A long answer nobody will hear. " * 20,
                                           voice=SynthesizeVoice(name="ryan")).event())
            await read_until(c, "audio-chunk")
        # leaving the block closes the connection mid-stream

    asyncio.run(go())
    wait_for(lambda: wy.admin("admin.status")["active_streams"] == 0, 20, what="daemon stream cancelled")
    assert wy.admin("admin.status")["served"] == served_before


def test_describe_lists_saved_clone_voices_after_a_synthesis(wy):
    r = httpx.post(wy.url + "/v1/audio/voices", files={"file": ("ref.wav", _ref_wav(), "audio/wav")},
                   data={"name": "grandpa", "consent": "recorded with permission"}, timeout=120)
    assert r.status_code == 201, r.text

    async def go():
        async with client(wy) as c:
            await c.write_event(Synthesize(text="Cloned.", voice=SynthesizeVoice(name="grandpa")).event())
            events = await read_until(c, "audio-stop")
        await asyncio.sleep(1.0)  # the bridge refreshes what it knows right after
        async with client(wy) as c:
            await c.write_event(Describe().event())
            return events, Info.from_event(await c.read_event())

    events, info = asyncio.run(go())
    assert len(audio_of(events)) == frame_budget("Cloned.") * FRAME_BYTES
    voices = {v.name: v for v in info.tts[0].voices}
    assert "grandpa" in voices and voices["grandpa"].version == "base"
    assert voices["ryan"].version == "custom_voice"


def test_daemon_that_cannot_start_gives_an_error_event_at_once(tiny_models, tmp_path):
    port = free_port()
    b = Bridge(tmp_path, tiny_models["custom_voice"].parent,
               args=["--daemon-command", "/bin/false", "--wyoming", f"tcp://127.0.0.1:{port}"])
    try:
        async def ask(*events) -> list:
            async with AsyncTcpClient("127.0.0.1", port) as c:
                for ev in events:
                    await c.write_event(ev.event())
                return await read_until(c, "error", timeout=30)

        for events in ([Synthesize(text="Hello.")],
                       [SynthesizeStart(), SynthesizeChunk(text="Hello there, friend."), SynthesizeStop()]):
            got = asyncio.run(ask(*events))
            assert [e.type for e in got] == ["error"] and Error.from_event(got[0]).code == "unavailable"
    finally:
        b.stop()


def test_the_sequential_engine_speaks_a_stream_clause_by_clause(tiny_models, tmp_path):
    """The sequential engine cannot stream text (``unsupported``): the turn is spoken with
    the clause path, as before issue 22 - Home Assistant sees no difference."""
    port = free_port()
    b = Bridge(tmp_path, tiny_models["custom_voice"].parent, extra_env={"QWEN3TTSD_ENGINE": "sequential"},
               args=["--wyoming", f"tcp://127.0.0.1:{port}"])
    b.wyoming_port = port
    try:
        async def go():
            async with client(b) as c:
                got: list = []
                reader = asyncio.create_task(read_into(c, got, "synthesize-stopped"))
                for ev in (SynthesizeStart(voice=SynthesizeVoice(name="ryan")), SynthesizeChunk(text="Okay, the"),
                           SynthesizeChunk(text=" lights are off."), SynthesizeStop()):
                    await c.write_event(ev.event())
                await asyncio.wait_for(reader, 120)
                return got

        events = asyncio.run(go())
        types = [e.type for e in events]
        assert types[0] == "audio-start" and types[-2:] == ["audio-stop", "synthesize-stopped"], types
        assert len(audio_of(events)) == (frame_budget("Okay,") + frame_budget("the lights are off.")) * FRAME_BYTES
    finally:
        b.stop()
