"""A stream's text as it arrives (an LLM writing): a growing buffer, tokenized incrementally.

Why: Qwen3-TTS's streaming-text mode (qwen-tts ``non_streaming_mode=False``) puts the first
text token in the prompt and feeds the rest one token per codec frame ("trailing text"),
then ``tts_pad`` once the text has ended. So a generation can start before the text is
complete, if the tokens it is fed are exactly the tokens of the whole text. This module
decides which part of the buffer is final:

* the buffer is cut only where the text's tokenization cannot change whatever follows: at
  the start of a whitespace run after a non-space character, or before CJK clause
  punctuation after a letter. The Qwen2/Mistral pre-tokenizer regexes have no look-behind
  and none of their pieces crosses such a point, so the tokens of the text before a cut
  followed by those after it are the tokens of the whole (tested against the one-shot ids);
* a cut is used only between two complete *plain* words (letters, with closing
  punctuation): an unfinished word, a number, an abbreviation, a URL or markup is held back
  with its neighbours until what follows it arrives, or the turn is flushed, because the
  normaliser may read them together ("March 5", "Dr. Smith");
* each piece between two used cuts is normalised on its own. Which cuts are used depends
  on the text alone, never on how it was split into appends: the same text gives the same
  tokens in any split (per character, per word, all at once, with pauses);
* pieces are normalised and tokenized only as the generation needs them (a caller asks for
  a number of tokens; :data:`AHEAD_TOKENS` ahead of its row): a 20,000-character text sent
  at once starts speaking after its first words, not after all of them were read (0.9 s).

Torch-free: the daemon appends on its event loop, the engine thread pulls tokens
(:mod:`.text_rows` feeds them to the batched engine's rows).
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable

from ..errors import TTSError

DEFAULT_LOOKAHEAD = 4          # tokens buffered before a generation starts (bench_text_stream.py)
MAX_LOOKAHEAD = 64
MAX_FEED_CHARS = 100_000       # text one streamed generation may be given, in all
AHEAD_TOKENS = 32              # final tokens kept ready beyond what a row has taken (~2.5 s of speech)
CJK_STOPS = "，。！？；：、"    # clause punctuation of unspaced scripts: cut points before them

_OPEN = "\"'“‘«(\\["
_CLOSE = "\"'”’»)\\]"
_PLAIN = re.compile(rf"^[{_OPEN}{CJK_STOPS}]*[^\W\d_]+(?:['’\-][^\W\d_]+)*[,;:!?.{CJK_STOPS}]*[{_CLOSE}]*$")
_SPACES = re.compile(r"\s+")


def _candidates(buf: str) -> list[int]:
    """Positions where the tokenization of ``buf`` splits whatever follows (module docstring)."""
    out = []
    for i in range(1, len(buf)):
        c, prev = buf[i], buf[i - 1]
        if (c.isspace() and not prev.isspace()) or (
                c in CJK_STOPS and unicodedata.category(prev).startswith("L")):
            out.append(i)
    return out


def plain(piece: str) -> bool:
    """A complete word the normaliser reads the same alone as beside its neighbours."""
    word = piece.strip()
    if not _PLAIN.match(word):
        return False
    letters = word.strip(_OPEN + _CLOSE + CJK_STOPS + ",;:!?.")
    return not (word.rstrip(_CLOSE).endswith(".") and len(letters) < 4)  # Dr. St. Mr. e.g.


def stable_units(buf: str, final: bool) -> tuple[list[str], int]:
    """``buf`` (text after the last commit, which began at a used cut) -> the pieces that
    are final now, each normalised on its own, and how many characters they cover."""
    cands = _candidates(buf)
    bounds = [0, *cands, len(buf)]
    pieces = [buf[bounds[m]:bounds[m + 1]] for m in range(len(bounds) - 1)]
    used = []
    for m, c in enumerate(cands):  # cut c sits between pieces[m] and pieces[m + 1]
        complete = m + 1 < len(cands) or final
        if complete and plain(pieces[m]) and plain(pieces[m + 1]):
            used.append(c)
    ends = used + ([len(buf)] if final and buf else [])
    units, start = [], 0
    for end in ends:
        units.append(buf[start:end])
        start = end
    return units, start


class TextFeed:
    """One stream's growing text. ``append`` / ``flush`` from any thread; ``pull`` (the
    engine thread) returns the token ids that became final since the last pull.

    ``normalize``: the spoken form of one piece (the daemon's normaliser for the call's
    language); ``None`` speaks the text as written (whitespace collapsed)."""

    def __init__(self, lookahead: int = DEFAULT_LOOKAHEAD, normalize: Callable[[str], str] | None = None,
                 max_chars: int = MAX_FEED_CHARS, on_text: Callable[[], None] | None = None) -> None:
        if not 1 <= int(lookahead) <= MAX_LOOKAHEAD:
            raise TTSError("bad_request", f"text_lookahead must be 1..{MAX_LOOKAHEAD}")
        self.lookahead = int(lookahead)
        self.normalize = normalize
        self.max_chars = max_chars
        self.on_text = on_text           # wakes an idle engine thread
        self.on_quiet: Callable[[], None] | None = None  # the turn's hook for :meth:`quiet`
        self.last_text_at = time.monotonic()  # when text last arrived (or the feed was made)
        self._lock = threading.Lock()
        self._incoming: list[str] = []
        self._received = 0
        self._flushed = False
        # engine thread only
        self._encode: Callable[[str], list[int]] | None = None
        self._buf = ""
        self._units: deque[str] = deque()  # final pieces not yet normalised (read as the row needs them)
        self._split_all = False          # flushed, and the whole text split into final pieces
        self._says = False               # some committed piece has a letter or digit
        self._done = False               # flushed, and every piece pulled
        self._spoken: list[str] = []     # the committed spoken text, in pieces
        self._tokens = 0
        self.committed = 0               # characters of the appended text that are final (captions)
        self._ahead: list[int] = []      # tokens pulled before a row took them (see :meth:`peek`)
        self.eos_sent = False            # the row has its tts_eos (set by :mod:`.text_rows`)

    # --- producer side (any thread) ------------------------------------------------------

    def append(self, text: str) -> None:
        """Add text to the turn. Refused (``bad_request``) after :meth:`flush` or beyond
        ``max_chars`` in all; never blocks on the engine."""
        if not isinstance(text, str):
            raise TTSError("bad_request", "text must be a string")
        with self._lock:
            if self._flushed:
                raise TTSError("bad_request", "the turn's text was already flushed")
            if self._received + len(text) > self.max_chars:
                raise TTSError("bad_request", f"a streamed turn takes at most {self.max_chars} characters")
            self._received += len(text)
            self._incoming.append(text)
            self.last_text_at = time.monotonic()
        self._wake()

    def flush(self) -> None:
        """The text is complete: what is held back becomes final, then end-of-text."""
        with self._lock:
            self._flushed = True
        self._wake()

    def quiet(self) -> None:
        """The engine's word that this generation has waited for text ``QUIET_TURN_S``
        (:mod:`.text_rows`): its turn (``on_quiet``) ends it at the text it has and sends
        later text to a new generation, so a silent turn does not hold a batch slot."""
        if self.on_quiet is not None:
            self.on_quiet()

    @property
    def flushed(self) -> bool:
        with self._lock:
            return self._flushed

    def _wake(self) -> None:
        if self.on_text is not None:
            self.on_text()

    # --- engine side ----------------------------------------------------------------------

    def bind(self, encode: Callable[[str], list[int]]) -> None:
        """The model's tokenizer (plain text -> ids, no special tokens added)."""
        self._encode = encode

    def pull(self, limit: int | None = None) -> list[int]:
        """Ids that became final since the last pull (pieces tokenized one by one): all of
        them, or about ``limit`` (pieces are read whole; more until one says something)."""
        ids, self._ahead = self._ahead, []
        return ids + self._commit(None if limit is None else limit - len(ids))

    def peek(self, want: int | None = None) -> int:
        """How many final tokens are waiting to be pulled (pulls them into a holding list):
        all there are, or about ``want`` (as :meth:`pull`'s ``limit``)."""
        self._ahead += self._commit(None if want is None else want - len(self._ahead))
        return len(self._ahead)

    @property
    def final(self) -> bool:
        """Flushed, and every piece committed (tokens may still wait in :meth:`peek`'s hold)."""
        return self._done

    @property
    def says(self) -> bool:
        """Whether the committed text has anything to say (a letter or digit)."""
        return self._says

    @property
    def ended(self) -> bool:
        """Flushed, and every token pulled: the row gets end-of-text after its last token."""
        return self._done and not self._ahead

    @property
    def tokens(self) -> int:
        """Final tokens so far (pulled or waiting)."""
        return self._tokens

    @property
    def spoken(self) -> str:
        """The final spoken text so far (for the generation's frame budget)."""
        return "".join(self._spoken)

    def _commit(self, limit: int | None = None) -> list[int]:
        """Normalise and tokenize final pieces: all, or until ``limit`` tokens came and the
        text says something."""
        if self._done:
            return []
        if self._encode is None:
            raise TTSError("internal", "text feed used before its tokenizer was bound")
        self._split_final()
        ids: list[int] = []
        while self._units and (limit is None or len(ids) < limit or not self._says):
            unit = self._units.popleft()
            self.committed += len(unit)
            text = self._spoken_form(unit)
            if text:
                self._spoken.append(text)
                self._says = self._says or any(ch.isalnum() for ch in text)
                ids += self._encode(text)
        self._tokens += len(ids)
        self._done = self._split_all and not self._units
        return ids

    def _split_final(self) -> None:
        """The text appended since the last look, split into the pieces that are final now."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
            final = self._flushed
        if not incoming and self._split_all == final:
            return
        self._buf += "".join(incoming)
        units, used = stable_units(self._buf, final)
        self._buf = self._buf[used:]
        self._units.extend(units)
        self._split_all = final

    def _spoken_form(self, unit: str) -> str:
        """A unit as the model reads it: its own normalisation, whitespace collapsed to one
        space; the first spoken unit of the turn without its leading space."""
        body = unit.strip()
        if self.normalize is not None and body:
            body = self.normalize(body)
        body = _SPACES.sub(" ", body).strip()
        if not body:
            return ""
        return body if not self._spoken else " " + body if unit[:1].isspace() else body


__all__ = ["AHEAD_TOKENS", "DEFAULT_LOOKAHEAD", "MAX_LOOKAHEAD", "TextFeed", "plain", "stable_units"]
