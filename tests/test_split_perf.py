"""Splitting is linear in the text for any input (the bridge splits on its event loop).

Times are process CPU time (not wall time), so other work on the machine does not count;
linearity is judged by the ratio of two sizes where a bound in seconds would be fragile."""

from __future__ import annotations

import time

import pytest

from qwen3ttsd.text.split import IncrementalSplitter, split_segments

MB = 1_000_000
SHAPES = {
    "sentences": "Hi. ",
    "letter-dots": "a.",
    "no-punctuation": "word ",
    "only-dots": ".",
    "cjk": "你好，世界。",
    "cjk-punctuation": "。",
    "long-word": "a",
    "hyphens": "a-",
    "exclamations": "!",
    "e-mail-like": "a.b-c@",
    "abbreviations": "Dr. ",
    "ellipses": "Wait... ",
    "urls": "x.y@a.bc www.q.com Hi! ",
}


def _text(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def _cpu(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


@pytest.mark.parametrize("unit", SHAPES.values(), ids=SHAPES.keys())
def test_one_megabyte_splits_in_under_a_second(unit):
    text = _text(unit, MB)
    assert _cpu(lambda: split_segments(text)) < 1.0


@pytest.mark.parametrize("unit", SHAPES.values(), ids=SHAPES.keys())
def test_one_megabyte_fed_at_once_is_linear(unit):
    def feed(size: int) -> None:
        sp = IncrementalSplitter()
        sp.feed(_text(unit, size))
        sp.flush()
    small, big = _cpu(lambda: feed(MB // 4)), _cpu(lambda: feed(MB))
    assert big < 2.5  # quadratic took 48 s for 100 KB of "Hi. "
    assert big < 4 * max(small, 0.02) * 2  # 4x the text: at most 8x the time


@pytest.mark.parametrize("unit", ["Hi. ", "a.", "。", "!", "a.b-c@", "Wait... ", "x.y@a.bc www.q.com Hi! "])
def test_fed_one_character_at_a_time_is_linear(unit):
    def feed(size: int) -> None:
        sp = IncrementalSplitter()
        for ch in _text(unit, size):
            sp.feed(ch)
        sp.flush()
    small, big = _cpu(lambda: feed(50_000)), _cpu(lambda: feed(100_000))
    assert big < 3.0
    assert big < 3 * max(small, 0.02)  # 2x the text: well under 4x the time


@pytest.mark.parametrize("unit", ["Dr. ", "Baker St. ", "I paid $5. ", "<b>x</b> ", "\x1b[31m"])
def test_normalising_and_preparing_is_linear(unit):
    from qwen3ttsd.text import prepare_segments

    small, big = (_cpu(lambda: prepare_segments(_text(unit, size), "english")) for size in (50_000, 200_000))  # noqa: B023 - called at once
    assert big < 8 * max(small, 0.02)  # 4x the text: at most 8x the time (was 10x+ for "Dr. ")
