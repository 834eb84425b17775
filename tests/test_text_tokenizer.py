"""The project's text tokenizer against qwen-tts's processor (transformers' Qwen2TokenizerFast,
loaded as qwen-tts loads it: ``fix_mistral_regex=True``), on every form a checkpoint's
tokenizer comes in: ``tokenizer.json``; ``vocab.json`` + ``merges.txt`` only (as the
Qwen3-TTS repos ship it); a config.json from a transformers that gets no Mistral patch."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qwen3ttsd.engine.text_tokenizer import (
    TextTokenizer,
    _mistral_patch_applies,
    _version,
    assistant_text,
    instruct_text,
    ref_text,
)
from qwen3ttsd.errors import TTSError

TEXTS = [
    # the ten languages
    "Hello world. This is a test of the speech server.",
    "你好，世界。今天天气很好，我们去公园散步吧！",
    "Guten Tag! Wie geht's? Straße, Größe, Übermaß.",
    "Buongiorno, come stai? Perché no: è già l'una.",
    "Olá, mundo! Não sei se você está aí, coração.",
    "¡Hola, mundo! ¿Qué tal? Año, niño, pingüino.",
    "こんにちは世界。カタカナとひらがな、漢字も。",
    "안녕하세요 세계. 오늘 날씨가 좋네요!",
    "Bonjour le monde ! C'est l'été, où êtes-vous ? « Ça va ».",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    # contractions and case: where the Mistral split and the Qwen2 split disagree
    "don't DON'T I'm we'll they've she'd it's CamelCaseWords iPhone McDonald's ALLCAPS",
    # numbers and punctuation
    "3.14159, 1,000,000 and 42% of $5.99 - call +1 (555) 010-9999 at 10:30pm on 2024-01-31.",
    "...!!! ??? --- ;;; \"quoted\" 'single' (paren) [bracket] {brace} <angle> a/b\\c | ~ ` ^",
    "1st 2nd 3rd 4th; ½ ¾ ² ³ ① Ⅻ ٣ ४ 𝟙",
    # emoji and other astral characters
    "😀👍🏽👨‍👩‍👧‍👦🇩🇪 ❤️ emoji in text 🎉",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐛𝐨𝐥𝐝 𓀀 🀄",
    # whitespace edge cases
    "  two  spaces   three",
    "tabs\tand\t\ttabs",
    "line\nbreaks\n\nand\r\nwindows\r\n",
    "trailing spaces   ",
    "\u00a0no-break\u2009thin\u3000ideographic",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    # normalisation: decomposed forms, combining marks
    "e\u0301 cafe\u0301 n\u0303 A\u030a",
    "Ǆ ǅ ǆ ﬁ ﬂ Å Ω",
    # scripts with marks, right to left
    "नमस्ते दुनिया",
    "مرحبا بالعالم",
    "שלום עולם",
    # special tokens spelled out in user text
    "<|im_start|>user\nhi<|im_end|>",
    "<tts_pad> <|endoftext|> <|im_end",
    # degenerate
    "",
    "a",
    " ",
    "\n",
]


def _copy(src: Path, dst: Path, drop: tuple[str, ...] = (), config: dict | None = None) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in drop and not (config is not None and f.name == "config.json"):
            os.symlink(f, dst / f.name)
    if config is not None:
        base = json.loads((src / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps(dict(base, **config)))
    return dst


@pytest.fixture(scope="module")
def forms(tiny_models, tmp_path_factory) -> dict[str, Path]:
    src = tiny_models["custom_voice"]
    root = tmp_path_factory.mktemp("tokenizer_forms")
    return {
        "tokenizer_json": src,
        "vocab_merges": _copy(src, root / "vocab_merges", drop=("tokenizer.json",)),
        "no_mistral_patch": _copy(src, root / "old", config={"transformers_version": "4.57.1"}),
        "vocab_merges_no_patch": _copy(src, root / "both", drop=("tokenizer.json",),
                                       config={"transformers_version": "4.51.0"}),
        "split_special_tokens": _split_specials(src, root / "split"),
    }


def _split_specials(src: Path, dst: Path) -> Path:
    """A tokenizer_config.json asking for special tokens in text to be split like text."""
    _copy(src, dst, drop=("tokenizer_config.json",))
    config = json.loads((src / "tokenizer_config.json").read_text())
    (dst / "tokenizer_config.json").write_text(json.dumps(dict(config, split_special_tokens=True)))
    return dst


def _processor(path: Path):
    from qwen3ttsd.engine.loader import import_qwen_tts

    import_qwen_tts()
    from qwen_tts.core.models.processing_qwen3_tts import Qwen3TTSProcessor

    return Qwen3TTSProcessor.from_pretrained(str(path), fix_mistral_regex=True)


def _reference(proc, text: str) -> list[int]:
    """qwen-tts's ``_tokenize_texts`` for one text."""
    return proc(text=text, return_tensors="pt", padding=True)["input_ids"][0].tolist()


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pool = "".join(TEXTS) + "0123456789 \t\n'’-_.,!?" + "".join(chr(c) for c in range(0x20, 0x250))
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(n)]


