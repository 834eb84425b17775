"""Plain text as people paste it: terminal colour codes, control characters and HTML-like
tags are not meant to be heard, so they are removed before the text is split and spoken.

A tag is "<" + a letter + name, optional attributes, ">" (or a comment): "<b>", "</i>",
'<a href="x">', "<br/>", "<!-- x -->". A lone "<" or ">" ("a < b", "3 <4") is kept - it is
read as written. Linear time (no pattern here can retry over a long run).
"""

from __future__ import annotations

import re

# ESC [ ... final (CSI, colours), ESC ] ... BEL or ESC \ (OSC, titles), other two-byte ESC codes
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_TAG = re.compile(r"</?[A-Za-z][\w:.-]*+(?:\s[^<>]*)?>")
_SPACES = re.compile(r"[ \t]{2,}")


def strip_markup(text: str) -> str:
    """``text`` without terminal escapes, control characters and markup tags."""
    if "\x1b" in text or "\x9b" in text:
        text = _ANSI.sub("", text)
    text = _CONTROL.sub("", text)
    if "<" in text:
        text = _SPACES.sub(" ", _TAG.sub(" ", _strip_comments(text)))
    return text


def _strip_comments(text: str) -> str:
    """Remove "<!-- ... -->" (found with str.find: a regex would rescan an unclosed one)."""
    parts, pos = [], 0
    while True:
        a = text.find("<!--", pos)
        b = text.find("-->", a + 4) if a >= 0 else -1
        if b < 0:
            break
        parts += [text[pos:a], " "]
        pos = b + 3
    return "".join(parts) + text[pos:] if parts else text
