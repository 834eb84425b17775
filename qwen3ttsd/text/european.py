"""German, French, Spanish, Italian, Portuguese and Russian numbers: words from num2words,
the rest as tables (separators, month names, unit and currency words) plus the few
agreement rules num2words leaves to the caller (German "ein Uhr", Spanish "veintiún años",
Portuguese "duas horas", Russian case after a preposition and gender of the noun).

Portuguese is read as Brazilian Portuguese (num2words "pt_BR"), by far the most speakers.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Callable

from .numerals import Locale, Rule, compile_rules, n2w, neighbours

_SPACES = " \u00a0\u202f"


def _cardinal(lang: str, n: int) -> str:
    return n2w(n, lang).replace(",", "")   # pt_BR writes "mil, duzentos": no pause is said there


def _ordinal(lang: str, n: int) -> str:
    return n2w(n, lang, "ordinal")


def _feminine_ordinal(lang: str, n: int) -> str:
    """'vigésimo primero' -> 'vigésima primera' (es, it, pt)."""
    return re.sub(r"o\b", "a", _ordinal(lang, n))


def _fractions(one: dict[int, tuple[str, str]], numerator: Callable[[int], str]) -> Callable[[int, int], str | None]:
    """Fractions from a table of denominators: den -> (after one, after more)."""
    def say(n: int, d: int) -> str | None:
        if d not in one:
            return None
        return f"{numerator(n)} {one[d][0] if n == 1 else one[d][1]}"
    return say


def _metric(km: tuple[str, ...], m: tuple[str, ...], cm: tuple[str, ...], mm: tuple[str, ...],
            kg: tuple[str, ...], g: tuple[str, ...], litre: tuple[str, ...], ml: tuple[str, ...],
            kmh: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The metric units newsreaders spell out, keyed by their symbols."""
    return {"km": km, "m": m, "cm": cm, "mm": mm, "kg": kg, "g": g, "l": litre, "L": litre, "ml": ml, "mL": ml,
            "km/h": kmh}


def _signs(percent: tuple[str, ...], degree: tuple[str, ...], celsius: str = "Celsius",
           fahrenheit: str = "Fahrenheit") -> dict[str, tuple[str, ...]]:
    """Percent and degree signs: '%', '°', '°C' / '℃', '°F'."""
    c = tuple(f"{d} {celsius}" for d in degree)
    return {"%": percent, "°": degree, "°C": c, "℃": c, "°F": tuple(f"{d} {fahrenheit}" for d in degree)}


def _currencies(table: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]) -> dict:
    """Currency words keyed by their symbols and ISO codes ("€" and "EUR" say the same)."""
    keys = {"€": ("€", "EUR"), "$": ("$", "USD", "US$"), "£": ("£", "GBP"), "¥": ("¥", "JPY"),
            "₽": ("₽", "RUB"), "R$": ("R$", "BRL")}
    return {k: v for sym, v in table.items() for k in keys.get(sym, (sym,))}


def _date_rules(months: list[str], fmt: str, day_one: str, order: str = "dmy") -> list[Rule]:
    """Numeric dates (15.01.2024, 15/01/2024, ISO 2024-01-15) -> the written-out form the
    language's own rules then read ('15. Januar 2024'); invalid dates stay as they are."""
    def fn(d: str, mo: str, y: str) -> str | None:
        di, mi = int(d), int(mo)
        if not (1 <= mi <= 12 and 1 <= di <= 31):
            return None
        return fmt.format(d=day_one if di == 1 else di, month=months[mi - 1], y=y)

    def dmy(m: re.Match) -> str:
        return fn(m.group(1), m.group(2), m.group(3)) or m.group(0)

    def iso(m: re.Match) -> str:
        return fn(m.group(3), m.group(2), m.group(1)) or m.group(0)

    sep = r"[./]" if order == "dmy" else r"/"
    return [(re.compile(r"(?<![\d.\-/])(\d{4})-(\d{2})-(\d{2})(?![\d\-])"), iso),
            (re.compile(rf"(?<![\d.\-/])(\d{{1,2}}){sep}(\d{{1,2}}){sep}(\d{{4}})(?![\d.]\d|\d)"), dmy)]


