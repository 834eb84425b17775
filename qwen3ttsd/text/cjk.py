"""Japanese and Korean numbers.

Japanese: kanji numerals from num2words ("二千二十六年", "三百円"), not kana. Kanji is how
Japanese prints numbers in words, and it leaves the sound changes a counter causes
(三本 sanbon, 六百 roppyaku, 一杯 ippai) to the model, which reads kanji+counter as a word;
spelling kana ourselves would mean a rendaku table per counter. num2words' own ``year``
reading converts to the imperial era (2026 -> 令和八年), which changes what was written,
so years are read as plain cardinals ("二千二十六年"), as newsreaders say them.

Korean: Sino-Korean numerals from num2words, except before the counters that take native
Korean numbers, which no library covers: "30살" is 서른 살, "3개" 세 개, "2시" 두 시 (but
"30분" 삼십 분). Native numbers stop at 99; larger counts are Sino-Korean (백오십 명).
Months 6 and 10 drop a sound (유월, 시월).
"""

from __future__ import annotations

import re

from .numerals import Locale, compile_rules, n2w


def _date_rules(year_fmt: str, month_day_fmt: str) -> list:
    def ymd(m: re.Match) -> str:
        mo, d = int(m.group(2)), int(m.group(3))
        return year_fmt.format(y=m.group(1), mo=mo, d=d) if 1 <= mo <= 12 and 1 <= d <= 31 else m.group(0)

    def md(m: re.Match) -> str:
        mo, d = int(m.group(1)), int(m.group(2))
        return month_day_fmt.format(mo=mo, d=d) if 1 <= mo <= 12 and 1 <= d <= 31 else m.group(0)

    return [(r"(?<![\d./\-])(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?![\d./\-])", ymd),
            (r"(?<![\d./\-])(\d{1,2})/(\d{1,2})(?![\d./\-])", md)]


# --- Japanese ----------------------------------------------------------------------------------

def _ja_cardinal(n: int) -> str:
    return re.sub(r"^千(?=万|億|兆)", "一千", n2w(n, "ja"))   # 10,000,000: いっせんまん


def _ja_time(h: int, mi: int) -> str:
    return f"{_ja_cardinal(h)}時" + (f"{_ja_cardinal(mi)}分" if mi else "")


JAPANESE = Locale(
    name="japanese", cardinal=_ja_cardinal,
    digit_names=("ゼロ", "一", "二", "三", "四", "五", "六", "七", "八", "九"),
    minus="マイナス", point="点", dot="点", to="から", slash="スラッシュ", sep="", pause="、",
    group=",", decimal=".", range_format="{a}{to}{b}",
    fraction=lambda n, d: f"{_ja_cardinal(d)}分の{_ja_cardinal(n)}",
    units={"%": ("パーセント",), "％": ("パーセント",), "°C": ("度",), "℃": ("度",), "°": ("度",),
           "km": ("キロ",), "km/h": ("キロ",), "kg": ("キロ",), "m": ("メートル",), "cm": ("センチ",),
           "mm": ("ミリ",), "g": ("グラム",), "L": ("リットル",), "l": ("リットル",), "mL": ("ミリリットル",),
           "ml": ("ミリリットル",)},
    currencies={"$": (("ドル",), ("セント",)), "US$": (("ドル",), ("セント",)), "€": (("ユーロ",), ("セント",)),
                "£": (("ポンド",), ("ペンス",)), "¥": (("円",), ()), "￥": (("円",), ()), "₩": (("ウォン",), ())},
    money_and="", time=_ja_time, ratio="対",
    always={"24/7": "二十四時間年中無休"},
    rules=compile_rules(_date_rules("{y}年{mo}月{d}日", "{mo}月{d}日")),
)

# --- Korean ------------------------------------------------------------------------------------

