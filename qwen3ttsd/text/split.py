"""Splitting text into speakable segments, for whole texts and for streamed LLM deltas.

A segment is what one model generation speaks. Sentence ends split; long sentences also
split at clause punctuation so the first audio of a phone call does not wait for a long
sentence. Never split inside a number (3.14, 1,000), an abbreviation (Dr., e.g., U.S.), a
URL, an e-mail address, a time (10:30) or an ellipsis that continues the sentence.

``IncrementalSplitter`` buffers deltas and releases a segment only once the boundary is
certain - the characters after it have arrived - so "Dr." followed later by " Smith" is
not cut.

Linear time for any input and any way it is fed (the splitter runs on the bridge's event
loop): only punctuation that can end a segment is looked at (found by one regular
expression), URLs are found without retrying at every character (``_url_spans``), and a
streamed buffer is looked at again only from where the last look had to wait for more text.
``tests/split_reference.py`` is the plainly written, quadratic original this must match.
"""

from __future__ import annotations

import re

from ..errors import TTSError

ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "e.g", "i.e",
    "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec", "no", "nos", "vol", "fig", "approx", "dept", "est", "gen", "gov",
    "col", "lt", "sgt", "capt", "cmdr", "rev", "hon", "u.s", "u.k", "a.m", "p.m", "ph.d",
    "mon", "tue", "wed", "thu", "fri", "sat", "sun", "ave", "blvd", "rd", "min", "max",
    "z.b", "bzw", "usw", "ca", "nr", "av", "cf", "al", "viz",
}
# abbreviations that also end sentences: before a capital ("Acme Inc. The office"), the full
# stop is the sentence's too; titles and "e.g." never end one ("Dr. Smith", "e.g. This")
SENTENCE_FINAL = {"inc", "ltd", "corp", "co", "etc", "usw", "a.m", "p.m"}
SENTENCE_END = ".!?。！？；;…"
CJK_END = "。！？；"
CLAUSE = ",，、:：—"
_CLOSERS = "\"'”’)]}»」』"
# What counts as a URL or an e-mail address (no boundary inside one). ``_url_spans`` finds
# exactly this pattern's ``finditer`` matches, in linear time (the pattern itself retries at
# every character of a long word: quadratic).
_URL = re.compile(r"(?:https?://|www\.)\S+|\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b|\b[\w-]+(?:\.[a-z]{2,}){1,3}(?:/\S*)?",
                  re.IGNORECASE)


# --- URLs and e-mail addresses ----------------------------------------------------------------
# _URL's three alternatives, tried in its order at each position: A "http://...", "www...."
# (to the next space); B an e-mail address; C a domain (with an optional path). B and C start
# at a word boundary inside a run of word characters; each run is examined once.

_A = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_B_RUN = re.compile(r"[\w.+-]*")                                  # B's local part, from a position
_B_AT = re.compile(r"(?<![\w.+-])[\w.+-]++(?=@)")                  # a whole local part before an '@'
_DOMAIN = re.compile(r"[\w-]++(?:\.[\w-]++)*+")                    # labels joined by single dots
_C_RUN = re.compile(r"[\w-]*")
_C_DOT = re.compile(r"(?<![\w-])[\w-]++\.(?=[a-z]{2})", re.IGNORECASE)   # "name." before 2 letters
_TWO_LETTERS = re.compile(r"[a-z]{2}", re.IGNORECASE)
_LETTERS = re.compile(r"[a-z]*", re.IGNORECASE)
_NON_SPACE = re.compile(r"\S*")
_WORD_BOUNDARY = re.compile(r"\b")
_Span = tuple[int, int]


def _run_end(pattern: re.Pattern[str], text: str, pos: int, endpos: int | None = None) -> int:
    """End of ``pattern`` (a run that may be empty, so it always matches) at ``pos``."""
    m = pattern.match(text, pos) if endpos is None else pattern.match(text, pos, endpos)
    assert m is not None
    return m.end()


def _next_a(text: str, p: int) -> _Span | None:
    m = _A.search(text, p)
    return m.span() if m else None


def _first_boundary(text: str, lo: int, hi: int) -> int | None:
    """The first position in [lo, hi) where \\b holds."""
    m = _WORD_BOUNDARY.search(text, lo, hi)
    return m.start() if m and m.start() < hi else None