# --- German ------------------------------------------------------------------------------------

DE_MONTHS = "Januar Februar März April Mai Juni Juli August September Oktober November Dezember".split()
_DE_ORD_E = {"der", "die", "das"}   # "der dritte Platz"
_DE_ORD_EN = {"dem", "den", "des", "am", "im", "vom", "zum", "zur", "beim", "bis", "ab", "einem", "einen"}


def _de_cardinal(n: int) -> str:
    return re.sub(r"^ein(?=hundert|tausend)", "", n2w(n, "de"))   # 'hundert', 'tausend', as said


def _de_agree(words: str, n: int, before: str, after: str) -> str:
    # "1 Uhr", "1 Euro": "ein"; nouns are capitalised, number words after "eins" are not
    if words == "eins" and after[:1].isupper() and after not in ("Komma", "Punkt", "Strich"):
        return "ein"
    return words


def _de_ordinal(m: re.Match) -> str:
    before, after = neighbours(m)
    is_month = after in DE_MONTHS
    if before in _DE_ORD_E:
        ending = ""
    elif before in _DE_ORD_EN or is_month:
        ending = "n"
    else:
        return m.group(0)  # "Er wurde 3. Dann ..." is a cardinal ending a sentence
    return _ordinal("de", int(m.group(1))) + ending


def _de_day_month(m: re.Match) -> str:
    d, mo = int(m.group(1)), int(m.group(2))
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return m.group(0)
    rest = m.string[m.end():]
    ends = not rest.strip() or re.match(r"\s+[A-ZÄÖÜ]", rest) is not None   # its dot also ends the sentence
    return f"{d}. {DE_MONTHS[mo - 1]}" + ("." if ends else "")


def _de_year(m: re.Match) -> str:
    return n2w(int(m.group(1)), "de", "year")


def _de_time(h: int, mi: int) -> str:
    hour = "ein" if h == 1 else _de_cardinal(h)
    return f"{hour} Uhr" + (f" {_de_cardinal(mi)}" if mi else "")


GERMAN = Locale(
    name="german", cardinal=_de_cardinal,
    digit_names=tuple("null eins zwei drei vier fünf sechs sieben acht neun".split()),
    minus="minus", point="Komma", dot="Punkt", to="bis", slash="Strich",
    group="." + _SPACES + "'", decimal=",",
    fraction=_fractions({2: ("halb", "halbe"), 3: ("Drittel", "Drittel"), 4: ("Viertel", "Viertel"),
                         5: ("Fünftel", "Fünftel"), 6: ("Sechstel", "Sechstel"), 7: ("Siebtel", "Siebtel"),
                         8: ("Achtel", "Achtel"), 9: ("Neuntel", "Neuntel"), 10: ("Zehntel", "Zehntel")},
                        lambda n: "ein" if n == 1 else _de_cardinal(n)),
    units={**_metric(("Kilometer",), ("Meter",), ("Zentimeter",), ("Millimeter",), ("Kilogramm",), ("Gramm",),
                    ("Liter",), ("Milliliter",), ("Kilometer pro Stunde",)),
           **_signs(("Prozent",), ("Grad",))},
    currencies=_currencies({"€": (("Euro",), ("Cent",)), "$": (("Dollar",), ("Cent",)),
                            "£": (("Pfund",), ("Pence",)), "¥": (("Yen",), ()), "₽": (("Rubel",), ("Kopeken",))}),
    say_subunit=False, time=_de_time, agree=_de_agree,
    ratio="zu",
    always={"24/7": "vierundzwanzig sieben"},
    rules=compile_rules([
        *_date_rules(DE_MONTHS, "{d}. {month} {y}", "1."),
        (r"(?<![\d.])(\d{1,2})\.(\d{1,2})\.(?!\d)", _de_day_month),   # "am 24.12."
        (r"(?<![\d.])(\d{1,2})[.:](\d{2})\s?Uhr\b", lambda m: f"{m.group(1)}:{m.group(2)}"),
        (r"(?<![\d.,])(\d{1,3})\.(?=[ \u00a0]+[^\W\d_])", _de_ordinal),
        (r"(?<![\d.,\-−–])(1[1-9]\d\d)(?![\d]|[.,]\d)", _de_year),
    ]),
)

