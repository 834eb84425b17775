"""English: say numbers, money, dates, times, units, URLs... the way people do.

English has the most written shapes of its own (phones, US dates, am/pm, $3B, 1990s), so
its rules interleave with the shared number shapes of ``numerals`` instead of running
before all of them: a range must be found before the year rule reads "1939-1945" and
after the phone rule has taken "555-123-4567".
"""

from __future__ import annotations

import re
from functools import lru_cache

from .numerals import LONG_DIGITS, Locale, compile_rules, n2w, shape_rules

# Number words come from num2words (already the other languages'; thread-safe, imported in
# ~35 ms). inflect read them the same but took 3-4 s to import (typeguard instruments its
# every method) - on the first caller's clock after each idle exit - and was not thread-safe.


def _said(w: str) -> str:
    """num2words' English as said here: no commas, no "and" ('one thousand two hundred thirty-four')."""
    return " ".join(w.replace(",", "").replace(" and ", " ").split())


@lru_cache(maxsize=4096)
def words(n: int | str) -> str:
    """Cardinal in words: 1234 -> 'one thousand two hundred thirty-four'."""
    s = str(n).lstrip("0") or "0"
    if len(s) > 15:
        return digits(s)
    return _said(n2w(int(s), "en"))


@lru_cache(maxsize=4096)
def ordinal(n: int | str) -> str:
    """1234 -> 'one thousand two hundred thirty-fourth' (past 15 digits: digit by digit, the last ordinal)."""
    s = str(n).lstrip("0") or "0"
    if len(s) > 15:
        head, _, last = digits(s).rpartition(" ")
        return f"{head} {_said(n2w(DIGIT_NAMES.index(last), 'en', 'ordinal'))}".strip()
    return _said(n2w(int(s), "en", "ordinal"))


def plural(word: str) -> str:
    """A number word's plural: 'ninety' -> 'nineties', 'six' -> 'sixes', 'hundred' -> 'hundreds'."""
    if word.endswith("y"):
        return word[:-1] + "ies"
    return word + ("es" if word.endswith("x") else "s")


DIGIT_NAMES = "zero one two three four five six seven eight nine".split()


def digits(s: str) -> str:
    return " ".join(DIGIT_NAMES[int(c)] for c in s if c.isdigit())


def year(y: int) -> str:
    hi, lo = divmod(y, 100)
    if 2000 <= y < 2010:
        return "two thousand" + (f" {words(lo)}" if lo else "")
    if lo == 0:
        return f"{words(hi)} hundred"
    if lo < 10:
        return f"{words(hi)} oh {words(lo)}"
    return f"{words(hi)} {words(lo)}"


def number(s: str) -> str:
    """'1,234.56' / '-3' / '0.5' -> words (decimals read digit by digit)."""
    s = s.replace(",", "")
    neg = s.startswith(("-", "−"))
    s = s.lstrip("-−+")
    whole, _, frac = s.partition(".")
    out = words(whole or "0")
    if frac:
        out += " point " + digits(frac)
    return ("minus " if neg else "") + out


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
_MONTH_RE = "|".join(MONTHS + [m[:3] for m in MONTHS] + ["Sept"])

