"""The text splitter as it was before it became linear-time: a slow, plainly written oracle.

``tests/test_split_equivalence.py`` checks that ``qwen3ttsd.text.split`` gives the same
segments as this one for any text and any way of feeding it. Quadratic on long input: use
it on short texts only. Kept in step with the real splitter's intended behaviour changes
(each marked ``# behaviour:``)."""

from __future__ import annotations

import re

ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "e.g", "i.e",
    "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec", "no", "nos", "vol", "fig", "approx", "dept", "est", "gen", "gov",
    "col", "lt", "sgt", "capt", "cmdr", "rev", "hon", "u.s", "u.k", "a.m", "p.m", "ph.d",
    "mon", "tue", "wed", "thu", "fri", "sat", "sun", "ave", "blvd", "rd", "min", "max",
    "z.b", "bzw", "usw", "ca", "nr", "av", "cf", "al", "viz",
}
SENTENCE_FINAL = {"inc", "ltd", "corp", "co", "etc", "usw", "a.m", "p.m"}
SENTENCE_END = ".!?。！？；;…"
CJK_END = "。！？；"
CLAUSE = ",，、:：—"
_URL = re.compile(r"(?:https?://|www\.)\S+|\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b|\b[\w-]+(?:\.[a-z]{2,}){1,3}(?:/\S*)?",
                  re.IGNORECASE)
_CLOSERS = "\"'”’)]}»」』"


def _protected_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _URL.finditer(text)]


def _inside(spans: list[tuple[int, int]], i: int) -> bool:
    return any(a <= i < b - 1 for a, b in spans)


def _is_boundary(text: str, i: int, spans: list[tuple[int, int]], final: bool) -> int | None:
    """If a segment may end after text[i], return the split index (after closers); else None.

    Returns None also when the decision needs characters that have not arrived yet
    (only matters when ``final`` is False).
    """
    c = text[i]
    if _inside(spans, i):
        return None
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if c in CJK_END:
        j = i + 1
        while j < len(text) and text[j] in _CLOSERS:
            j += 1
        return j
    if c not in SENTENCE_END:
        return None
    if not nxt:
        return len(text) if final else None
    if c == ".":
        prev = text[i - 1] if i > 0 else ""
        if prev.isdigit() and nxt.isdigit():
            return None  # 3.14
        if nxt == ".":
            return None  # inside an ellipsis: decide at its last dot
        if i > 0 and text[i - 1] == ".":
            # end of an ellipsis: a sentence ends only if a capital follows ("Wait... what?")
            rest = text[i + 1:].lstrip()
            if not rest:
                return len(text) if final else None
            if not (rest[0].isupper() or not rest[0].isalpha()):
                return None
        m = re.search(r"([A-Za-z][A-Za-z.]*)$", text[:i])
        if m:
            word = m.group(1).lower().rstrip(".")
            if word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                # behaviour: an abbreviation that ends the sentence keeps the boundary (issue 20)
                rest = text[i + 1:].lstrip()
                if word in SENTENCE_FINAL and nxt.isspace():
                    if not rest:
                        return len(text) if final else None
                    if rest[0].isupper():
                        return i + 1
                return None  # Dr. / U.S. / initials
    j = i + 1
    while j < len(text) and (text[j] in _CLOSERS or text[j] in "!?"):
        j += 1
    if j >= len(text):
        return len(text) if final else None
    if not text[j].isspace():
        return None  # "e.g.x", "3.5", "v1.2"
    return j


def _find_boundaries(text: str, final: bool, clause_min: int) -> list[int]:
    spans = _protected_spans(text)
    cuts = []
    last = 0
    for i in range(len(text)):
        b = _is_boundary(text, i, spans, final)
        if b is None and text[i] in CLAUSE and i - last >= clause_min and not _inside(spans, i):
            prev, nxt = text[i - 1: i], text[i + 1: i + 2]
            if text[i] in ",:" and prev.isdigit() and nxt.isdigit():
                continue  # 1,000 / 10:30
            if nxt == "" and not final:
                continue
            if text[i] in ",:—" and nxt and not nxt.isspace():
                continue
            b = i + 1
        if b is not None and b > last:
            cuts.append(b)
            last = b
    return cuts


def split_segments(text: str, max_chars: int = 400, clause_min: int = 80) -> list[str]:
    """Whole text -> segments. Clauses split only sentences longer than ``clause_min``;
    anything still above ``max_chars`` is cut at the last space before the limit."""
    text = text.strip()
    if not text:
        return []
    cuts = _find_boundaries(text, True, clause_min)
    out: list[str] = []
    last = 0
    for c in cuts + [len(text)]:
        seg = text[last:c].strip()
        last = c
        while len(seg) > max_chars:
            k = seg.rfind(" ", 0, max_chars)
            k = k if k > max_chars // 2 else max_chars
            out.append(seg[:k].strip())
            seg = seg[k:].strip()
        if seg:
            out.append(seg)
    return [s for s in out if any(ch.isalnum() for ch in s)] or ([text] if any(ch.isalnum() for ch in text) else [])


class IncrementalSplitter:
    """Feed text deltas; get back segments as soon as their end is certain.

    ``first_clause_min`` is small so a phone call's first audio starts at the first clause
    boundary; later segments prefer whole sentences.
    """

    def __init__(self, first_clause_min: int = 4, clause_min: int = 80, max_chars: int = 400) -> None:
        self.buf = ""
        self.first_clause_min = first_clause_min
        self.clause_min = clause_min
        self.max_chars = max_chars
        self.emitted = 0

    def feed(self, delta: str) -> list[str]:
        self.buf += delta
        cmin = self.first_clause_min if self.emitted == 0 else self.clause_min
        cuts = _find_boundaries(self.buf, False, cmin)
        out = []
        if cuts:
            head, self.buf = self.buf[: cuts[-1]], self.buf[cuts[-1]:]
            out = split_segments(head, self.max_chars, cmin) if len(cuts) > 1 or len(head) > self.max_chars \
                else ([head.strip()] if head.strip() else [])
        elif len(self.buf) > self.max_chars:
            k = self.buf.rfind(" ", 0, self.max_chars)
            k = k if k > 0 else self.max_chars
            out, self.buf = [self.buf[:k].strip()], self.buf[k:]
        out = [s for s in out if any(ch.isalnum() for ch in s)]
        self.emitted += len(out)
        return out

    def flush(self) -> list[str]:
        rest, self.buf = self.buf, ""
        out = split_segments(rest, self.max_chars, self.clause_min)
        self.emitted += len(out)
        return out
