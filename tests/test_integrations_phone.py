"""The framework-free client side of the phone WebSocket (``integrations/phone.py``): what
both integrations send and how they read what comes back."""

from __future__ import annotations

import pytest

from qwen3ttsd.integrations import phone


@pytest.mark.parametrize(("base", "want"), [
    ("http://127.0.0.1:8880", "ws://127.0.0.1:8880/v1/audio/speech/stream"),
    ("https://tts.example/", "wss://tts.example/v1/audio/speech/stream"),
    ("http://h:1/v1", "ws://h:1/v1/audio/speech/stream"),
    ("ws://h:1/v1/audio/speech/stream", "ws://h:1/v1/audio/speech/stream"),
    ("wss://h", "wss://h/v1/audio/speech/stream"),
])
def test_ws_url(base, want):
    assert phone.ws_url(base) == want


def test_session_message_is_what_the_bridge_accepts():
    msg = phone.SessionOptions(voice="narrator", language="en-US", speed=1.25,
                               extra={"max_frames": 4, "seed": 1, "format": "mulaw"}).message()
    # 24 kHz pcm16 with the timestamp header whatever `extra` says; unset fields are left out
    assert msg == {"type": "session.update", "voice": "narrator", "format": "pcm16", "sample_rate": 24000,
                   "audio_header": True, "language": "en", "speed": 1.25, "max_frames": 4, "seed": 1,
                   "text_mode": "stream"}  # a reply is one running generation (issue 22)
    assert "voice" not in phone.SessionOptions().message()  # the server's default speaker
    assert phone.SessionOptions(extra={"text_mode": "clause"}).message()["text_mode"] == "clause"


def test_audio_frame_header():
    ts, pcm = phone.audio_frame(phone.HEADER.pack(7, 1234) + b"\x01\x02")
    assert (ts, pcm) == (1234, b"\x01\x02")


def test_caption_words_spread_over_the_sentence_by_length():
    words = phone.caption_words({"text": "Hi there, friend.", "start_ms": 1500, "end_ms": 3100}, origin_ms=1000)
    assert [w for w, _, _ in words] == ["Hi", "there,", "friend."]
    assert words[0][1] == 0.5 and words[-1][2] == pytest.approx(2.1)
    assert all(a < b for _, a, b in words) and words[1][1] == words[0][2]
    assert phone.caption_words({"text": "", "start_ms": 0, "end_ms": 10}, 0) == []
