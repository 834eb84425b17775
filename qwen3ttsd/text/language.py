"""Which of the ten Qwen3-TTS languages a text is in: script ranges first, then, for Latin
script, stop words and diacritics. Pure Python, no model files.

Returns ``(language, confidence)``; ``("auto", 0.0)`` when unsure - the model's own "auto"
mode is better than a wrong guess.
"""

from __future__ import annotations

import re
import unicodedata

LANGUAGES = ("chinese", "english", "japanese", "korean", "german", "french", "russian",
             "portuguese", "spanish", "italian")
# ISO 639-1 codes (and the common regional tags and misspellings clients send) -> the
# language names the model's ``codec_language_id`` uses. The one mapping for normaliser,
# detector, bridge and daemon.
LANG_CODES = {
    "en": "english", "zh": "chinese", "cn": "chinese", "ja": "japanese", "jp": "japanese",
    "ko": "korean", "kr": "korean", "de": "german", "fr": "french", "ru": "russian",
    "pt": "portuguese", "es": "spanish", "it": "italian",
}


def canonical_language(language: str | None) -> str:
    """'en' / 'EN' / 'en-US' / 'zh_CN' / 'English' -> 'english'; 'auto' or empty -> 'auto'.

    Anything else comes back lower-cased, for the caller to accept or reject."""
    lang = str(language or "auto").strip().lower()
    if lang in LANGUAGES or lang == "auto":
        return lang
    base = re.split(r"[-_]", lang, maxsplit=1)[0]
    return LANG_CODES.get(lang) or LANG_CODES.get(base) or lang

_STOP = {
    "english": "the and is are was were of to in that it you he she they we for on with as at this be have not "
               "but what from by or an will my your can do there their if which when how i me our has had would "
               "should could about into than then them these those its visit please".split(),
    "german": "der die das und ist nicht ich du er sie wir ihr ein eine zu mit auf für von den dem des auch "
              "sich wie aber noch nach bei wird sind hat haben werden".split(),
    "french": "le la les et est une un des du de que qui pas pour dans sur avec ce cette il elle nous vous ils "
              "sont être avoir mais ou au aux très".split(),
    "spanish": "el la los las y es una un de que en por para con no se lo del al como más pero sus le ya "
               "está son muy también hay".split(),
    "italian": "il lo la gli le e è una un di che in per con non si del della dei al come più ma sono anche "
               "questo sono molto ci".split(),
    "portuguese": "o a os as e é um uma de que em para com não se do da dos das no na como mais mas ao "
                  "está são muito também você".split(),
}
_MARKS = {
    "german": "äöüß", "french": "éèêëàâçîïôûùœ", "spanish": "ñáéíóú¿¡", "italian": "àèéìòù",
    "portuguese": "ãõçáéíóúâêô",
}
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_LINKS = re.compile(r"(?:https?://|www\.)\S+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.I)


def _script_counts(text: str) -> dict[str, int]:
    c = {"han": 0, "kana": 0, "hangul": 0, "cyrillic": 0, "latin": 0, "other": 0}
    for ch in text:
        o = ord(ch)
        if not ch.isalpha():
            continue
        if 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9F:
            c["kana"] += 1
        elif 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F:
            c["hangul"] += 1
        elif 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F:
            c["han"] += 1
        elif 0x0400 <= o <= 0x052F:
            c["cyrillic"] += 1
        elif "LATIN" in unicodedata.name(ch, ""):
            c["latin"] += 1
        else:
            c["other"] += 1
    return c


def detect_language(text: str) -> tuple[str, float]:
    if not isinstance(text, str) or not text.strip():
        return "auto", 0.0
    text = _LINKS.sub(" ", text)  # URLs and addresses say nothing about the language
    c = _script_counts(text)
    total = sum(c.values())
    if total == 0:
        return "auto", 0.0
    if c["kana"] and c["kana"] + c["han"] >= 0.5 * total:
        return "japanese", 0.95
    if c["hangul"] >= 0.5 * total:
        return "korean", 0.95
    if c["han"] >= 0.5 * total:
        return "chinese", 0.9
    if c["cyrillic"] >= 0.5 * total:
        return "russian", 0.9
    if c["latin"] < 0.5 * total:
        return "auto", 0.0
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return "auto", 0.0
    scores: dict[str, float] = {}
    lowered = text.lower()
    for lang, stops in _STOP.items():
        s = set(stops)
        scores[lang] = sum(1.0 for w in words if w in s)
        marks = _MARKS.get(lang, "")
        scores[lang] += 0.5 * sum(lowered.count(m) for m in marks)
    best = max(scores, key=lambda lang: scores[lang])
    ranked = sorted(scores.values(), reverse=True)
    if ranked[0] == 0:
        # no stop words: plain ASCII letters most likely English, but say so weakly
        ascii_only = all(ord(ch) < 128 for ch in text)
        return ("english", 0.4) if ascii_only else ("auto", 0.0)
    margin = (ranked[0] - ranked[1]) / ranked[0]
    conf = min(0.95, 0.5 + 0.5 * margin) if len(words) >= 3 else min(0.6, 0.3 + 0.5 * margin)
    return best, round(conf, 3)
