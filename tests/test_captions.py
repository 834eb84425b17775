"""Captions (segment timings) and SSML, end to end through the real daemon (tiny model):
timings must match the audio actually delivered - after speed change and SSML pauses."""

from __future__ import annotations

import asyncio
import json
import subprocess

import numpy as np
import pytest
import websockets

from qwen3ttsd.client import Client
from qwen3ttsd.errors import TTSError
from qwen3ttsd.text import prepare_segments
from qwen3ttsd.text.ssml import SSMLError, parse_ssml

from .helpers import PY, wyoming_audio_bytes
from .test_wyoming import wyoming_bridge

FRAME_S = 0.08


# --- SSML parsing (pure Python) -------------------------------------------------------------


def test_ssml_subset_pieces():
    pieces, trailing = parse_ssml(
        '<speak xml:lang="en-US">Hello <break time="500ms"/> world. <prosody rate="slow">Slowly.</prosody> '
        '<lang xml:lang="fr-FR">Bonjour.</lang> <say-as interpret-as="characters">ABC</say-as> '
        '<sub alias="World Wide Web">WWW</sub> <unknown>kept</unknown><audio src="x">never</audio>'
        '<break strength="strong"/></speak>')
    assert [(p.text, p.language, p.rate, p.pause_before_s) for p in pieces] == [
        ("Hello", "english", 1.0, 0.0), ("world.", "english", 1.0, 0.5), ("Slowly.", "english", 0.8, 0.0),
        ("Bonjour.", "french", 1.0, 0.0), ("A B C World Wide Web kept", "english", 1.0, 0.0)]
    assert trailing == 0.75


@pytest.mark.parametrize("doc", [
    "<speak>unclosed", '<!DOCTYPE x [<!ENTITY a "aaaa">]><speak>&a;&a;</speak>', "<?xml version=\"1.0\"?><notspeak/>",
    '<speak><break time="soon"/></speak>', '<speak><prosody rate="warp">x</prosody></speak>',
    '<speak><lang xml:lang="tlh">Qapla</lang></speak>', "<speak>&nbsp;</speak>",
])
def test_malformed_or_hostile_ssml_is_refused(doc):
    with pytest.raises(SSMLError):
        prepare_segments(doc, "english")


def test_segments_keep_the_written_text_for_captions():
    segs, _ = prepare_segments("I paid $5. Then 2 more.", "english")
    assert [(s.text, s.caption) for s in segs] == [("I paid five dollars.", "I paid $5."),
                                                   ("Then two more.", "Then 2 more.")]


# --- through the daemon ----------------------------------------------------------------------


def speak(rt, **params) -> tuple[np.ndarray, list[dict], dict]:
    audio = bytearray()
    captions, result = [], {}
    with Client(str(rt / "tts.sock")) as c:
        for ev in c.synthesize(**{"voice": "ryan", "format": "pcm16", "seed": 1, **params}):
            if ev.kind == "chunk":
                audio += ev.audio
            elif ev.kind == "segment":
                captions.append(ev.span)
            elif ev.kind == "result":
                result = ev.to_wire()
    return np.frombuffer(bytes(audio), np.int16), captions, result


@pytest.mark.slow
@pytest.mark.parametrize("speed", [1.0, 2.0, 0.5])
def test_caption_spans_tile_the_delivered_audio(custom_voice_daemon, speed):
    pcm, caps, res = speak(custom_voice_daemon, text="First one. Second one. Third one.", max_frames=5, speed=speed)
    assert [c["text"] for c in caps] == ["First one.", "Second one.", "Third one."]
    for i, c in enumerate(caps):
        assert c["index"] == i
        assert c["end"] - c["start"] == pytest.approx(5 * FRAME_S / speed, abs=1e-3)
        if i:
            assert c["start"] == pytest.approx(caps[i - 1]["end"], abs=1e-3)
    assert caps[-1]["end"] == pytest.approx(len(pcm) / 24000, abs=0.03)  # time-stretch granularity
    assert res["duration_s"] == pytest.approx(len(pcm) / 24000, abs=1e-3)


@pytest.mark.slow
def test_ssml_break_is_exact_silence_and_prosody_sets_the_speed(custom_voice_daemon):
    pcm, caps, _ = speak(custom_voice_daemon, max_frames=5, text=(
        '<speak><s>Before the pause.</s><break time="700ms"/><s><prosody rate="50%">Slow part.</prosody></s>'
        '<s>Normal again.</s><break time="300ms"/></speak>'))
    assert [c["text"] for c in caps] == ["Before the pause.", "Slow part.", "Normal again."]
    a, b, c = caps
    assert b["start"] - a["end"] == pytest.approx(0.7, abs=1e-3)
    assert b["end"] - b["start"] == pytest.approx(5 * FRAME_S / 0.5, abs=1e-3)
    assert c["end"] - c["start"] == pytest.approx(5 * FRAME_S, abs=1e-3)
    assert len(pcm) / 24000 == pytest.approx(c["end"] + 0.3, abs=0.03)
    gap = pcm[int(a["end"] * 24000) + 240: int(b["start"] * 24000) - 240]
    assert len(gap) > 0.6 * 24000 and not gap.any()  # digital silence, not model noise