def _email_end(text: str, at: int) -> int | None:
    """Where B's domain part after the '@' at ``at`` ends: the longest run of dotted labels
    ending at a word boundary, shortened label by label (the regex's backtracking)."""
    s = at + 1
    m = _DOMAIN.match(text, s)
    if not m:
        return None
    hi = m.end()
    while True:
        dot = text.rfind(".", s, hi)
        if dot < 0:
            return None  # only the first label is left: "(\.[\w-]+)+" needs one more
        if text[hi - 1] != "-":
            return hi  # ends in a word character, and a dot or a non-word character follows
        k = dot + 1 + len(text[dot + 1:hi].rstrip("-"))
        if k > dot + 1:
            return k  # the boundary between the label's last word character and its "-"s
        hi = dot  # a label of "-" only has no boundary in it


def _next_b(text: str, p: int) -> _Span | None:
    """The first e-mail address starting at or after ``p``."""
    e = _run_end(_B_RUN, text, p)
    lo, at = p, (e if text.startswith("@", e) else -1)
    pos = e
    while True:
        if at < 0:
            m = _B_AT.search(text, pos)
            if not m:
                return None
            lo, at = m.span()
        x = _first_boundary(text, lo, at) if at > lo else None
        if x is not None:
            end = _email_end(text, at)
            if end is not None:
                return x, end
        pos, at = at + 1, -1


def _domain_end(text: str, dot: int) -> int:
    """Where C ends: up to three ".letters" groups from ``dot``, then an optional path."""
    k = dot
    for _ in range(3):
        if not text.startswith(".", k):
            break
        e = _run_end(_LETTERS, text, k + 1)
        if e - k - 1 < 2:
            break
        k = e
    if text.startswith("/", k):
        k = _run_end(_NON_SPACE, text, k + 1)
    return k


def _next_c(text: str, p: int) -> _Span | None:
    """The first domain ("qwen.ai", "docs.python.org/3") starting at or after ``p``."""
    e = _run_end(_C_RUN, text, p)
    lo, dot = p, (e if e > p and text.startswith(".", e) and _TWO_LETTERS.match(text, e + 1) else -1)
    pos = e
    while True:
        if dot < 0:
            m = _C_DOT.search(text, pos)
            if not m:
                return None
            lo, dot = m.start(), m.end() - 1
        x = _first_boundary(text, lo, dot)
        if x is not None:
            return x, _domain_end(text, dot)
        pos, dot = dot + 1, -1


def _url_spans(text: str, start: int = 0) -> list[_Span]:
    """``[m.span() for m in _URL.finditer(text, start)]``, in linear time.

    Each alternative's next match is remembered until the scan passes its start (no match of
    that alternative starts in between). ``start`` must begin a word (follow a space)."""
    spans: list[_Span] = []
    nexts: list[_Span | None] = [None, None, None]
    valid_from = [-1, -1, -1]  # nexts[k] is the first match at or after any p >= valid_from[k]
    finders = (_next_a, _next_b, _next_c)
    p, n = start, len(text)
    while p < n:
        best: _Span | None = None
        for k in range(3):
            cand = nexts[k]
            if valid_from[k] < 0 or (cand is not None and cand[0] < p):
                cand = nexts[k] = finders[k](text, p)
                valid_from[k] = p
            if cand is not None and (best is None or cand[0] < best[0]):
                best = cand  # ties go to the earlier alternative, as in the regex
        if best is None:
            break
        spans.append(best)
        p = best[1]
    return spans


# --- boundaries --------------------------------------------------------------------------------

# punctuation that can end a segment: sentence ends followed by a closer, a space or the end;
# CJK ends and clause marks anywhere; ASCII clause marks before a space or the end
_CANDIDATE = re.compile(r"[.!?;…](?=[\s\"'”’)\]}»」』!?]|\Z)|[。！？；，、：]|[,:—](?=\s|\Z)")
_CLOSE_RUN = re.compile(r"[\"'”’)\]}»」』!?]*")
_CJK_CLOSE_RUN = re.compile(r"[\"'”’)\]}»」』]*")
_SPACE_RUN = re.compile(r"\s*")
_TOKEN_START = re.compile(r"\s(?=\S*\Z)")
_ALNUM = re.compile(r"[^\W_]")
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WAIT = -1  # the decision needs text that has not arrived yet
_UNDECIDED = -2
_CLOSERS_EXCLAIM = _CLOSERS + "!?"


def _abbreviation_before(text: str, i: int) -> str | None:
    """The word before the '.' at ``i`` if it is an abbreviation or an initial ("dr", "u.s", "j")."""
    if i > 0 and text[i - 1] == "\n":
        i -= 1  # as ``re.search("...$")`` did: "$" also matches before a final newline
    k, first = i, -1
    while k > 0:
        ch = text[k - 1]
        if ch in _ASCII_LETTERS:
            first = k - 1
        elif ch != ".":
            break
        k -= 1
    if first < 0:
        return None
    word = text[first:i].lower().rstrip(".")
    return word if word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()) else None


