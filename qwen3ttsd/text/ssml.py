"""An SSML subset: the markup speech clients send, turned into what the engine can do.

Supported: ``<speak>`` (with ``xml:lang``), ``<p>``/``<s>`` (segment bounds), ``<break
time="500ms"|strength=...>`` (exact silence), ``<prosody rate=...>`` (speed),
``<lang xml:lang=...>`` (language), ``<say-as interpret-as=...>`` (hints for the
normaliser), ``<sub alias=...>`` (spoken alias). Any other tag is dropped and its text kept;
markup is never read aloud. Malformed SSML raises ``SSMLError`` (a 400 upstream).

Hardened: the standard library's expat parser, with any ``<!DOCTYPE``/``<!ENTITY`` refused
before parsing - without a DTD there are no entities to expand (no "billion laughs", no
external entities). Pure Python, torch- and numpy-free.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from .language import LANGUAGES, canonical_language

MAX_BREAK_S = 10.0
# all the silence one document may ask for: the pauses of a long read-aloud text, but not
# minutes of silence from a kilobyte of <break>s (a request over it is refused, not cut short:
# quietly dropping pauses would desynchronise what the caller planned)
MAX_TOTAL_BREAK_S = 60.0
MAX_DEPTH = 64  # element nesting; real SSML is a few levels deep
MAX_RATE = 10.0
BREAK_STRENGTH_S = {"none": 0.0, "x-weak": 0.1, "weak": 0.25, "medium": 0.4, "strong": 0.75, "x-strong": 1.2}
RATE_WORDS = {"x-slow": 0.6, "slow": 0.8, "medium": 1.0, "default": 1.0, "fast": 1.25, "x-fast": 1.5}
_DTD = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$", re.IGNORECASE)
_LANG_ATTR = "{http://www.w3.org/XML/1998/namespace}lang"


class SSMLError(ValueError):
    """The SSML cannot be used (message says why)."""


@dataclass
class Piece:
    """Text spoken with one language and speed; silence before it."""

    text: str
    language: str | None = None
    rate: float = 1.0
    pause_before_s: float = 0.0


@dataclass
class _State:
    language: str | None
    rate: float


@dataclass
class _Builder:
    pieces: list[Piece] = field(default_factory=list)
    pending_pause: float = 0.0
    buffer: list[str] = field(default_factory=list)
    state: _State | None = None

    def text(self, s: str | None, state: _State) -> None:
        if not s:
            return
        if self.buffer and self.state is not None and self.state != state:
            self.close()
        self.state = state
        self.buffer.append(s)

    def close(self) -> None:
        """End the current piece (a sentence/paragraph bound, a break, a change of voice)."""
        text = " ".join("".join(self.buffer).split())
        self.buffer.clear()
        if text and self.state is not None:
            self.pieces.append(Piece(text, self.state.language, self.state.rate, self.pending_pause))
            self.pending_pause = 0.0

    total_pause: float = 0.0

    def pause(self, seconds: float) -> None:
        self.close()
        before = self.pending_pause
        self.pending_pause = min(MAX_BREAK_S, self.pending_pause + seconds)
        self.total_pause += self.pending_pause - before
        if self.total_pause > MAX_TOTAL_BREAK_S:
            raise SSMLError(f"SSML asks for more than {MAX_TOTAL_BREAK_S:g} s of pauses in total")


_SSML_START = re.compile(r"\s*(?:<\?xml|<!|<speak(?=[\s/>]|\Z))")


def is_ssml(text: str) -> bool:
    """An input that starts like an XML document or with a ``<speak>`` element is SSML (and
    must then be valid); "<speakers> are loud" is plain text."""
    return _SSML_START.match(text) is not None


def parse_ssml(text: str) -> tuple[list[Piece], float]:
    """SSML document -> (pieces in order, trailing silence in seconds)."""
    if _DTD.search(text):
        raise SSMLError("SSML may not contain a DOCTYPE or entity declarations")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise SSMLError(f"malformed SSML: {e}") from None
    if _local(root.tag) != "speak":
        raise SSMLError("SSML must have <speak> as its root element")
    _check_depth(root)
    b = _Builder()
    _walk(root, _State(_language(root, None), 1.0), b)
    b.close()
    return b.pieces, b.pending_pause


def _check_depth(root: ET.Element) -> None:
    """Refuse elements nested deeper than MAX_DEPTH (the walk below recurses), iteratively."""
    stack = [(root, 1)]
    while stack:
        el, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SSMLError(f"SSML elements are nested more than {MAX_DEPTH} deep")
        stack.extend((child, depth + 1) for child in el)


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _language(el: ET.Element, inherited: str | None) -> str | None:
    lang = el.get(_LANG_ATTR) or el.get("lang")
    if not lang:
        return inherited
    code = canonical_language(lang)
    if code not in LANGUAGES and code != "auto":
        raise SSMLError(f"unsupported language {lang!r} in SSML")
    return code


BOUNDS = ("p", "s", "paragraph", "sentence")
SILENT = ("audio", "mark", "desc", "metadata", "lexicon")   # content never spoken


def _walk(el: ET.Element, state: _State, b: _Builder) -> None:
    """Speak ``el``'s content; the caller speaks its tail (the parent's text after it)."""
    tag = _local(el.tag)
    if tag == "break":
        b.pause(_break_seconds(el))
        return
    if tag in SILENT:
        return
    if tag in BOUNDS:
        b.close()
    if tag == "prosody":
        state = _State(state.language, _rate(el.get("rate"), state.rate))
    else:
        state = _State(_language(el, state.language), state.rate)
    if tag == "sub":
        b.text(el.get("alias") or el.text, state)
    elif tag == "say-as":
        b.text(_say_as(el.get("interpret-as", ""), "".join(el.itertext())), state)
    else:
        b.text(el.text, state)
        for child in el:
            _walk(child, state, b)
            b.text(child.tail, state)
    if tag in BOUNDS:
        b.close()


def _break_seconds(el: ET.Element) -> float:
    t = el.get("time")
    if t:
        m = _TIME.match(t)
        if not m:
            raise SSMLError(f"<break time={t!r}>: use e.g. 500ms or 1.5s")
        v = float(m.group(1)) / (1000.0 if m.group(2).lower() == "ms" else 1.0)
        if not math.isfinite(v):
            raise SSMLError(f"<break time={t!r}>: not a finite time")
        return min(v, MAX_BREAK_S)
    strength = (el.get("strength") or "medium").lower()
    if strength not in BREAK_STRENGTH_S:
        raise SSMLError(f"<break strength={strength!r}>: one of {sorted(BREAK_STRENGTH_S)}")
    return BREAK_STRENGTH_S[strength]


def _rate(value: str | None, current: float) -> float:
    if not value:
        return current
    v = value.strip().lower()
    if v in RATE_WORDS:
        return current * RATE_WORDS[v]
    try:
        if v.endswith("%"):
            n = float(v[:-1])
            factor = 1 + n / 100 if v[0] in "+-" else n / 100
        else:
            factor = float(v)
    except ValueError:
        raise SSMLError(f"<prosody rate={value!r}>: use x-slow..x-fast, 80%, +20% or 1.2") from None
    if not (math.isfinite(factor) and 0 < factor <= MAX_RATE):
        raise SSMLError(f"<prosody rate={value!r}>: a speed factor above 0 and at most {MAX_RATE:g}")
    return current * factor


def _say_as(kind: str, text: str) -> str:
    kind = kind.lower()
    if kind in ("characters", "spell-out", "verbatim"):
        return " ".join(c for c in text if not c.isspace())
    if kind in ("digits", "telephone"):
        return " ".join(c for c in text if c.isalnum())
    return text  # cardinal, ordinal, date, time...: the normaliser reads these forms