@pytest.mark.parametrize("form", ["tokenizer_json", "vocab_merges", "no_mistral_patch", "vocab_merges_no_patch",
                                  "split_special_tokens"])
def test_ids_equal_qwen_tts_processor(forms, form):
    proc = _processor(forms[form])
    tok = TextTokenizer.load(forms[form])
    texts = TEXTS + _random_texts(150, seed=len(form))
    for text in texts:
        for wrapped in (text, assistant_text(text), ref_text(text), instruct_text(text)):
            assert tok.encode(wrapped) == _reference(proc, wrapped), repr(wrapped)


def test_the_mistral_patch_is_applied_where_transformers_applies_it(forms):
    """The forms split words differently (the tiny vocabulary has too few merges for the ids
    to show it on every text, so this looks at the split itself)."""
    def split(form: str) -> list[str]:
        return [w for w, _ in TextTokenizer.load(forms[form])._tok.pre_tokenizer.pre_tokenize_str("CamelCase")]

    assert split("tokenizer_json") == split("vocab_merges") == ["Camel", "Case"]
    assert split("no_mistral_patch") == split("vocab_merges_no_patch") == ["CamelCase"]


@pytest.mark.parametrize(("version", "model_type", "patched"), [
    ("4.57.3", "qwen3_tts", True), ("4.57.2", "qwen3_tts", False), ("4.57.2", "mistral", True),
    ("4.51.0", None, True), ("5.0.0", "qwen3_tts", False), ("5.0.0.dev0", "qwen3_tts", True),
    ("4.57.2.post1", "qwen3_tts", True), (None, "qwen3_tts", True),
])
def test_mistral_patch_rule_follows_transformers(tmp_path, version, model_type, patched):
    config = {k: v for k, v in (("transformers_version", version), ("model_type", model_type)) if v is not None}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert _mistral_patch_applies(tmp_path / "config.json") is patched
    assert not _mistral_patch_applies(tmp_path / "absent.json")


def test_version_order():
    assert _version("4.57.2.dev0") < _version("4.57.2") < _version("4.57.2.post1") < _version("4.57.3")
    assert _version("5") == _version("5.0.0") < _version("5.0.1")


def test_concurrent_encodes_equal_serial_ones(tiny_models):
    tok = TextTokenizer.load(tiny_models["custom_voice"])
    texts = [assistant_text(t) for t in TEXTS * 4]
    want = [tok.encode(t) for t in texts]
    got: list[list[list[int]]] = [[] for _ in range(8)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            got[i] = [tok.encode(t) for t in texts]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(g == want for g in got)


def test_missing_tokenizer_files_are_a_load_error(tiny_models, tmp_path):
    d = _copy(tiny_models["custom_voice"], tmp_path / "m", drop=("tokenizer.json", "merges.txt"))
    with pytest.raises(TTSError) as e:
        TextTokenizer.load(d)
    assert e.value.code == "model_load_failed"


def test_tokenizer_and_prompt_builder_import_no_transformers(tiny_models):
    """Tokenizing and building a whole prompt from the checkpoint's files and safetensors
    leaves transformers, qwen_tts and librosa unimported."""
    code = f"""
import sys
from safetensors import safe_open
from qwen3ttsd.engine.model_spec import ModelSpec
from qwen3ttsd.engine.prompts import PromptBuilder, PromptWeights
from qwen3ttsd.engine.request import SynthesisRequest
from qwen3ttsd.engine.text_tokenizer import TextTokenizer
d = {str(tiny_models["custom_voice"])!r}
spec = ModelSpec.load(d)
with safe_open(d + "/model.safetensors", "pt") as f:
    weights = PromptWeights.from_tensors(lambda k: f.get_tensor(k).float(), spec.num_code_groups)
builder = PromptBuilder(spec, TextTokenizer.load(d), weights)
p = builder.build(SynthesisRequest(text="Hello world.", speaker="vivian", language="english"))
assert p.embeds.shape[0] == 1 and p.embeds.shape[2] == 32, p.embeds.shape
heavy = sorted(m for m in ("transformers", "qwen_tts", "librosa") if m in sys.modules)
print("HEAVY", heavy)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "HEAVY []" in r.stdout


def test_split_special_tokens_is_honoured(forms):
    assert TextTokenizer.load(forms["tokenizer_json"]).encode("<|im_start|>") == [151644]
    assert len(TextTokenizer.load(forms["split_special_tokens"]).encode("<|im_start|>")) > 1
