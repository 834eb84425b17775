"""Text front end: normalisation tables, language detection, splitting, fuzzing."""

from __future__ import annotations

import random

import pytest

from qwen3ttsd.text import IncrementalSplitter, prepare_text, split_segments
from qwen3ttsd.text.language import detect_language
from qwen3ttsd.text.normalize import TextNormalizationError, normalize

EN = [
    # cardinals
    ("I have 42 apples.", "I have forty-two apples."),
    ("0 errors", "zero errors"),
    ("It has 1,234,567 rows.", "It has one million two hundred thirty-four thousand five hundred sixty-seven rows."),
    ("Only 7 left", "Only seven left"),
    ("It fell to -5 today", "It fell to minus five today"),
    ("A 16 digit id 1234567890123456789", "A sixteen digit id one two three four five six seven eight nine zero "
                                          "one two three four five six seven eight nine"),
    # ordinals
    ("the 1st place", "the first place"),
    ("the 22nd time", "the twenty-second time"),
    ("his 103rd birthday", "his one hundred third birthday"),
    ("the 11th hour", "the eleventh hour"),
    # decimals
    ("pi is 3.14159", "pi is three point one four one five nine"),
    ("0.5 of it", "zero point five of it"),
    ("version 2.0 ships", "version two point zero ships"),
    # money
    ("It costs $5.", "It costs five dollars."),
    ("It costs $1.", "It costs one dollar."),
    ("Pay $5.50 now", "Pay five dollars and fifty cents now"),
    ("Pay $0.01", "Pay zero dollars and one cent"),
    ("A €20 note", "A twenty euros note"),
    ("It was £3.50", "It was three pounds and fifty pence"),
    ("¥1000 please", "one thousand yen please"),
    ("raised $2.5 million", "raised two point five million dollars"),
    ("worth $3B", "worth three billion dollars"),
    ("send 15 USD", "send fifteen dollars"),
    ("about 100 EUR", "about one hundred euros"),
    ("₹250 only", "two hundred fifty rupees only"),
    # percentages
    ("up 50%", "up fifty percent"),
    ("up 3.5 % today", "up three point five percent today"),
    ("a -2% change", "a minus two percent change"),
    # dates
    ("on 2024-01-15", "on January fifteenth, twenty twenty-four"),
    ("on 12/25/2023", "on December twenty-fifth, twenty twenty-three"),
    ("born January 5, 1999", "born January fifth, nineteen ninety-nine"),
    ("on 5 March 2005", "on the fifth of March, two thousand five"),
    ("by Dec 31", "by December thirty-first"),
    # times
    ("at 10:30", "at ten thirty"),
    ("at 10:05 am", "at ten oh five a m"),
    ("at 3pm", "at three p m"),
    ("at 7 a.m. sharp", "at seven a m sharp"),
    ("at 14:00", "at fourteen hundred"),
    ("at 9:00", "at nine o'clock"),
    # years
    ("in 1999", "in nineteen ninety-nine"),
    ("in 2005", "in two thousand five"),
    ("in 1900", "in nineteen hundred"),
    ("in 1905", "in nineteen oh five"),
    ("the 1990s", "the nineteen nineties"),
    ("since 2024", "since twenty twenty-four"),
    # phone numbers
    ("Call (555) 123-4567.", "Call five five five, one two three, four five six seven."),
    ("Call 555-123-4567", "Call five five five, one two three, four five six seven"),
    ("Call +1 555 123 4567", "Call plus one, five five five, one two three, four five six seven"),
    # URLs and emails
    ("see https://example.com/docs", "see example dot com slash docs"),
    ("see www.qwen.ai", "see qwen dot ai"),
    ("mail john.doe@example.com now", "mail john dot doe at example dot com now"),
    # units
    ("run 5 km", "run five kilometers"),
    ("1 km left", "one kilometer left"),
    ("weighs 10kg", "weighs ten kilograms"),
    ("at 60 mph", "at sixty miles per hour"),
    ("it is 20°C", "it is twenty degrees Celsius"),
    ("a 16 GB card", "a sixteen gigabytes card"),
    ("50 ms latency", "fifty milliseconds latency"),
    # abbreviations
    ("Dr. Smith is here", "Doctor Smith is here"),
    ("Mr. and Mrs. Jones", "Mister and Missus Jones"),
    ("apples, pears, etc.", "apples, pears, et cetera."),
    ("fruit, e.g. apples", "fruit, for example apples"),
    ("cats vs. dogs", "cats versus dogs"),
    ("221 Baker St. today", "two hundred twenty-one Baker Street today"),
    ("in St. Louis", "in Saint Louis"),
    # symbols
    ("salt & pepper", "salt and pepper"),
    ("a 3 x 4 grid", "a three by four grid"),
]