class _Scan:
    """One left-to-right look for segment ends over ``text`` from ``start``: ``cuts`` (split
    indices) and ``waiting`` (the first position after the last cut whose reading needs text
    that has not arrived; None when final or when nothing waits). One pass, written flat: it
    runs for every delta of a stream."""

    def __init__(self, text: str, final: bool, clause_min: int, start: int, token_hint: int) -> None:
        self.token = token_hint   # a word start at or before ``start`` (exact once URLs were looked for)
        self.cuts: list[int] = []
        self.waiting: int | None = None
        spans: list[_Span] | None = None  # found on first need: most deltas end no segment
        k = n_spans = 0
        n = len(text)
        end = n if final else _WAIT
        run_lo = run_hi = -1  # the last closer run measured: every char in it ends at run_hi
        cuts = self.cuts
        last = 0
        for m in _CANDIDATE.finditer(text, start):
            i = m.start()
            c = text[i]
            b: int | None = None
            if c in CJK_END:
                b = i + 1
                if b < n and text[b] in _CLOSERS:
                    b = _run_end(_CJK_CLOSE_RUN, text, b)
            elif c in SENTENCE_END:
                b = _UNDECIDED
                if i + 1 >= n:
                    b = end
                elif c == ".":
                    nxt, prev = text[i + 1], text[i - 1] if i > 0 else ""
                    if nxt == "." or (prev.isdigit() and nxt.isdigit()):
                        b = None  # inside an ellipsis (decided at its last dot), or 3.14
                    elif prev == ".":
                        # end of an ellipsis: a sentence ends only if a capital follows ("Wait... what?")
                        j = _run_end(_SPACE_RUN, text, i + 1)
                        if j >= n:
                            b = end
                        elif not (text[j].isupper() or not text[j].isalpha()):
                            b = None
                    word = _abbreviation_before(text, i) if b == _UNDECIDED else None
                    if word is not None:  # Dr. / U.S. / initials: no boundary...
                        b = None
                        if word in SENTENCE_FINAL and text[i + 1].isspace():
                            # ...unless the abbreviation ends the sentence: "Acme Inc. The office"
                            j = _run_end(_SPACE_RUN, text, i + 1)
                            if j >= n:
                                b = None if final else _WAIT
                            elif text[j].isupper():
                                b = i + 1
                if b == _UNDECIDED:
                    j = i + 1
                    if text[j] in _CLOSERS_EXCLAIM:
                        if not run_lo <= j <= run_hi:
                            run_lo, run_hi = j, _run_end(_CLOSE_RUN, text, j)
                        j = run_hi
                    if j >= n:
                        b = end
                    else:
                        b = j if text[j].isspace() else None  # not "e.g.x", "3.5", "v1.2"
            if b is None and c in CLAUSE and i - last >= clause_min:
                prev, nxt = text[i - 1: i], text[i + 1: i + 2]
                if c in ",:" and prev.isdigit() and nxt.isdigit():
                    continue  # 1,000 / 10:30
                if not nxt:
                    b = end
                elif c in ",:—" and not nxt.isspace():
                    continue
                else:
                    b = i + 1
            if b == _WAIT:
                # nothing after i can end a segment before more text arrives: i is the last
                # character, or only closers, "!?" or spaces follow it (if i is inside a URL,
                # waiting there only means looking again from i)
                if self.waiting is None:
                    self.waiting = i
                break
            if b is not None and b > last:
                if spans is None:
                    self.token = _token_start(text, start, token_hint)
                    spans = _url_spans(text, self.token)
                    n_spans = len(spans)
                if n_spans:
                    while k < n_spans and spans[k][1] - 1 <= i:
                        k += 1
                    if k < n_spans and spans[k][0] <= i:
                        continue  # inside a URL or an e-mail address: never a boundary
                cuts.append(b)
                last = b
                self.waiting = None


def _token_start(text: str, i: int, hint: int) -> int:
    """Start of the space-free run that contains ``i`` (``hint``: a known earlier start)."""
    if i <= hint or text[i - 1].isspace():
        return min(i, max(hint, 0)) if i <= hint else i
    m = _TOKEN_START.search(text, hint, i)
    return m.end() if m else hint


def _find_boundaries(text: str, final: bool, clause_min: int) -> list[int]:
    return _Scan(text, final, clause_min, 0, 0).cuts