_KO_ONES = ("", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉")
_KO_TENS = ("", "열", "스물", "서른", "마흔", "쉰", "예순", "일흔", "여든", "아흔")
# counters that count with native numbers (longest first so 시간 wins over 시)
_KO_NATIVE = sorted(("번째 시간 개 명 살 시 마리 잔 권 병 장 벌 켤레 송이 그루 가지 군데 "
                     "사람 달 곳 척 채 통 줄 번 알 봉지 대").split(), key=len, reverse=True)
# "3번 출구" (exit number 3) counts with Sino-Korean, "3번 했다" (three times) native
_KO_NUMBERED = re.compile(r"\s*(?:출구|버스|국도|게이트|트랙|홈|채널|타자|선\b|방\b|문제)")


def _ko_cardinal(n: int) -> str:
    return n2w(n, "ko")


def ko_native(n: int) -> str:
    """1..99 in native Korean, the form before a counter: 1 한, 20 스무, 21 스물한."""
    tens, ones = divmod(n, 10)
    if tens == 2 and ones == 0:
        return "스무"
    return _KO_TENS[tens] + _KO_ONES[ones]


def _ko_count(m: re.Match) -> str:
    counter = m.group("counter")
    after = m.string[m.end(): m.end() + 6]
    native = not (counter == "번" and _KO_NUMBERED.match(after)) \
        and not (counter == "대" and m.group("n").endswith("0"))

    def say(digits: str) -> str:
        n = int(digits)
        if counter == "번째" and n == 1:
            return "첫"
        return ko_native(n) if native and 0 < n < 100 else _ko_cardinal(n)

    head = f"{say(m.group('a'))}에서 " if m.group("a") else ""
    return f"{head}{say(m.group('n'))} {counter}"


def _ko_time(h: int, mi: int) -> str:
    hour = f"{ko_native(h) if 0 < h < 13 else _ko_cardinal(h)} 시"
    return hour + (f" {_ko_cardinal(mi)} 분" if mi else "")


KOREAN = Locale(
    name="korean", cardinal=_ko_cardinal,
    digit_names=("공", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"),
    minus="마이너스", point="점", digit_sep="", dot="점", to="에서", slash="슬래시",
    group=",", decimal=".", range_format="{a}{to} {b}",
    fraction=lambda n, d: f"{_ko_cardinal(d)}분의 {_ko_cardinal(n)}",
    units={"%": ("퍼센트",), "％": ("퍼센트",), "°C": ("도",), "℃": ("도",), "°": ("도",),
           "km": ("킬로미터",), "km/h": ("킬로미터",), "kg": ("킬로그램",), "m": ("미터",), "cm": ("센티미터",),
           "mm": ("밀리미터",), "g": ("그램",), "L": ("리터",), "l": ("리터",), "mL": ("밀리리터",),
           "ml": ("밀리리터",)},
    currencies={"$": (("달러",), ("센트",)), "US$": (("달러",), ("센트",)), "€": (("유로",), ("센트",)),
                "£": (("파운드",), ("펜스",)), "¥": (("엔",), ()), "₩": (("원",), ())},
    time=_ko_time, ratio="대",
    always={"24/7": "이십사 시간 연중무휴"},
    rules=compile_rules([
        (r"(?<![\w.,])[-−](\d+(?:\.\d+)?)\s?(?:°C|℃)", lambda m: f"영하 {m.group(1)}도"),  # 영하 삼 도
        *_date_rules("{y}년 {mo}월 {d}일", "{mo}월 {d}일"),
        (r"(?<![\d.,])(6|10)\s?월", lambda m: "유월" if m.group(1) == "6" else "시월"),
        (rf"(?<![\d.,제])(?:(?P<a>\d{{1,2}})\s?[~\-–]\s?)?(?P<n>\d+)\s?(?P<counter>{'|'.join(_KO_NATIVE)})", _ko_count),
    ]),
)

LOCALES = {loc.name: loc for loc in (JAPANESE, KOREAN)}