# --- French ------------------------------------------------------------------------------------

FR_MONTHS = "janvier février mars avril mai juin juillet août septembre octobre novembre décembre".split()
_FR_FEMININE = re.compile(r"(heures?|fois|personnes?|minutes?|secondes?|semaines?|années?|journées?|tonnes?|"
                          r"voitures?|pages?|femmes?|filles?|places?|victimes?|entreprises?|étoiles?|"
                          r"maisons?|nuits?|villes?|équipes?)$", re.I)


def _fr_agree(words: str, n: int, before: str, after: str) -> str:
    if _FR_FEMININE.match(after):
        return re.sub(r"\bun$", "une", words)
    return words


def _fr_ordinal(m: re.Match) -> str:
    n, suffix = int(m.group(1)), m.group(2)
    if n == 1:
        return "première" if suffix in ("re", "ère") else "premier"
    return _ordinal("fr", n)


def _fr_time(h: int, mi: int) -> str:
    hour = _fr_agree(n2w(h, "fr"), h, "", "heures")
    return f"{hour} {'heure' if h == 1 else 'heures'}" + (f" {n2w(mi, 'fr')}" if mi else "")


FRENCH = Locale(
    name="french", cardinal=partial(_cardinal, "fr"),
    digit_names=tuple("zéro un deux trois quatre cinq six sept huit neuf".split()),
    minus="moins", point="virgule", dot="point", to="à", slash="barre",
    group=_SPACES + ".", decimal=",", frac_as_number=True,
    fraction=_fractions({2: ("demi", "demis"), 3: ("tiers", "tiers"), 4: ("quart", "quarts"),
                         5: ("cinquième", "cinquièmes"), 6: ("sixième", "sixièmes"),
                         7: ("septième", "septièmes"), 8: ("huitième", "huitièmes"),
                         9: ("neuvième", "neuvièmes"), 10: ("dixième", "dixièmes")}, partial(_cardinal, "fr")),
    units={**_metric(("kilomètre", "kilomètres"), ("mètre", "mètres"), ("centimètre", "centimètres"),
                    ("millimètre", "millimètres"), ("kilogramme", "kilogrammes"), ("gramme", "grammes"),
                    ("litre", "litres"), ("millilitre", "millilitres"), ("kilomètre-heure", "kilomètres-heure")),
           **_signs(("pour cent",), ("degré", "degrés"))},
    plural=lambda v, f: f[0] if v.lstrip("-") in ("0", "1") or v.lstrip("-").startswith(("0.", "1.")) else f[-1],
    currencies=_currencies({"€": (("euro", "euros"), ("centime", "centimes")),
                            "$": (("dollar", "dollars"), ("cent", "cents")),
                            "£": (("livre", "livres"), ("penny", "pence")), "¥": (("yen", "yens"), ()),
                            "₽": (("rouble", "roubles"), ("kopeck", "kopecks"))}),
    say_subunit=False, time=_fr_time, agree=_fr_agree,
    ratio="à",
    always={"24/7": "vingt-quatre sur sept"},
    rules=compile_rules([
        *_date_rules(FR_MONTHS, "{d} {month} {y}", "1er"),
        (r"(?<![\d.,])(\d{1,2})\s?h\s?(\d{2})?(?![\w])", lambda m: _fr_time(int(m.group(1)), int(m.group(2) or 0))
         if int(m.group(1)) <= 24 and int(m.group(2) or 0) < 60 else m.group(0)),
        (r"(?<![\d.,])(\d+)(er|re|ère|e|ème|è)(?![\w])", _fr_ordinal),
    ]),
)

# --- Spanish, Italian, Portuguese: gender of the noun after the number ---------------------------

_MASCULINE_IN_A = {"día", "días", "dia", "dias", "mapa", "mapas", "problema", "problemas", "programa", "programas",
                   "sistema", "sistemas", "tema", "temas", "idioma", "idiomas", "clima", "planeta", "planetas",
                   "poema", "poemas", "cinema", "diploma", "diplomas", "pigiama", "papa", "grama", "gramas"}