@pytest.mark.parametrize("raw, spoken", EN)
def test_english(raw, spoken):
    assert normalize(raw, "english") == spoken


ZH = [
    ("我有3个苹果", "我有三个苹果"),
    ("价格是15.5元", "价格是十五点五元"),
    ("今天是2024年1月15日", "今天是二零二四年一月十五日"),
    ("增长了50%", "增长了百分之五十"),
    ("一共¥100", "一共一百元"),
    ("花了$20", "花了二十美元"),
    ("电话13812345678", "电话一三八一二三四五六七八"),
    ("温度-2.5度", "温度负二点五度"),
    ("会议在10:30开始", "会议在十点三十分开始"),
    ("网址https://qwen.ai不变", "网址qwen dot ai不变"),
]


@pytest.mark.parametrize("raw, spoken", ZH)
def test_chinese(raw, spoken):
    assert normalize(raw, "chinese") == spoken


@pytest.mark.parametrize("raw", ["مرحبا 123 بك", "สวัสดี 5"])
def test_other_languages_and_scripts_left_alone(raw):
    assert normalize(raw) == raw


@pytest.mark.parametrize("raw, spoken", [("Привет 123", "Привет сто двадцать три"),
                                         ("Der Preis ist 5 Euro.", "Der Preis ist fünf Euro."),
                                         ("Le prix est de 5 euros.", "Le prix est de cinq euros.")])
def test_detected_languages_read_their_numbers(raw, spoken):
    assert normalize(raw) == spoken


def test_auto_detects_before_normalising():
    assert normalize("I paid $5 for 2 apples.") == "I paid five dollars for two apples."
    assert normalize("我有3个苹果") == "我有三个苹果"


@pytest.mark.parametrize("text, lang", [
    ("Hello, how are you doing today?", "english"),
    ("Guten Tag, wie geht es dir? Ich bin müde.", "german"),
    ("Bonjour, comment allez-vous? Je suis très fatigué.", "french"),
    ("¿Dónde está la biblioteca? Es muy grande.", "spanish"),
    ("Ciao, come stai? Io sono molto stanco.", "italian"),
    ("Olá, como você está? Eu estou muito cansado.", "portuguese"),
    ("こんにちは、元気ですか。", "japanese"),
    ("東京タワーに行きました", "japanese"),
    ("안녕하세요, 잘 지내세요?", "korean"),
    ("你好，今天天气很好。", "chinese"),
    ("Привет, как дела?", "russian"),
    ("Visit https://www.example.com or mail a@b.com please", "english"),
])
def test_language_detection(text, lang):
    got, conf = detect_language(text)
    assert got == lang and conf >= 0.5


@pytest.mark.parametrize("text", ["", "   ", "12345", "!!!", "مرحبا بك", "ok"])
def test_language_detection_unsure(text):
    got, conf = detect_language(text)
    assert conf < 0.8


# --- splitting ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, segments", [
    ("Hello world. How are you?", ["Hello world.", "How are you?"]),
    ("Dr. Smith paid $3.50 at 10:30 a.m. today.", ["Dr. Smith paid $3.50 at 10:30 a.m. today."]),
    ("Visit https://example.com/a.b?x=1. Then stop.", ["Visit https://example.com/a.b?x=1.", "Then stop."]),
    ("Mail a.b@c.org. Thanks!", ["Mail a.b@c.org.", "Thanks!"]),
    ("The value is 3.14. Next.", ["The value is 3.14.", "Next."]),
    ("We have 1,000 items. Good.", ["We have 1,000 items. Good."][0:0] + ["We have 1,000 items.", "Good."]),
    ("Wait... what?", ["Wait... what?"]),
    ("He said \"Stop.\" Then left.", ["He said \"Stop.\"", "Then left."]),
    ("Really?! Yes.", ["Really?!", "Yes."]),
    ("你好，世界。今天天气很好！我们走吧。", ["你好，世界。", "今天天气很好！", "我们走吧。"]),
    ("e.g. this and i.e. that.", ["e.g. this and i.e. that."]),
    ("...", []),
])
def test_split_segments(text, segments):
    assert split_segments(text) == segments