CURRENCY = {  # symbol/code -> (singular, plural, cent singular, cent plural)
    "$": ("dollar", "dollars", "cent", "cents"), "US$": ("dollar", "dollars", "cent", "cents"),
    "USD": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
    "EUR": ("euro", "euros", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
    "GBP": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", "", ""), "JPY": ("yen", "yen", "", ""),
    "CNY": ("yuan", "yuan", "fen", "fen"), "RMB": ("yuan", "yuan", "fen", "fen"),
    "₹": ("rupee", "rupees", "paisa", "paise"), "INR": ("rupee", "rupees", "paisa", "paise"),
    "₩": ("won", "won", "", ""), "KRW": ("won", "won", "", ""), "CHF": ("franc", "francs", "centime", "centimes"),
    "₽": ("ruble", "rubles", "kopek", "kopeks"), "RUB": ("ruble", "rubles", "kopek", "kopeks"),
    "CAD": ("Canadian dollar", "Canadian dollars", "cent", "cents"),
    "AUD": ("Australian dollar", "Australian dollars", "cent", "cents"),
}
SCALES = {"k": "thousand", "K": "thousand", "thousand": "thousand", "m": "million", "M": "million",
          "mm": "million", "million": "million", "bn": "billion", "b": "billion", "B": "billion",
          "billion": "billion", "t": "trillion", "tn": "trillion", "T": "trillion", "trillion": "trillion"}
UNITS = {  # unit -> (singular, plural)
    "km": ("kilometer", "kilometers"), "m": ("meter", "meters"), "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"), "mi": ("mile", "miles"), "ft": ("foot", "feet"),
    "yd": ("yard", "yards"), "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"),
    "mg": ("milligram", "milligrams"), "lb": ("pound", "pounds"), "lbs": ("pounds", "pounds"),
    "oz": ("ounce", "ounces"), "t": ("ton", "tons"), "l": ("liter", "liters"), "L": ("liter", "liters"),
    "ml": ("milliliter", "milliliters"), "mL": ("milliliter", "milliliters"),
    "mph": ("mile per hour", "miles per hour"), "km/h": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"), "m/s": ("meter per second", "meters per second"),
    "°C": ("degree Celsius", "degrees Celsius"), "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "°": ("degree", "degrees"), "KB": ("kilobyte", "kilobytes"), "MB": ("megabyte", "megabytes"),
    "GB": ("gigabyte", "gigabytes"), "TB": ("terabyte", "terabytes"), "Hz": ("hertz", "hertz"),
    "kHz": ("kilohertz", "kilohertz"), "MHz": ("megahertz", "megahertz"), "GHz": ("gigahertz", "gigahertz"),
    "ms": ("millisecond", "milliseconds"), "sec": ("second", "seconds"), "min": ("minute", "minutes"),
    "hr": ("hour", "hours"), "hrs": ("hours", "hours"), "h": ("hour", "hours"), "W": ("watt", "watts"),
    "kW": ("kilowatt", "kilowatts"), "kWh": ("kilowatt hour", "kilowatt hours"), "V": ("volt", "volts"),
    "mAh": ("milliamp hour", "milliamp hours"), "px": ("pixel", "pixels"), "dB": ("decibel", "decibels"),
}
ABBREVIATIONS = {
    "Dr.": "Doctor", "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miz", "Prof.": "Professor",
    "Jr.": "Junior", "Sr.": "Senior", "St.": "Saint", "Mt.": "Mount", "Ave.": "Avenue", "Blvd.": "Boulevard",
    "Rd.": "Road", "Gen.": "General", "Capt.": "Captain", "Lt.": "Lieutenant", "Sgt.": "Sergeant",
    "Gov.": "Governor", "Rev.": "Reverend", "Hon.": "Honorable", "etc.": "et cetera", "e.g.": "for example",
    "i.e.": "that is", "vs.": "versus", "approx.": "approximately", "Inc.": "Incorporated",
    "Ltd.": "Limited", "Co.": "Company", "Corp.": "Corporation", "Dept.": "Department",
    "Fig.": "Figure", "Vol.": "Volume", "No.": "Number", "a.m.": "a m", "p.m.": "p m",
}
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"


def _url(m: re.Match) -> str:
    s = re.sub(r"^(https?://)?(www\.)?", "", m.group(0)).rstrip("/")
    parts = re.split(r"([./:@\-_?=&#])", s)
    names = {".": "dot", "/": "slash", ":": "colon", "@": "at", "-": "dash", "_": "underscore",
             "?": "question mark", "=": "equals", "&": "and", "#": "hash"}
    return " ".join(names.get(p, p) for p in parts if p)


def _email(m: re.Match) -> str:
    user, domain = m.group(0).split("@", 1)
    return _url_like(user) + " at " + _url_like(domain)


def _url_like(s: str) -> str:
    return " ".join({".": "dot", "-": "dash", "_": "underscore", "+": "plus"}.get(p, p)
                    for p in re.split(r"([.\-_+])", s) if p)


def _phone(m: re.Match) -> str:
    raw = m.group(0)
    groups = [g for g in re.split(r"[^\d+]+", raw) if g]
    out = []
    for g in groups:
        if g.startswith("+"):
            out.append("plus " + digits(g))
        else:
            out.append(digits(g))
    return ", ".join(out)


def _month_index(name: str) -> int:
    name = name.lower().rstrip(".")[:3]
    return [m[:3].lower() for m in MONTHS].index(name)


def _date_iso(m: re.Match) -> str:
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return m.group(0)
    return f"{MONTHS[mo - 1]} {ordinal(d)}, {year(y)}"