_FEMININE_OTHER = {"vez", "veces", "vezes", "mujer", "mujeres", "mulher", "mulheres", "noche", "noches", "noite",
                   "noites", "ciudad", "ciudades", "cidade", "cidades", "edad", "unidad", "unidades", "unidade",
                   "volte", "notte", "notti", "parte", "partes", "gente", "legge", "leggi",
                   "classe", "classi", "chiave", "chiavi", "canzone", "canzoni", "lezione", "lezioni",
                   "estación", "estaciones", "nación", "naciones", "razón", "razones", "flor", "flores",
                   "ração", "nação", "nações", "estação", "estações", "libras"}


_FUNCTION_WORDS = {"a", "as", "à", "da", "das", "na", "nas", "la", "las", "una", "uma", "para", "pela", "sua", "esta",
                   "essa", "cada", "toda", "todas", "nenhuma", "contra", "entre", "sobre", "fora", "agora",
                   "ora", "mas", "era", "ma", "sopra", "senza", "dopo", "ancora", "nessuna", "ninguna", "hasta",
                   "desde", "durante", "mientras", "nada", "ya", "casi", "mia", "tua", "nostra", "vostra"}


def _feminine_noun(word: str) -> bool:
    w = word.lower()
    if w in _FUNCTION_WORDS:
        return False   # "2 a 1" (a score), "5 para as 3"
    return w in _FEMININE_OTHER or (w.endswith(("a", "as", "à", "á")) and w not in _MASCULINE_IN_A)


def _es_agree(words: str, n: int, before: str, after: str) -> str:
    if not after or after.lower() in ("de", "y", "o", "a", "coma", "punto", "por", "en", "con", "menos", "mil"):
        return words
    if _feminine_noun(after):
        return re.sub(r"ientos\b", "ientas", re.sub(r"uno$", "una", words))
    return re.sub(r"veintiuno$", "veintiún", re.sub(r"\buno$", "un", words))   # "veintiún años"


def _it_agree(words: str, n: int, before: str, after: str) -> str:
    if words != "uno" or not after or after.lower() in ("e", "o", "virgola", "punto", "a", "per", "di"):
        return words
    return "una" if _feminine_noun(after) else "un"


def _pt_feminine(words: str) -> str:
    return re.sub(r"entos\b", "entas", re.sub(r"\bdois$", "duas", re.sub(r"\bum$", "uma", words)))


def _pt_agree(words: str, n: int, before: str, after: str) -> str:
    return _pt_feminine(words) if after and _feminine_noun(after) else words


def _romance_ordinal(lang: str, apocope: bool):
    """'1º' / '1ª' / '3er' -> ordinal words in the gender the sign or the noun shows."""
    def fn(m: re.Match) -> str:
        n, mark = int(m.group(1)), m.group(2)
        if mark in ("ª", "a"):
            return _feminine_ordinal(lang, n)
        words = _ordinal(lang, n)
        _, after = neighbours(m)
        if apocope and after and after.lower() not in ("de", "y", "o") and after[:1].isalpha():
            words = re.sub(r"(prim|terc)ero$", r"\1er", words)   # "primer lugar", "tercer piso"
        return words
    return fn


def _es_time(h: int, mi: int) -> str:
    hour = _es_agree(n2w(h, "es"), h, "", "horas")
    return f"{hour} en punto" if mi == 0 else f"{hour} y {n2w(mi, 'es')}"


def _it_time(h: int, mi: int) -> str:
    hour = "una" if h == 1 else n2w(h, "it")
    return hour if mi == 0 else f"{hour} e {n2w(mi, 'it')}"


def _pt_time(h: int, mi: int) -> str:
    hour = _pt_feminine(n2w(h, "pt_BR"))
    return f"{hour} {'hora' if h == 1 else 'horas'}" if mi == 0 else f"{hour} e {n2w(mi, 'pt_BR')}"


