"""Hostile or odd text (issue 21 items 8 and 15): deep SSML, non-finite numbers, unbounded
pauses, markup and terminal escapes in plain text, "<speakers>" and phone numbers."""

from __future__ import annotations

import pytest

from qwen3ttsd.text import prepare_segments, prepare_text
from qwen3ttsd.text.normalize import normalize
from qwen3ttsd.text.ssml import MAX_DEPTH, MAX_TOTAL_BREAK_S, SSMLError, is_ssml, parse_ssml


def test_deep_ssml_is_a_clear_error_not_a_recursion_error():
    doc = "<speak>" + "<p>" * 1500 + "x" + "</p>" * 1500 + "</speak>"
    with pytest.raises(SSMLError, match="nested"):
        prepare_segments(doc)
    ok = "<speak>" + "<s>" * (MAX_DEPTH - 1) + "x" + "</s>" * (MAX_DEPTH - 1) + "</speak>"
    assert [p.text for p in parse_ssml(ok)[0]] == ["x"]


@pytest.mark.parametrize("doc", [
    '<speak><prosody rate="inf">x</prosody></speak>', '<speak><prosody rate="nan">x</prosody></speak>',
    '<speak><prosody rate="1e999">x</prosody></speak>', '<speak><prosody rate="-100%">x</prosody></speak>',
    '<speak><prosody rate="0">x</prosody></speak>', '<speak><break time="infs"/>x</speak>',
    '<speak><break time="1e999ms"/>x</speak>', '<speak><break time="NaNms"/>x</speak>',
])
def test_non_finite_or_senseless_numbers_are_refused(doc):
    with pytest.raises(SSMLError):
        parse_ssml(doc)


def test_total_pause_is_capped():
    many = "<speak>" + '<break time="10s"/>a' * 50 + "</speak>"  # 1.1 KB asking for 500 s of silence
    with pytest.raises(SSMLError, match="pause"):
        parse_ssml(many)
    fine = "<speak>" + '<break time="10s"/>a' * int(MAX_TOTAL_BREAK_S // 10) + "</speak>"
    pieces, trailing = parse_ssml(fine)
    assert sum(p.pause_before_s for p in pieces) + trailing <= MAX_TOTAL_BREAK_S


@pytest.mark.parametrize("text, ssml", [
    ("<speak>Hi</speak>", True), ('<speak xml:lang="en">Hi</speak>', True), ("  <speak/>", True),
    ("<?xml version='1.0'?><speak>x</speak>", True), ("<speakers> are loud", False),
    ("<speaking> is fun", False), ("<speak-up> now", False), ("a < b", False),
])
def test_only_speak_elements_are_ssml(text, ssml):
    assert is_ssml(text) is ssml


def test_plain_text_starting_like_speak_is_spoken():
    assert prepare_text("<speakers> are loud", "english") == ["are loud"]


@pytest.mark.parametrize("raw, spoken", [
    ("\x1b[31mRed alert\x1b[0m now", "Red alert now"),
    ("Hello <b>bold</b> and <i class=\"x\">italic</i> world", "Hello bold and italic world"),
    ("a <!-- hidden --> b", "a b"),
    ("Bell\x07 and\x1b]0;title\x07 done", "Bell and done"),
    ("if a < b and c > d then", "if a < b and c > d then"),
    ("3 <4 and 5> 2", "3 <4 and 5> 2"),
])
def test_markup_and_terminal_escapes_in_plain_text_are_not_spoken(raw, spoken):
    segs, _ = prepare_segments(raw, "english", normalize=False)
    assert " ".join(s.text for s in segs) == spoken


@pytest.mark.parametrize("raw, spoken", [
    ("Call 555-1234 now", "Call five five five, one two three four now"),
    ("pages 5-10", "pages five to ten"),
    ("from 1990-1995", "from nineteen ninety to nineteen ninety-five"),
    ("Call 555-123-4567", "Call five five five, one two three, four five six seven"),
])
def test_phone_numbers_are_digits_and_ranges_stay_ranges(raw, spoken):
    assert normalize(raw, "english") == spoken


def test_english_number_words_are_right_when_threads_normalize_at_once():
    """The daemon normalizes on several threads (prompt builders, the event loop). inflect's
    engine (the number words' source until session 10) kept per-call state on itself: two
    threads at once read '1524' as 'one million five hundred twenty-four thousand', and the
    words cache kept the wrong reading for the process's life (a flaky '$five' caption)."""
    import threading

    from qwen3ttsd.text import english

    numbers = list(range(1, 6001))
    expected = {n: english.words(n) for n in numbers}
    wrong: list[tuple[int, str]] = []
    for _ in range(2):
        english.words.cache_clear()

        def say_all(k: int) -> None:
            for n in numbers[k::4] + numbers[:k:-1]:
                if english.words(n) != expected[n]:
                    wrong.append((n, english.words(n)))

        threads = [threading.Thread(target=say_all, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wrong += [(n, english.words(n)) for n in numbers if english.words(n) != expected[n]]
    assert wrong == []