def _date_us(m: re.Match) -> str:
    mo, d, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return m.group(0)
    return f"{MONTHS[mo - 1]} {ordinal(d)}, {year(y)}"


def _date_mdy(m: re.Match) -> str:
    mo = MONTHS[_month_index(m.group(1))]
    out = f"{mo} {ordinal(int(m.group(2)))}"
    return out + (f", {year(int(m.group(3)))}" if m.group(3) else "")


def _date_dmy(m: re.Match) -> str:
    mo = MONTHS[_month_index(m.group(2))]
    out = f"the {ordinal(int(m.group(1)))} of {mo}"
    return out + (f", {year(int(m.group(3)))}" if m.group(3) else "")


def _time(m: re.Match) -> str:
    h, mi = int(m.group(1)), int(m.group(2))
    ampm = (m.group(4) or "").lower().replace(".", "").replace(" ", "")
    if h > 24 or mi > 59:
        return m.group(0)
    if mi == 0:
        if ampm:
            out = words(h)
        elif h > 12:
            out = f"{words(h)} hundred"
        else:
            out = f"{words(h)} o'clock"
    elif mi < 10:
        out = f"{words(h)} oh {words(mi)}"
    else:
        out = f"{words(h)} {words(mi)}"
    if m.group(3):
        out += f" and {words(int(m.group(3)))} seconds"
    return out + (f" {ampm[0]} m" if ampm else "")


def _time_short(m: re.Match) -> str:
    return f"{words(int(m.group(1)))} {m.group(2).lower().replace('.', '')[0]} m"


def _money(m: re.Match) -> str:
    g = m.groupdict()  # "$5" fills sym/num; "5 USD" fills num2/code2
    unit = CURRENCY[g["sym"] or g["code2"]]
    amount = (g["num"] or g["num2"]).replace(",", "")
    scale = g["scale"]
    if scale:
        return f"{number(amount)} {SCALES[scale]} {unit[1]}"
    whole, _, frac = amount.partition(".")
    n = int(whole or 0)
    out = f"{words(n)} {unit[0] if n == 1 else unit[1]}"
    if frac and unit[2]:
        cents = int((frac + "0")[:2])
        if cents:
            out += f" and {words(cents)} {unit[2] if cents == 1 else unit[3]}"
    elif frac:
        out = f"{number(amount)} {unit[1]}"
    return out


def _percent(m: re.Match) -> str:
    return f"{number(m.group(1))} percent"


def _unit(m: re.Match) -> str:
    num = m.group(1)
    sing, plur = UNITS[m.group(2)]
    return f"{number(num)} {sing if num in ('1', '1.0') else plur}"


def _ordinal(m: re.Match) -> str:
    return ordinal(int(m.group(1).replace(",", "")))