ES_MONTHS = "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre".split()
SPANISH = Locale(
    name="spanish", cardinal=partial(_cardinal, "es"),
    digit_names=tuple("cero uno dos tres cuatro cinco seis siete ocho nueve".split()),
    minus="menos", point="coma", dot="punto", to="a", slash="barra",
    group="." + _SPACES, decimal=",", frac_as_number=True,
    fraction=_fractions({2: ("medio", "medios"), 3: ("tercio", "tercios"), 4: ("cuarto", "cuartos"),
                         5: ("quinto", "quintos"), 6: ("sexto", "sextos"), 7: ("séptimo", "séptimos"),
                         8: ("octavo", "octavos"), 9: ("noveno", "novenos"), 10: ("décimo", "décimos")},
                        lambda n: "un" if n == 1 else n2w(n, "es")),
    units={**_metric(("kilómetro", "kilómetros"), ("metro", "metros"), ("centímetro", "centímetros"),
                    ("milímetro", "milímetros"), ("kilo", "kilos"), ("gramo", "gramos"), ("litro", "litros"),
                    ("mililitro", "mililitros"), ("kilómetro por hora", "kilómetros por hora")),
           **_signs(("por ciento",), ("grado", "grados"))},
    currencies=_currencies({"€": (("euro", "euros"), ("céntimo", "céntimos")),
                            "$": (("dólar", "dólares"), ("centavo", "centavos")),
                            "£": (("libra", "libras"), ("penique", "peniques")), "¥": (("yen", "yenes"), ()),
                            "₽": (("rublo", "rublos"), ("kopek", "kopeks"))}),
    money_and=" con ", time=_es_time, agree=_es_agree,
    ratio="a",
    always={"24/7": "veinticuatro siete"},
    rules=compile_rules([
        *_date_rules(ES_MONTHS, "{d} de {month} de {y}", "1"),
        (r"(?<![\d.,])(\d+)\.?(º|ª|°|er)(?![\w])", _romance_ordinal("es", apocope=True)),
    ]),
)

IT_MONTHS = "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre".split()
ITALIAN = Locale(
    name="italian", cardinal=partial(_cardinal, "it"),
    digit_names=tuple("zero uno due tre quattro cinque sei sette otto nove".split()),
    minus="meno", point="virgola", dot="punto", to="a", slash="barra",
    group="." + _SPACES, decimal=",", frac_as_number=True,
    fraction=_fractions({2: ("mezzo", "mezzi"), 3: ("terzo", "terzi"), 4: ("quarto", "quarti"),
                         5: ("quinto", "quinti"), 6: ("sesto", "sesti"), 7: ("settimo", "settimi"),
                         8: ("ottavo", "ottavi"), 9: ("nono", "noni"), 10: ("decimo", "decimi")},
                        lambda n: "un" if n == 1 else n2w(n, "it")),
    units={**_metric(("chilometro", "chilometri"), ("metro", "metri"), ("centimetro", "centimetri"),
                    ("millimetro", "millimetri"), ("chilo", "chili"), ("grammo", "grammi"), ("litro", "litri"),
                    ("millilitro", "millilitri"), ("chilometro orario", "chilometri orari")),
           **_signs(("per cento",), ("grado", "gradi"))},
    currencies=_currencies({"€": (("euro",), ("centesimo", "centesimi")),
                            "$": (("dollaro", "dollari"), ("centesimo", "centesimi")),
                            "£": (("sterlina", "sterline"), ("penny", "pence")), "¥": (("yen",), ()),
                            "₽": (("rublo", "rubli"), ("copeco", "copechi"))}),
    money_and=" e ", time=_it_time, agree=_it_agree,
    ratio="a",
    always={"24/7": "ventiquattro su sette"},
    rules=compile_rules([
        *_date_rules(IT_MONTHS, "{d} {month} {y}", "1°"),
        (r"(?<![\d.,])(\d+)(º|ª|°)(?![\w])", _romance_ordinal("it", apocope=False)),
    ]),
)

