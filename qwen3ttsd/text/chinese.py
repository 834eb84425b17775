"""Chinese: cn2an reads the numbers (dates digit by digit, 百分之, 分之, 到); the rules here
prepare what it misreads - thousands commas ("1,234" -> "一,二百三十四"), a minus before ℃
(零下), dotted versions, ids with letters, ISO dates - and fix 二 -> 两 where people say 两
(两个, 两千, 两万). URLs and addresses are read by the English rules, shielded from cn2an.
"""

from __future__ import annotations

import re

from .english import _EMAIL, _URL, _email, _url
from .numerals import compile_rules, safe

_CN_DIGITS = "零一二三四五六七八九"
_PLACEHOLDERS = re.compile("[\uE100-\uE8FF]")   # private-use chars stand in for shielded text
# measure words after which 2 is 两 (两个人, 两次); 第二 and 十二 keep 二
_MEASURE = "个位只本次件条张台辆名头匹块天岁斤元种周份倍双对家所座架部杯瓶碗"


_UNITS = {"km/h": "公里每小时", "km": "公里", "kg": "公斤", "cm": "厘米", "mm": "毫米", "ml": "毫升", "mL": "毫升",
          "m": "米", "g": "克", "L": "升", "l": "升"}


def _digits(s: str) -> str:
    return "".join(_CN_DIGITS[int(c)] for c in s if c.isdigit())


def _an2cn(s: str) -> str:
    import cn2an

    return cn2an.an2cn(s)


def _id(m: re.Match) -> str:
    """A320 -> A三二零, CA1234 -> CA一二三四 (read as digits), GPT-4o -> GPT四o."""
    def say(d: re.Match) -> str:
        s = d.group(0)
        return _digits(s) if len(s) >= 3 or s[0] == "0" else _an2cn(s)
    return re.sub(r"\d+", say, m.group(0).replace("-", ""))


def _iso_date(m: re.Match) -> str:
    y, mo, d = m.group(1), int(m.group(2)), int(m.group(3))
    return f"{y}年{mo}月{d}日" if 1 <= mo <= 12 and 1 <= d <= 31 else m.group(0)


def _time(m: re.Match) -> str:
    hour = "两" if m.group(1) in ("2", "02") else m.group(1)   # 两点, as the hour is said
    return f"{hour}点{int(m.group(2))}分" if int(m.group(2)) else f"{hour}点"


_BEFORE_CN2AN = compile_rules([
    (r"(?<=\d),(?=\d{3}(?!\d))", lambda m: ""),                            # 1,234 -> 1234
    (r"(?<![\d\-])(\d{4})-(\d{1,2})-(\d{1,2})(?![\d\-])", _iso_date),
    (r"(?<![A-Za-z0-9_.\-])[-−](\d+(?:\.\d+)?)\s?(?:℃|°C)", lambda m: f"零下{m.group(1)}摄氏度"),
    (r"(?<![A-Za-z0-9_.\-])[-−](?=\d)", lambda m: "负"),
    (r"(?<![A-Za-z0-9_.])\d+(?:\.\d+){2,}(?![A-Za-z0-9_]|\.\d)",
     lambda m: "点".join(_an2cn(p) for p in m.group(0).split("."))),       # 3.11.7 -> 三点十一点七
    (r"(?<![A-Za-z0-9_/])24/7(?![\d/])", lambda m: "二十四七"),
    (r"(?<![A-Za-z0-9_\-])[A-Za-z]+-?\d+[A-Za-z]*(?:\d+[A-Za-z]*)*(?![A-Za-z0-9_])", _id),
    (r"(?<![\d:])(\d{1,2}):(\d{2})(?![\d:])", _time),
    (r"(?<![\d:.])(\d+):(\d+)(?![\d:])", lambda m: f"{m.group(1)}比{m.group(2)}"),   # 比分2:1
    (rf"(\d(?:[\d.]*\d)?)\s?({'|'.join(sorted(map(re.escape, _UNITS), key=len, reverse=True))})(?![A-Za-z])",
     lambda m: m.group(1) + _UNITS[m.group(2)]),
    (r"(?<![\d\-])(0\d{1,4})-(\d{3,})(?![\d\-])", lambda m: f"{_digits(m.group(1))} {_digits(m.group(2))}"),
    (r"\d{7,}|(?<!\d)0\d+(?![\d.])", lambda m: _digits(m.group(0))),       # phone numbers, ids
    (r"(?<![\d.])2(?=点(?:\d{1,2}分|[^\d]|$))", lambda m: "两"),                # 两点 (two o'clock)
    (r"[¥￥]\s?(\d+(?:\.\d+)?)", lambda m: f"{m.group(1)}元"),
    (r"\$\s?(\d+(?:\.\d+)?)", lambda m: f"{m.group(1)}美元"),
    (r"€\s?(\d+(?:\.\d+)?)", lambda m: f"{m.group(1)}欧元"),
])
_AFTER_CN2AN = compile_rules([
    (rf"(?<![零一二三四五六七八九十百千万亿点第两])二(?=[千万亿]|[{_MEASURE}])", lambda m: "两"),
    (r"\d+", lambda m: _digits(m.group(0))),   # whatever cn2an left, digit by digit
])


@safe
def _cn2an(m: re.Match) -> str:
    import cn2an

    return cn2an.transform(m.group(0), "an2cn")


def normalize_chinese(text: str) -> str:
    protected: list[str] = []

    def keep(m: re.Match) -> str:
        protected.append(_url(m) if "@" not in m.group(0) else _email(m))
        return chr(0xE100 + len(protected) - 1)  # a private-use char: no digit for cn2an to touch

    text = _PLACEHOLDERS.sub("", text)  # our placeholders; unspeakable anyway
    text = _URL.sub(keep, text)
    text = _EMAIL.sub(keep, text)
    for pat, fn in _BEFORE_CN2AN:
        text = pat.sub(fn, text)
    if re.search(r"\d", text):   # cn2an is slow on long prose with nothing to read
        whole = re.fullmatch(r"(?s).*", text)
        assert whole is not None  # (?s).* matches any text
        text = _cn2an(whole)
    text = _PLACEHOLDERS.sub(lambda m: protected[ord(m.group(0)) - 0xE100]
                             if ord(m.group(0)) - 0xE100 < len(protected) else m.group(0), text)
    for pat, fn in _AFTER_CN2AN:
        text = pat.sub(fn, text)
    return text
