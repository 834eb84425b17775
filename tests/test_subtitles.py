"""Caption files from untrusted text: a caption is one cue, whatever its text says.

The text is the user's input as written, so it may hold blank lines, timing arrows and
markup; SRT and WebVTT must keep it inside its own cue and (WebVTT) escaped.
"""

from __future__ import annotations

import re

import pytest

from qwen3ttsd.cli import subtitles

INJECT = "Hello.\n\n99\n00:00:01,000 --> 00:00:09,000\nInjected cue"
VTT_INJECT = "Hello.\n\n00:00:01.000 --> 00:00:09.000\n<b>Injected</b> & more"


def caps(*texts: str) -> list[dict]:
    return [{"index": i, "text": t, "start": i * 1.0, "end": i + 1.0} for i, t in enumerate(texts)]


def srt_cues(text: str) -> list[list[str]]:
    """What an SRT reader sees: blocks separated by blank lines."""
    return [b.split("\n") for b in re.split(r"\n\s*\n", text.strip())]


def test_srt_text_cannot_add_cues_or_timings():
    out = subtitles.to_srt(caps(INJECT, "Second."))
    cues = srt_cues(out)
    assert [c[0] for c in cues] == ["1", "2"]
    assert [len(c) for c in cues] == [3, 3]  # index, timing, one text line
    assert sum("-->" in line for line in out.splitlines()) == 2
    assert "Hello." in cues[0][2] and "Injected cue" in cues[0][2]


def test_vtt_text_is_escaped_and_stays_in_its_cue():
    out = subtitles.to_vtt(caps(VTT_INJECT, "a < b & c > d"))
    assert out.startswith("WEBVTT\n\n")
    cues = srt_cues(out.removeprefix("WEBVTT\n\n"))
    assert [len(c) for c in cues] == [2, 2]  # timing, one text line
    assert sum("-->" in line for line in out.splitlines()) == 2
    assert cues[0][1] == "Hello. 00:00:01.000 --&gt; 00:00:09.000 &lt;b&gt;Injected&lt;/b&gt; &amp; more"
    assert cues[1][1] == "a &lt; b &amp; c &gt; d"


@pytest.mark.parametrize("text", ["", "\n\n", "\x00\x1b\x07", "  \t "])
def test_a_caption_with_nothing_to_show_is_left_out(text):
    srt, vtt = subtitles.to_srt(caps("One.", text, "Two.")), subtitles.to_vtt(caps("One.", text, "Two."))
    for out in (srt, vtt):
        assert "\x00" not in out and "\x1b" not in out and "\n\n\n" not in out
        assert out.count("-->") == 2
    assert [c[0] for c in srt_cues(srt)] == ["1", "2"]


def test_plain_captions_are_unchanged():
    assert subtitles.to_srt(caps("One sentence.", "Another one.")) == (
        "1\n00:00:00,000 --> 00:00:01,000\nOne sentence.\n\n2\n00:00:01,000 --> 00:00:02,000\nAnother one.\n")
    assert subtitles.to_vtt(caps("It's 5 > 3.")) == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nIt's 5 &gt; 3.\n"