PT_MONTHS = "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro".split()
PORTUGUESE = Locale(
    name="portuguese", cardinal=partial(_cardinal, "pt_BR"),
    digit_names=tuple("zero um dois três quatro cinco seis sete oito nove".split()),
    minus="menos", point="vírgula", dot="ponto", to="a", slash="barra",
    group="." + _SPACES, decimal=",", frac_as_number=True,
    fraction=_fractions({2: ("meio", "meios"), 3: ("terço", "terços"), 4: ("quarto", "quartos"),
                         5: ("quinto", "quintos"), 6: ("sexto", "sextos"), 7: ("sétimo", "sétimos"),
                         8: ("oitavo", "oitavos"), 9: ("nono", "nonos"), 10: ("décimo", "décimos")},
                        partial(_cardinal, "pt_BR")),
    units={**_metric(("quilômetro", "quilômetros"), ("metro", "metros"), ("centímetro", "centímetros"),
                    ("milímetro", "milímetros"), ("quilo", "quilos"), ("grama", "gramas"), ("litro", "litros"),
                    ("mililitro", "mililitros"), ("quilômetro por hora", "quilômetros por hora")),
           **_signs(("por cento",), ("grau", "graus"))},
    currencies=_currencies({"R$": (("real", "reais"), ("centavo", "centavos")),
                            "€": (("euro", "euros"), ("centavo", "centavos")),
                            "$": (("dólar", "dólares"), ("centavo", "centavos")),
                            "£": (("libra", "libras"), ("pêni", "pence")), "¥": (("iene", "ienes"), ()),
                            "₽": (("rublo", "rublos"), ("copeque", "copeques"))}),
    money_and=" e ", time=_pt_time, agree=_pt_agree,
    ratio="a",
    always={"24/7": "vinte e quatro por sete"},
    rules=compile_rules([
        *_date_rules(PT_MONTHS, "{d} de {month} de {y}", "1º"),
        (r"(?<![\d.,])(\d{1,2})h(\d{2})?(?![\w])", lambda m: _pt_time(int(m.group(1)), int(m.group(2) or 0))
         if int(m.group(1)) <= 24 and int(m.group(2) or 0) < 60 else m.group(0)),
        (r"(?<![\d.,])(\d+)\.?(º|ª|°)(?![\w])", _romance_ordinal("pt_BR", apocope=False)),
    ]),
)

# --- Russian: case from the preposition before, gender from the noun after ------------------------

RU_MONTHS = "января февраля марта апреля мая июня июля августа сентября октября ноября декабря".split()
_RU_CASE = {**dict.fromkeys("до от из около более менее свыше после для без у кроме с со больше меньше "
                            "против вокруг среди".split(), "g"),
            **dict.fromkeys("к ко".split(), "d"), **dict.fromkeys("о об при".split(), "p"),
            **dict.fromkeys("между над под перед".split(), "i")}
_RU_YEAR_CASE = {"год": "n", "года": "g", "году": "p", "годом": "i", "годе": "p"}


def _ru_cardinal(n: int, case: str = "n", gender: str = "m") -> str:
    words = n2w(n, "ru", case=case, gender=gender)
    return re.sub(r"^одн\w* (?=тысяч)", "", words)   # 1500: "тысяча пятьсот", as said


def _ru_gender(n: int, noun: str) -> str:
    last, noun = n % 10, noun.lower()
    if n % 100 in (11, 12) or not noun:
        return "m"
    if last == 1 and noun.endswith(("а", "я")) or last == 2 and noun.endswith(("ы", "и")):
        return "f"
    return "m"


def _ru_agree(words: str, n: int, before: str, after: str) -> str:
    case = _RU_CASE.get(before, "n")
    gender = _ru_gender(n, after)
    return words if case == "n" and gender == "m" else _ru_cardinal(n, case, gender)


def _ru_plural(value: str, forms: tuple[str, ...]) -> str:
    if len(forms) < 3:
        return forms[-1]
    if "." in value:
        return forms[1]   # "две целых пять десятых процента"
    n = abs(int(value))
    if n % 10 == 1 and n % 100 != 11:
        return forms[0]
    return forms[1] if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14 else forms[2]


def _ru_year(m: re.Match) -> str:
    before, _ = neighbours(m)
    noun = m.group(2)
    if noun == "г.":
        noun = "году" if before in ("в", "во") else "года"
    return f"{n2w(int(m.group(1)), 'ru', 'ordinal', case=_RU_YEAR_CASE[noun])} {noun}"


