"""Text normalisation: say numbers, money, dates, times, units, URLs... the way people do.

One entry point for every language; the readings live in one module per concern:
``english`` (num2words), ``chinese`` (cn2an), ``european`` (German, French, Spanish, Italian,
Portuguese, Russian) and ``cjk`` (Japanese, Korean) on the shared shapes of ``numerals``
(num2words). Languages and scripts without rules (Arabic, Thai...) pass through apart from
whitespace. ``normalize`` never fails on text: a rule that cannot handle a match leaves it
as it was. Only a non-string argument raises ``TextNormalizationError``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable

from .language import canonical_language, detect_language


class TextNormalizationError(ValueError):
    """normalize() was given something that is not text."""


_CONTROL = re.compile(r"[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]")
_SPACES = re.compile(r"\s+")
# full-width digits and signs (common in Japanese and Chinese text) read like ASCII ones
_FULLWIDTH = str.maketrans("０１２３４５６７８９％＋－．，：／", "0123456789%+-.,:/")


@lru_cache(maxsize=None)
def _normaliser(lang: str) -> Callable[[str], str] | None:
    """The reading function for a language, imported on first use (num2words, cn2an...)."""
    if lang == "english":
        from .english import normalize_english

        return normalize_english
    if lang == "chinese":
        from .chinese import normalize_chinese

        return normalize_chinese
    from .cjk import LOCALES as cjk
    from .european import LOCALES as european
    from .numerals import read_numbers

    loc = european.get(lang) or cjk.get(lang)
    return (lambda text: read_numbers(text, loc)) if loc else None


def normalize(text: str, language: str = "auto") -> str:
    """Spoken form of ``text`` for ``language`` ('english' or 'en'; detected when 'auto')."""
    if not isinstance(text, str):
        raise TextNormalizationError(f"expected text, got {type(text).__name__}")
    text = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    if not text:
        return text
    lang = canonical_language(language)
    if lang == "auto":
        lang, conf = detect_language(text)
        if conf < 0.35:
            lang = "auto"
    fn = _normaliser(lang)
    if fn is None:
        return text
    return _SPACES.sub(" ", fn(text.translate(_FULLWIDTH))).strip()