@pytest.mark.slow
def test_ssml_tags_are_never_spoken(custom_voice_daemon):
    plain, _, _ = speak(custom_voice_daemon, text="Hello world.", max_frames=6)
    tagged, _, _ = speak(custom_voice_daemon, text="<speak>Hello <emphasis>world</emphasis>.</speak>", max_frames=6)
    assert np.array_equal(plain, tagged)


@pytest.mark.slow
@pytest.mark.parametrize("text", ["<speak>broken", '<speak><lang xml:lang="tlh">x</lang></speak>'])
def test_bad_ssml_is_bad_request(custom_voice_daemon, text):
    with pytest.raises(TTSError) as ei:
        speak(custom_voice_daemon, text=text)
    assert ei.value.code == "bad_request"


@pytest.mark.slow
def test_ctl_say_writes_subtitles(custom_voice_daemon, tmp_path):
    out, srt, vtt = tmp_path / "a.wav", tmp_path / "a.srt", tmp_path / "a.vtt"
    for sub in (srt, vtt):
        r = subprocess.run([PY, "-m", "qwen3ttsd.cli", "--runtime-dir", str(custom_voice_daemon), "say",
                            "One sentence. Another one.", "-o", str(out), "--voice", "ryan",
                            "--max-frames", "5", "--speed", "2", "--subtitles", str(sub)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    assert srt.read_text() == ("1\n00:00:00,000 --> 00:00:00,200\nOne sentence.\n\n"
                               "2\n00:00:00,200 --> 00:00:00,400\nAnother one.\n")
    assert vtt.read_text().startswith("WEBVTT\n\n00:00:00.000 --> 00:00:00.200\nOne sentence.\n")


# --- through the bridge: SSE, WebSocket, Wyoming -------------------------------------------


@pytest.fixture(scope="module")
def wy(tiny_models, tmp_path_factory):
    b = wyoming_bridge(tmp_path_factory.mktemp("capbridge"), tiny_models["custom_voice"].parent)
    yield b
    b.stop()


@pytest.mark.slow
def test_sse_carries_segment_timings_and_ssml_input_works(wy):
    import base64

    import httpx

    r = httpx.post(wy.url + "/v1/audio/speech", timeout=120, json={
        "input": '<speak>One here.<break time="250ms"/>Two here.</speak>', "voice": "ryan",
        "response_format": "pcm", "stream_format": "sse", "max_frames": 4})
    assert r.status_code == 200, r.text
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    segs = [e for e in events if e["type"] == "speech.segment"]
    assert [s["text"] for s in segs] == ["One here.", "Two here."]
    assert segs[1]["start"] - segs[0]["end"] == pytest.approx(0.25, abs=1e-3)
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert len(audio) / 2 / 24000 == pytest.approx(segs[1]["end"], abs=0.02)
    r = httpx.post(wy.url + "/v1/audio/speech", timeout=60, json={"input": "<speak>broken", "voice": "ryan"})
    assert r.status_code == 400 and "SSML" in r.json()["error"]["message"]


@pytest.mark.slow
def test_websocket_captions_and_ssml_sessions(wy):
    async def call() -> tuple[list[dict], int]:
        async with websockets.connect(wy.url.replace("http", "ws") + "/v1/audio/speech/stream") as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "session.update", "voice": "ryan", "max_frames": 3,
                                      "text_format": "ssml"}))
            await ws.send(json.dumps({"type": "text", "text": "<speak>First part.<break time='500ms'/>"}))
            await ws.send(json.dumps({"type": "text", "text": "Second part.</speak>"}))
            await ws.send(json.dumps({"type": "flush"}))
            msgs, audio = [], 0
            while True:
                m = await asyncio.wait_for(ws.recv(), 120)
                if isinstance(m, bytes):
                    audio += len(m) - 8
                    continue
                msgs.append(json.loads(m))
                if msgs[-1]["type"] == "flushed":
                    return msgs, audio

    msgs, audio = asyncio.run(call())
    caps = [m for m in msgs if m["type"] == "caption"]
    assert [c["text"] for c in caps] == ["First part.", "Second part."]
    assert caps[1]["start_ms"] - caps[0]["end_ms"] == 500
    done = next(m for m in msgs if m["type"] == "segment.done")
    assert done["end_ms"] == audio * 1000 // 2 // 24000 == done["sent_ms"]


@pytest.mark.slow
def test_wyoming_ssml_is_parsed_not_spoken(wy):
    from wyoming.tts import Synthesize, SynthesizeVoice

    async def speak(text: str, fmt: str | None) -> int:
        synthesize = Synthesize(text=text, voice=SynthesizeVoice(name="ryan"), text_format=fmt)
        return await wyoming_audio_bytes(wy.wyoming_port, synthesize)

    plain = asyncio.run(speak("Hi.", None))
    fragment = asyncio.run(speak('Hi.<break time="1s"/>', "ssml"))  # a fragment gets its <speak> root
    assert fragment - plain == 24000 * 2  # exactly one second of silence, no tag read aloud


@pytest.mark.slow
def test_ssml_markup_does_not_sway_language_detection(custom_voice_daemon):
    doc = ('<speak><s>Der schnelle braune Fuchs springt über den faulen Hund, und wir sind nicht müde.</s>'
           '<break time="100ms"/></speak>')
    _, _, res = speak(custom_voice_daemon, text=doc, max_frames=2)
    assert res["language"] == "german"