def _year(m: re.Match) -> str:
    y = int(m.group(1))
    if m.group(2):  # 1990s
        return year(y).rsplit(" ", 1)[0] + " " + plural(year(y).rsplit(" ", 1)[-1]) \
            if y % 100 else words(y // 100) + " hundreds"
    return year(y)


def _cardinal(m: re.Match) -> str:
    s = m.group(0)
    whole = s.replace(",", "").split(".")[0].lstrip("-−")
    if len(whole) > 15 or s.isdigit() and (len(s) >= LONG_DIGITS or len(s) > 1 and s[0] == "0"):
        return digits(s)  # ids, account and phone numbers
    return number(s)


_ONLY_SPACE_LEFT = re.compile(r"\s*\Z")


def _abbrev(m: re.Match) -> str:
    abbr = m.group(0)
    s, end = m.string, m.end()
    out = ABBREVIATIONS[abbr]
    if abbr == "St.":  # windows, not the whole text: linear in a text of many "St."
        before = s[max(0, m.start() - 80): m.start()].rstrip().split(" ")[-1:] or [""]
        after = s[end: end + 80].lstrip()[:1]
        # "Baker St." is a street; "St. Louis" a saint
        if before[0][:1].isupper() and not (after and after.isupper()):
            out = "Street"
    if _ONLY_SPACE_LEFT.match(s, end):
        out += "."  # the abbreviation's dot also ended the text
    return out


_CUR_SYMS = "|".join(re.escape(k) for k in sorted((k for k in CURRENCY if not k.isalpha()), key=len, reverse=True))
_CUR_CODES = "|".join(k for k in CURRENCY if k.isalpha())
_UNIT_ALT = "|".join(re.escape(k) for k in sorted(UNITS, key=len, reverse=True))
_ABBR_ALT = "|".join(re.escape(k) for k in sorted(ABBREVIATIONS, key=len, reverse=True))
# ASCII-only, so a URL or address ends where Chinese/Japanese text resumes
_URL = re.compile(r"(?<![A-Za-z0-9])(?:https?://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&*+;=%]*[A-Za-z0-9/=#]", re.I)
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")



def _fraction(n: int, d: int) -> str:
    """3/4 -> 'three quarters', 1/2 -> 'one half', 2/3 -> 'two thirds'."""
    one, many = {2: ("half", "halves"), 4: ("quarter", "quarters")}.get(d, (ordinal(d), ordinal(d) + "s"))
    return f"{words(n)} {one if n == 1 else many}"


ENGLISH = Locale(
    name="english", cardinal=words, digit_names=tuple(DIGIT_NAMES), minus="minus", point="point",
    dot="point", to="to", slash="slash", group=",", decimal=".", fraction=_fraction,
    always={"24/7": "twenty-four seven"}, ratio="to",
)
_SHAPES = shape_rules(ENGLISH)

_ADDRESS_RULES = compile_rules([(_URL, _url), (_EMAIL, _email)])
_ABBREVIATION_RULES = compile_rules([(rf"(?<!\w)(?:{_ABBR_ALT})(?=\s|$)", _abbrev)])
_NUMBER_RULES = compile_rules([
    (r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}\b", _phone),
    # a local number "555-1234" (exchanges start 2-9) is digits, not the range "555 to 1234"
    (r"(?<![\w+\-.,/])[2-9]\d{2}-\d{4}(?![\w\-]|[.,]\d)", _phone),
    (r"\b(\d{4})-(\d{2})-(\d{2})\b", _date_iso),
    (r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b", _date_us),
    (rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(\d{{4}})\b)?", _date_mdy),
    (rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({_MONTH_RE})\b\.?(?:,?\s+(\d{{4}})\b)?", _date_dmy),
    (r"\b(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s*(a\.m\.|p\.m\.|am|pm|AM|PM)(?!\w))?", _time),
    (r"\b(\d{1,2})\s*(a\.m\.|p\.m\.|am|pm|AM|PM)(?!\w)", _time_short),
    _SHAPES["ratio"],   # "won 2:1", "16:9"
    _SHAPES["range"],   # "5-10 km" -> "5 to 10 km", "1939-1945" -> two years
    (r"\b(\d{1,3}(?:,\d{3})*|\d+)(?:st|nd|rd|th)\b", _ordinal),
    (r"(?<![\d.,])\b(1[1-9]\d\d|20\d\d)(s)?\b(?![.,]\d)", _year),
    (r"(?<![\w'’])['’]?([1-9]0)s\b", lambda m: plural(words(m.group(1)))),   # the 90s: nineties
    _SHAPES["version"], _SHAPES["slash"], _SHAPES["id"],
    (rf"(?:(?P<sym>{_CUR_SYMS})\s?(?P<num>{_NUM})|(?P<num2>{_NUM})\s?(?P<code2>{_CUR_CODES})\b)"
     rf"(?:\s?(?P<scale>thousand|million|billion|trillion|bn|tn|mm|[kKmMbBtT])\b)?", _money),
    (rf"(-?(?:{_NUM}))\s?%", _percent),
    (rf"(?<![\w.])([-−]?(?:{_NUM}))\s?({_UNIT_ALT})(?![\w/])", _unit),
    (rf"(?<![\w.])[-−]?(?:{_NUM})(?!\w)", _cardinal),
    _SHAPES["number"], _SHAPES["digits"],   # whatever is left: a digit never reaches the model
])
ENGLISH_RULES = _ADDRESS_RULES + _NUMBER_RULES + _ABBREVIATION_RULES
_SYMBOLS = [(re.compile(r"(?<=\s)&(?=\s)"), "and"), (re.compile(r"(?<=\d)\s?[x×]\s?(?=\d)"), " by "),
            (re.compile(r"#(?=\d)"), "number ")]


_WORDS_ONLY_RULES = _ADDRESS_RULES + _ABBREVIATION_RULES   # prose without a digit skips the number rules


def normalize_english(text: str) -> str:
    for pat, repl in _SYMBOLS:
        text = pat.sub(repl, text)
    for pat, fn in ENGLISH_RULES if re.search(r"\d", text) else _WORDS_ONLY_RULES:
        text = pat.sub(fn, text)
    return text