def _ru_day(m: re.Match) -> str:
    before, _ = neighbours(m)
    case = "n" if before in ("сегодня", "завтра", "вчера", "это", "был", "была", "будет") else \
        {"к": "d", "ко": "d", "по": "a"}.get(before, "g")
    return f"{n2w(int(m.group(1)), 'ru', 'ordinal', case=case, gender='n')} {m.group(2)}"


def _ru_decimal(whole: str, frac: str) -> str:
    return n2w(f"{int(whole or 0)}.{frac}", "ru")


def _ru_fraction(n: int, d: int) -> str | None:
    special = {(1, 2): "одна вторая", (1, 3): "одна треть", (2, 3): "две трети", (1, 4): "одна четверть",
               (3, 4): "три четверти"}
    if (n, d) in special:
        return special[(n, d)]
    den = n2w(d, "ru", "ordinal", gender="f") if n % 10 == 1 and n % 100 != 11 else \
        n2w(d, "ru", "ordinal", case="g", plural=True)
    return f"{_ru_cardinal(n, gender='f')} {den}"


def _ru_time(h: int, mi: int) -> str:
    minutes = "ноль ноль" if mi == 0 else (f"ноль {_ru_cardinal(mi)}" if mi < 10 else _ru_cardinal(mi))
    return f"{_ru_cardinal(h)} {minutes}"


_RU_METRIC = _metric(("километр", "километра", "километров"), ("метр", "метра", "метров"),
                     ("сантиметр", "сантиметра", "сантиметров"), ("миллиметр", "миллиметра", "миллиметров"),
                     ("килограмм", "килограмма", "килограммов"), ("грамм", "грамма", "граммов"),
                     ("литр", "литра", "литров"), ("миллилитр", "миллилитра", "миллилитров"),
                     ("километр в час", "километра в час", "километров в час"))
_RU_METRIC_CYRILLIC = {"км": "km", "км/ч": "km/h", "кг": "kg", "м": "m", "см": "cm", "мм": "mm", "г": "g", "л": "l",
                       "мл": "ml"}
RUSSIAN = Locale(
    name="russian", cardinal=_ru_cardinal,
    digit_names=tuple("ноль один два три четыре пять шесть семь восемь девять".split()),
    minus="минус", point="запятая", dot="точка", to="до", slash="дробь",
    group=_SPACES, decimal=",", fraction=_ru_fraction, decimal_reader=_ru_decimal,
    range_format="от {a} до {b}", plural=_ru_plural,
    units={**_RU_METRIC, **{cyr: _RU_METRIC[lat] for cyr, lat in _RU_METRIC_CYRILLIC.items()},
           **_signs(("процент", "процента", "процентов"), ("градус", "градуса", "градусов"), "Цельсия",
                    "Фаренгейта")},
    currencies={**_currencies({"€": (("евро",), ("цент", "цента", "центов")),
                               "$": (("доллар", "доллара", "долларов"), ("цент", "цента", "центов")),
                               "£": (("фунт", "фунта", "фунтов"), ("пенс", "пенса", "пенсов")),
                               "¥": (("иена", "иены", "иен"), ()),
                               "₽": (("рубль", "рубля", "рублей"), ("копейка", "копейки", "копеек"))}),
                **dict.fromkeys(("руб.", "р."), (("рубль", "рубля", "рублей"), ("копейка", "копейки", "копеек")))},
    time=_ru_time, agree=_ru_agree,
    ratio="—",
    always={"24/7": "двадцать четыре на семь"},
    rules=compile_rules([
        *_date_rules(RU_MONTHS, "{d} {month} {y} года", "1"),
        (r"(?<![\d.,])(\d{3,4})\s?(года|году|годом|годе|год|г\.)(?![\w])", _ru_year),
        (rf"(?<![\d.,])(\d{{1,2}})\s+({'|'.join(RU_MONTHS)})", _ru_day),
    ]),
)

LOCALES = {loc.name: loc for loc in (GERMAN, FRENCH, SPANISH, ITALIAN, PORTUGUESE, RUSSIAN)}
