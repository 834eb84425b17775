"""Numbers in running text, one engine for every language, one ``Locale`` table per language.

Why one engine: every language writes numbers in the same few shapes - a sign, thousands
groups, a decimal part, a fraction, a range, a dotted version, an id with letters, a long
digit run - but says them with its own words and separators. The engine finds the shapes;
the locale says them (cardinals and ordinals come from num2words, loaded on
first use, so importing this module stays cheap). A locale's own ``rules`` (dates, money,
counters...) run first; the shapes below catch what they leave; a last pass reads any digit
still left one by one, so a supported language never reaches the model with digits in it.

Shapes that only re-arrange text ("5-10" -> "5 to 10", "LH400" -> "LH 400") keep the digits
for the later rules, so "5-10 km" still reaches the unit rule as "10 km".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

Rule = tuple[re.Pattern, Callable[[re.Match], str]]
LONG_DIGITS = 10   # an unseparated run this long is an id or account number: read digit by digit


def safe(fn: Callable[[re.Match], str]) -> Callable[[re.Match], str]:
    """A rule that cannot read its match leaves it as it was (normalize never fails on text)."""
    def wrapped(m: re.Match) -> str:
        try:
            return fn(m)
        except Exception:  # noqa: BLE001
            return m.group(0)
    return wrapped


@lru_cache(maxsize=4096)
def n2w(value: int | str, lang: str, to: str = "cardinal", **kw) -> str:
    """num2words, imported on first use and cached (the same numbers recur)."""
    from decimal import Decimal

    from num2words import num2words

    v = Decimal(value) if isinstance(value, str) else value
    return num2words(v, lang=lang, to=to, **kw)


def plural_one_other(value: str, forms: tuple[str, ...]) -> str:
    """Most languages: 1 is singular, everything else (0, 2, 1.5) plural."""
    return forms[0] if value in ("1", "-1") else forms[-1]


@dataclass(frozen=True, eq=False)  # hashed by identity: one compiled rule set per locale
class Locale:
    """How one language says numbers. Words and separators are data; readings are functions."""

    name: str
    cardinal: Callable[[int], str]
    digit_names: tuple[str, ...]      # 0..9, for ids and phone numbers read digit by digit
    minus: str
    point: str                        # decimal separator word ("Komma")
    dot: str                          # version separator word ("3.11.7": "Punkt")
    to: str                           # ranges ("5-10": "bis")
    slash: str                        # "12/3" that is not a fraction
    group: str                        # thousands separators
    decimal: str                      # decimal separators
    fraction: Callable[[int, int], str | None] = lambda n, d: None
    frac_as_number: bool = False      # "3,14": "virgule quatorze" (fr) vs "Komma eins vier" (de)
    sep: str = " "                    # between the words of a reading ("" in Japanese)
    pause: str = ", "                 # between the digit groups of a phone number
    digit_sep: str | None = None      # between digits read one by one (default: sep)
    units: dict[str, tuple[str, ...]] = field(default_factory=dict)   # "%", "°C", "km"... after a number
    plural: Callable[[str, tuple[str, ...]], str] = plural_one_other
    decimal_reader: Callable[[str, str], str] | None = None           # whole, fraction -> words (ru)
    always: dict[str, str] = field(default_factory=dict)              # fixed readings ("24/7")
    ratio: str = ""                                                   # scores, ratios: "2:1" (not a time)
    range_format: str = "{a} {to} {b}"
    time: Callable[[int, int], str] | None = None                     # "14:30" -> hour, minute words
    agree: Callable[[str, int, str, str], str] | None = None          # words, value, word before, word after
    money_and: str = " "                                              # "cinco euros con cincuenta"
    say_subunit: bool = True                                          # "fünf Euro fünfzig" omits "Cent"
    currencies: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()                                      # the language's own, run first

    def digits(self, s: str) -> str:
        sep = self.sep if self.digit_sep is None else self.digit_sep
        return sep.join(self.digit_names[int(c)] for c in s if c.isdigit())

    def integer(self, s: str) -> str:
        """Digits as one number, or digit by digit where people do: '007', long ids."""
        grouped, s = not s.isdigit(), re.sub(r"\D", "", s)
        if not grouped and (len(s) > 1 and s[0] == "0" or len(s) >= LONG_DIGITS):
            return self.digits(s)
        return self.cardinal(int(s))

    def decimal_number(self, whole: str, frac: str) -> str:
        if self.decimal_reader:
            return self.decimal_reader(whole, frac)
        head = self.cardinal(int(whole or "0"))
        if self.frac_as_number and len(frac) <= 3:
            zeros = len(frac) - len(frac.lstrip("0"))
            rest = [self.cardinal(int(frac))] if frac.strip("0") else []
            tail = self.sep.join([self.digit_names[0]] * zeros + rest)
        else:
            tail = self.digits(frac)
        return f"{head}{self.sep}{self.point}{self.sep}{tail}"


# --- the shapes ------------------------------------------------------------------------------

# no Latin or Cyrillic letter may follow a unit ("5 м" is metres, "5 мая" is not), but CJK may:
# "500km先", "5個"
_NOT_AFTER = r"(?![A-Za-z0-9_\u00C0-\u024F\u0400-\u04FF])"
_WORD_BEFORE = re.compile(r"([^\W\d_]+)[\s\u00a0]*$")
_WORD_AFTER = re.compile(r"^[\s\u00a0]*([^\W\d_]+)")


def neighbours(m: re.Match) -> tuple[str, str]:
    """The word just before a match (lower-cased) and just after it (as written: German nouns
    are capitalised), for agreement rules."""
    before = _WORD_BEFORE.search(m.string, max(0, m.start() - 40), m.start())
    after = _WORD_AFTER.search(m.string[m.end(): m.end() + 40])
    return (before.group(1).lower() if before else ""), (after.group(1) if after else "")


def number_pattern(loc: Locale) -> str:
    """A number as this locale writes it, with named groups sign/int/frac.

    Thousands groups are exactly three digits ("1.234" is 1234 in German, "1.5" a decimal);
    a sign counts only where no digit or word precedes it ("5-3" is no negative three)."""
    g = re.escape(loc.group)
    d = re.escape(loc.decimal + ("." if "." not in loc.group else ""))
    return (rf"(?P<sign>(?<![A-Za-z0-9_.,\-−–])[-−–](?=\d))?"
            rf"(?P<int>(?<!\d)(?<!\d[{g}])\d{{1,3}}(?:[{g}]\d{{3}})+(?!\d)|\d+)"
            rf"(?:[{d}](?P<frac>\d+))?")


def read_number(loc: Locale, m: re.Match) -> str:
    whole, frac = m.group("int"), m.group("frac")
    if frac is not None:
        words = loc.decimal_number(re.sub(r"\D", "", whole), frac)
    else:
        words = loc.integer(whole)
        if loc.agree and whole.isdigit() and (len(whole) == 1 or whole[0] != "0") and len(whole) < LONG_DIGITS:
            words = loc.agree(words, int(whole), *neighbours(m))
    return f"{loc.minus}{loc.sep}{words}" if m.group("sign") else words


def _value(m: re.Match) -> str:
    """The matched number as a plain string for plural rules: '-1', '2.5', '1000'."""
    frac = m.group("frac")
    return (m.group("sign") and "-" or "") + re.sub(r"\D", "", m.group("int")) + (f".{frac}" if frac else "")


def _version(loc: Locale):
    grouping = re.compile(rf"\d{{1,3}}(?:[{re.escape(loc.group)}]\d{{3}})+") if "." in loc.group else None

    def fn(m: re.Match) -> str:
        s = m.group(0)
        if grouping and grouping.fullmatch(s):
            return loc.integer(s)  # German "1.234.567" is a number, not a version
        return f"{loc.sep}{loc.dot}{loc.sep}".join(loc.integer(p) for p in s.split("."))
    return fn


def _slash(loc: Locale):
    def fn(m: re.Match) -> str:
        a, b = m.group(1), m.group(2)
        if m.group(0) in loc.always:
            return loc.always[m.group(0)]
        if a[0] != "0" and b[0] != "0" and 2 <= int(b) <= 10 and 0 < int(a) < int(b) * 3:
            words = loc.fraction(int(a), int(b))
            if words:
                return words
        return f"{a} {loc.slash} {b}"
    return fn


def _range(loc: Locale):
    def fn(m: re.Match) -> str:
        a, b = m.group(1), m.group(2)
        if int(a) >= int(b) or (a[0] == "0" and len(a) > 1):
            return m.group(0)  # "2024-01", "3-1" (a score) are no ranges
        return loc.range_format.format(a=a, b=b, to=loc.to)
    return fn


def _split_id(loc: Locale):
    """'LH400' -> 'LH 400', 'GPT-4o' -> 'GPT 4 o': the number rule then reads the digits."""
    def fn(m: re.Match) -> str:
        return (loc.sep or "").join(p for p in re.split(r"-|(\d+)", m.group(0)) if p)
    return fn


def _phone(loc: Locale):
    def fn(m: re.Match) -> str:
        return loc.pause.join(loc.digits(g) for g in re.findall(r"\d+", m.group(0)))
    return fn


def _time(loc: Locale) -> Callable[[re.Match[str]], str]:
    say = loc.time
    assert say is not None  # only called for locales that read times

    def fn(m: re.Match[str]) -> str:
        h, mi = int(m.group(1)), int(m.group(2))
        if h > 24 or mi > 59:
            return m.group(0)
        return say(h, mi)
    return fn


def _unit(loc: Locale):
    def fn(m: re.Match) -> str:
        return f"{read_number(loc, m)}{loc.sep}{loc.plural(_value(m), loc.units[m.group('unit')])}"
    return fn


def _money(loc: Locale):
    """'5,50 €' -> 'fünf Euro fünfzig': whole units, then the cents, as people say prices."""
    def fn(m: re.Match) -> str:
        forms, sub = loc.currencies[m.group("cur")]

        def count(n: int, forms: tuple[str, ...]) -> str:
            word = loc.plural(str(n), forms)
            amount = loc.agree(loc.cardinal(n), n, "", word) if loc.agree else loc.cardinal(n)
            return f"{amount}{loc.sep}{word}"

        whole, frac = re.sub(r"\D", "", m.group("int")), m.group("frac")
        if frac is not None and len(frac) != 2:
            return f"{read_number(loc, m)}{loc.sep}{loc.plural(_value(m), forms)}"
        sign = f"{loc.minus}{loc.sep}" if m.group("sign") else ""
        cents = int(frac or 0)
        if int(whole) == 0 and cents and sub:
            return sign + count(cents, sub)
        out = sign + count(int(whole), forms)
        if cents:
            out += loc.money_and + (count(cents, sub) if sub and loc.say_subunit else loc.cardinal(cents))
        return out
    return fn


def _alt(keys) -> str:
    return "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True))


def shape_rules(loc: Locale) -> dict[str, tuple[str, Callable[[re.Match], str]]]:
    """The shared shapes, by name, so a language can order them around its own rules."""
    num = number_pattern(loc)
    w = "A-Za-z0-9_"   # ASCII only: "2026年", "第5回", "5〜10人" are numbers next to CJK letters
    shapes: dict[str, tuple[str, Callable[[re.Match], str]]] = {
        # 030-1234-5678, 0171-1234567 (national numbers start with 0), +49-30-123456
        "phone": (rf"(?<![{w}\-+.])(?:\+?\d{{2,4}}(?:-\d{{2,4}}){{2,}}|0\d{{1,4}}[-/]\d{{3,}}(?:-\d+)*)(?![{w}\-])",
                  _phone(loc)),
        "version": (rf"(?<![{w}.,])\d+(?:\.\d+){{2,}}(?![{w}]|\.\d)", _version(loc)),
        "slash": (rf"(?<![{w}/.,])(\d+)/(\d+)(?![{w}/]|[.,]\d)", _slash(loc)),
        # "5-10", "5 - 10"; not "5 -10" (a list with a negative number)
        "range": (rf"(?<![{w}.,\-−–/])(\d+)(?:[-–~〜～]|\s[-–~〜～]\s)(\d+)(?![{w}/]|[.,]\d|[-–]\d)", _range(loc)),
        "id": (rf"(?<![{w}\-])(?:[A-Za-z]+-?\d+[A-Za-z]*|\d+[A-Za-z]+)(?:\d+[A-Za-z]*)*(?![{w}\-])", _split_id(loc)),
    }
    if loc.time:
        shapes["time"] = (r"(?<![\d:.])(\d{1,2}):(\d{2})(?![\d:])", _time(loc))
    if loc.ratio:
        shapes["ratio"] = (rf"(?<![{w}:.,])(\d+):(\d+)(?![{w}:]|[.,]\d)",
                           lambda m: f"{m.group(1)}{loc.sep}{loc.ratio}{loc.sep}{m.group(2)}")
    if loc.currencies:
        cur = _alt(loc.currencies)
        shapes["money"] = (rf"(?P<cur>{cur})\s?{num}", _money(loc))
        shapes["money_after"] = (rf"{num}\s?(?P<cur>{cur}){_NOT_AFTER}", _money(loc))
    if loc.units:
        shapes["unit"] = (rf"{num}\s?(?P<unit>{_alt(loc.units)}){_NOT_AFTER}", _unit(loc))
    shapes["number"] = (num, lambda m: read_number(loc, m))
    shapes["digits"] = (r"\d+", lambda m: loc.digits(m.group(0)))  # whatever is left, digit by digit
    return shapes


DEFAULT_ORDER = ("phone", "time", "ratio", "money", "money_after", "version", "slash", "range", "id", "unit",
                 "number", "digits")


def compile_rules(rules) -> tuple[Rule, ...]:
    return tuple((re.compile(p) if isinstance(p, str) else p, safe(f)) for p, f in rules)


@lru_cache(maxsize=None)
def compiled_rules(loc: Locale) -> tuple[Rule, ...]:
    shapes = shape_rules(loc)
    return tuple(loc.rules) + compile_rules(shapes[k] for k in DEFAULT_ORDER if k in shapes)


_DIGIT = re.compile(r"\d")


def read_numbers(text: str, loc: Locale) -> str:
    """The locale's own rules, then the shared number shapes, in order."""
    if not _DIGIT.search(text):
        return text  # every rule reads digits: prose passes untouched, and fast
    for pat, fn in compiled_rules(loc):
        text = pat.sub(fn, text)
    return text