def test_split_long_sentence_at_clauses_and_spaces():
    text = "A very long sentence with commas, clauses that go on and on, and on without ending, " \
           "for a very long time indeed, until it finally stops."
    segs = split_segments(text)
    assert len(segs) >= 2 and all(s.strip() for s in segs)
    assert " ".join(segs) == text
    giant = "word " * 300
    assert all(len(s) <= 400 for s in split_segments(giant))


def test_incremental_splitter_waits_for_certain_boundaries():
    sp = IncrementalSplitter()
    out = []
    for ch in "Hi there, Dr. Smith. I see you paid 3.5 dollars. Bye":
        out += sp.feed(ch)
    assert out == ["Hi there,", "Dr. Smith.", "I see you paid 3.5 dollars."]
    assert sp.flush() == ["Bye"]


def test_incremental_splitter_first_clause_starts_speech():
    sp = IncrementalSplitter()
    assert sp.feed("Sure") == []
    assert sp.feed(", let me check") == ["Sure,"]
    assert sp.feed(" that for you. Your order") == ["let me check that for you."]
    assert sp.feed(" number is 12,345.") == []  # "12,345." might continue: wait
    assert sp.feed(" Thanks") == ["Your order number is 12,345."]


def test_prepare_text_normalises_then_splits():
    assert prepare_text("I paid $5. Then 2 more.", "english") == ["I paid five dollars.", "Then two more."]


# --- fuzzing ------------------------------------------------------------------------------


def test_fuzz_normalize_only_raises_its_own_error():
    rng = random.Random(1234)
    alphabet = "0123456789.,:;-+$€£¥%°/@#&()[]? abcxyzABCXYZ\n\t\x00\x07你好こんにちは안녕Привет" + "".join(
        chr(c) for c in (0x202E, 0xFFFF, 0x1F600, 0xD7FF))
    for _ in range(1500):
        n = rng.randrange(0, 60)
        s = "".join(rng.choice(alphabet) for _ in range(n))
        for lang in ("auto", "english", "chinese", "german", "klingon"):
            out = normalize(s, lang)
            assert isinstance(out, str)
            split_segments(out)
    for bad in (None, 5, b"bytes", ["x"]):
        with pytest.raises(TextNormalizationError):
            normalize(bad)  # type: ignore[arg-type]


def test_fuzz_numbers_structured():
    rng = random.Random(99)
    for _ in range(500):
        parts = [rng.choice(["$", "€", "", "-", "#"]), str(rng.randrange(0, 10 ** rng.randrange(1, 20))),
                 rng.choice(["", ".", ".5", ",000", "%", "th", " km", "st", ":30", " pm", "s"])]
        s = f"Value {''.join(parts)} here."
        out = normalize(s, "english")
        assert out.startswith("Value") and out.endswith(".")


# --- an abbreviation that ends a sentence (issue 20 item 11) ----------------------------------


@pytest.mark.parametrize("text, segments", [
    ("I work at Acme Inc. The office is big.", ["I work at Acme Inc.", "The office is big."]),
    ("We sell apples, pears etc. Next week we sell plums.", ["We sell apples, pears etc.", "Next week we sell plums."]),
    ("The shop opens at 9 a.m. Come early.", ["The shop opens at 9 a.m.", "Come early."]),
    ("Dr. Smith is here. Mr. Jones too.", ["Dr. Smith is here.", "Mr. Jones too."]),
    ("fruit, e.g. this and i.e. that.", ["fruit, e.g. this and i.e. that."]),
    ("Acme Inc. is big.", ["Acme Inc. is big."]),
    ("J. R. R. Tolkien wrote it.", ["J. R. R. Tolkien wrote it."]),
])
def test_abbreviation_ending_a_sentence_keeps_the_boundary(text, segments):
    assert split_segments(text) == segments


def test_abbreviation_ending_a_sentence_keeps_its_full_stop_and_pause():
    assert prepare_text("I work at Acme Inc. The office is big.", "english") == [
        "I work at Acme Incorporated.", "The office is big."]
    sp = IncrementalSplitter()
    out = []
    for ch in "I work at Acme Inc. The office is big. Dr. Smith":
        out += sp.feed(ch)
    assert out == ["I work at Acme Inc.", "The office is big."]
    assert sp.flush() == ["Dr. Smith"]
