"""The linear-time splitter gives exactly the segments the plainly written one gives
(``tests/split_reference.py``), for whole texts and for any way the text is fed: one piece,
random pieces, one character at a time."""

from __future__ import annotations

import random

import pytest

from qwen3ttsd.text import split as fast

from . import split_reference as ref

CORPUS = [
    # English: abbreviations, numbers, URLs, e-mail, quotes, ellipses
    "Hello world. How are you?",
    "Dr. Smith paid $3.50 at 10:30 a.m. today. Then he left.",
    "Visit https://example.com/a.b?x=1. Then stop.",
    "Mail a.b@c.org. Thanks! Or write to john.doe+tts@mail.example.co.uk, please.",
    "The value is 3.14. Next. We have 1,000 items. Good.",
    "Wait... what? Well... maybe. And then... nothing...",
    "He said \"Stop.\" Then left. (Really.) [Sure!] 'Yes.'",
    "Really?! Yes. No!! Why?? Fine?!?",
    "e.g. this and i.e. that. See fig. 3, vol. 2, no. 5 and pp. 10-12.",
    "Mr. and Mrs. Jones met Prof. Brown of Acme Inc. on Jan. 5. They talked.",
    "U.S. troops, the U.K. and Ph.D. students left at 5 p.m. yesterday.",
    "J. R. R. Tolkien wrote it. A. Lincoln was president.",
    "Version v1.2.3 is out; www.qwen.ai has it: see docs.python.org/3/library.",
    "Call 555-123-4567, or +1 555 123 4567; ask for ext. 12.",
    "A very long sentence with commas, clauses that go on and on, and on without ending, "
    "for a very long time indeed, until it finally stops. And a short one.",
    "Sure, let me check that for you. Your order number is 12,345. Thanks",
    "Meet at 10:30: bring the files — all of them — and a pen.",
    # German, French, Spanish, Italian, Portuguese, Russian
    "Guten Tag, wie geht es dir? Ich bin müde. Das kostet z.B. 5,50 € bzw. 6 €. Am 3. Mai.",
    "Bonjour, comment allez-vous? Je suis très fatigué. Il est 14h30. M. Dupont arrive.",
    "¿Dónde está la biblioteca? Es muy grande. ¡Qué bien! Son las 14:30.",
    "Ciao, come stai? Io sono molto stanco. Il 1° gennaio 2024 alle 14:30.",
    "Olá, como você está? Eu estou muito cansado. R$ 12,50 às 14h30.",
    "Привет, как дела? Всё хорошо. В 1999 году, 15 января. Т.е. всё.",
    # Chinese, Japanese, Korean
    "你好，世界。今天天气很好！我们走吧。共1,234人，气温-3℃；版本3.11.7。",
    "「你好。」他说。然后，他走了……",
    "こんにちは、元気ですか。東京タワーに行きました！2026年1月15日10:30に。",
    "안녕하세요, 잘 지내세요? 오늘은 날씨가 아주 좋아서 공원을 산책했습니다. 30살, 사과 3개.",
    # mixed and odd
    "...", "", "   ", "!!!", "a.b.c. d", "x@y.zz. Done.", "www.a， b。 c", "5.  Then. 6.",
    "Hi.\nNew line.\n\nNew paragraph!\tTab.", "It ends with an abbreviation etc.",
    "Dots.... four. Five.....  Six", "\"Quote.\"\" Double.\" ok", "— dash — dash —",
    "1.2. 3.4. a.m. P.M.", "No.5 and No. 5.", "ok.Next", "end.)", "x.\u3000全角スペース。",
]

FRAGMENTS = ["Dr.", "e.g.", "etc.", "Inc.", "p.m.", "The",
             "3.14", "1,000", "10:30", "a.m.", "U.S.", "Hi.", "Hi!", "Why?", "...",
             "…", "—", ",", ":", ";", "，", "。", "！", "、", "「", "」", "\"", "'", ")", "www.x.com",
             "https://a.b/c.d", "a@b.co", "x.y@z-w.io", "a-b.cd", "word", "Word", "the", "I", "A.", "x",
             "5", "-", "+", "@", ".", "..", "!?", "你好", "東京", "안녕", "Привет", "Ünïcödé", "_"]
SPACES = [" ", " ", " ", "", "\n", "  ", "\u3000"]


def _random_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randrange(1, 40)):
            parts.append(rng.choice(FRAGMENTS))
            parts.append(rng.choice(SPACES))
        out.append("".join(parts))
    return out


def _random_chars(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "aAbZ09 .,:;!?…。！？；，、：—\"')]}»」@/-+_w\n"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60))) for _ in range(count)]


TEXTS = CORPUS + _random_texts(1, 400) + _random_chars(2, 400)


def _feed(splitter, pieces: list[str]) -> list[list[str]]:
    out = [splitter.feed(p) for p in pieces]
    out.append(splitter.flush())
    return out


def _pieces(text: str, how: str, rng: random.Random) -> list[str]:
    if how == "whole":
        return [text]
    if how == "chars":
        return list(text)
    pieces, i = [], 0
    while i < len(text):
        k = rng.randrange(1, 12)
        pieces.append(text[i:i + k])
        i += k
    return pieces


@pytest.mark.parametrize("max_chars, clause_min", [(400, 80), (30, 10), (12, 4)])
def test_split_segments_matches_reference(max_chars, clause_min):
    for text in TEXTS:
        assert fast.split_segments(text, max_chars, clause_min) == ref.split_segments(text, max_chars, clause_min), text


@pytest.mark.parametrize("how", ["whole", "chars", "random"])
@pytest.mark.parametrize("sizes", [(4, 80, 400), (2, 10, 30), (1, 3, 12)])
def test_incremental_splitter_matches_reference(how, sizes):
    rng = random.Random(7)
    first, clause, max_chars = sizes
    for text in TEXTS:
        pieces = _pieces(text, how, rng)
        got = _feed(fast.IncrementalSplitter(first, clause, max_chars), pieces)
        want = _feed(ref.IncrementalSplitter(first, clause, max_chars), pieces)
        assert got == want, (text, pieces)


def test_incremental_splitter_matches_reference_on_joined_corpus():
    """Long streams: the whole corpus in one piece, in random pieces and one character at a time."""
    rng = random.Random(3)
    text = " ".join(CORPUS + _random_texts(5, 30))
    for how in ("whole", "chars", "random"):
        pieces = _pieces(text, how, rng)
        assert _feed(fast.IncrementalSplitter(), pieces) == _feed(ref.IncrementalSplitter(), pieces), how


def test_url_spans_match_the_url_pattern():
    """``_url_spans`` finds exactly what ``_URL.finditer`` finds."""
    rng = random.Random(11)
    alphabet = ["a", "B", "w", "ww", "www.", "http://", "https://", "x", "0", "_", "-", "--", ".", "..", "+", "@",
                "/", ":", " ", "co", "com", "org", "é", "ı", "K", "ſ", "é.fr", "\n", ",", "!", "你"]
    texts = CORPUS + ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30))) for _ in range(20000)]
    for text in texts:
        assert fast._url_spans(text) == [m.span() for m in fast._URL.finditer(text)], text