def _hard_wrap(seg: str, max_chars: int, out: list[str]) -> None:
    """``seg`` (stripped) in pieces of at most ``max_chars``, cut at the last space before
    the limit (or at the limit when that space is in the first half). Indices, not slices:
    a long text without punctuation is copied once."""
    s, e = 0, len(seg)
    while e - s > max_chars:
        k = seg.rfind(" ", s, s + max_chars) - s
        k = k if k > max_chars // 2 else max_chars
        out.append(seg[s:s + k].strip())
        s = _run_end(_SPACE_RUN, seg, s + k, e)
    if e > s:
        out.append(seg[s:e])


def split_segments(text: str, max_chars: int = 400, clause_min: int = 80) -> list[str]:
    """Whole text -> segments. Clauses split only sentences longer than ``clause_min``;
    anything still above ``max_chars`` is cut at the last space before the limit."""
    text = text.strip()
    if not text:
        return []
    out: list[str] = []
    last = 0
    for c in _find_boundaries(text, True, clause_min) + [len(text)]:
        seg = text[last:c].strip()
        last = c
        if len(seg) > max_chars:
            _hard_wrap(seg, max_chars, out)
        elif seg:
            out.append(seg)
    return [s for s in out if _ALNUM.search(s)] or ([text] if _ALNUM.search(text) else [])


class IncrementalSplitter:
    """Feed text deltas; get back segments as soon as their end is certain.

    ``first_clause_min`` is small so a phone call's first audio starts at the first clause
    boundary; later segments prefer whole sentences.

    The buffer is looked at again only from ``_from``: before it, no position was a segment
    end, and none can become one as text is appended (a URL found there can only grow).
    """

    def __init__(self, first_clause_min: int = 4, clause_min: int = 80, max_chars: int = 400) -> None:
        self.buf = ""
        self.first_clause_min = first_clause_min
        self.clause_min = clause_min
        self.max_chars = max_chars
        self.emitted = 0
        self._from = 0    # buffer positions before this are no segment end
        self._token = 0   # start of the word that contains _from (or earlier)
        self._cmin = -1   # the clause minimum _from was found with

    def feed(self, delta: str) -> list[str]:
        self.buf += delta
        cmin = self.first_clause_min if self.emitted == 0 else self.clause_min
        if cmin < self._cmin:
            self._from = self._token = 0  # a smaller minimum may allow earlier clause ends
        scan = _Scan(self.buf, False, cmin, self._from, self._token)
        cuts = scan.cuts
        out = []
        if cuts:
            head, self.buf = self.buf[: cuts[-1]], self.buf[cuts[-1]:]
            out = split_segments(head, self.max_chars, cmin) if len(cuts) > 1 or len(head) > self.max_chars \
                else ([head.strip()] if head.strip() else [])
            self._shifted(cuts[-1], scan.waiting)
        elif len(self.buf) > self.max_chars:
            k = self.buf.rfind(" ", 0, self.max_chars)
            k = k if k > 0 else self.max_chars
            out, self.buf = [self.buf[:k].strip()], self.buf[k:]
            self._shifted(k, scan.waiting)
        else:
            self._from = len(self.buf) if scan.waiting is None else scan.waiting
            self._token = scan.token
        self._cmin = cmin
        out = [s for s in out if _ALNUM.search(s)]
        self.emitted += len(out)
        return out

    def _shifted(self, k: int, waiting: int | None) -> None:
        """The buffer lost its first ``k`` characters: resume where the scan waited, or from
        the start when the buffer now begins inside a word (its URLs may read differently)."""
        resume = len(self.buf) if waiting is None else max(0, waiting - k)
        if self.buf and not self.buf[0].isspace():
            resume = 0
        self._from, self._token = resume, 0

    def flush(self) -> list[str]:
        rest, self.buf = self.buf, ""
        self._from = self._token = 0
        out = split_segments(rest, self.max_chars, self.clause_min)
        self.emitted += len(out)
        return out


class WholeDocument:
    """SSML cannot be cut at sentence ends (its tags span them): the deltas are held until
    flush and spoken as one request - the daemon splits it and streams it as usual."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit

    def feed(self, delta: str) -> list[str]:
        self.size += len(delta)
        if self.size > self.limit:
            raise TTSError("payload_too_large", f"document longer than {self.limit} characters")
        self.parts.append(delta)
        return []

    def flush(self) -> list[str]:
        text = "".join(self.parts)
        self.parts.clear()
        self.size = 0
        return [text] if text.strip() else []
