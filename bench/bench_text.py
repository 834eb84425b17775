"""Text normalisation benchmark: what a 20,000-character request (the largest allowed)
costs per language, for number-dense text and for ordinary prose, side by side from one run.

Normalisation runs per request before the first segment is spoken, so this is added
latency for the whole request.

A second table times splitting on adversarial shapes (the bridge splits streamed text on
its event loop): 1 MB in one call to ``split_segments``, 1 MB fed to ``IncrementalSplitter``
in one piece, and 100 KB fed one character at a time (CPU seconds; linear since the
splitter's rewrite: 100 KB of "Hi. " in one WebSocket message took 47.8 s before).

    python bench/bench_text.py [-n 5] [--no-split]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen3ttsd.text import IncrementalSplitter, split_segments
from qwen3ttsd.text.normalize import normalize

DENSE = {
    "english": "On 2024-01-15 at 10:30 am, Dr. Smith paid $5.50 for 3/4 cup; ages 5-10, -3°C, "
               "version 3.11.7, flight LH400, call 555-123-4567. ",
    "german": "Am 3. Mai 2024 um 14:30 Uhr kostete es 5,50 € bei -3 °C; 1.234.567 Einwohner, "
              "3/4 Tasse, Version 3.11.7, 5-10 Minuten. ",
    "french": "Le 1er janvier 2024 à 14h30, 12,50 € pour 1 234 personnes, il fait -3 °C, 3/4 de tasse. ",
    "spanish": "Tengo 21 años; el 1º de mayo, 3,5%, 200 personas, 12,50 €, a las 14:30, -3 °C. ",
    "italian": "Il 1° gennaio 2024 alle 14:30, 12,50 €, 1.234 abitanti, -3 °C, 3/4 di tazza. ",
    "portuguese": "Às 14h30, 2 horas, R$ 12,50, 22 pessoas, 15/01/2024, 3,5%, 1.234 habitantes. ",
    "russian": "В 1999 году 15 января 2024 года с 5 до 10 лет, 2 книги, 2,5%, -3°C, 12,50 ₽. ",
    "chinese": "共1,234人，气温-3℃，我有2个苹果，版本3.11.7，2024-01-15出发，2:30开会，增长了2.5%。",
    "japanese": "2026年1月15日10:30に、価格は1,234円、気温は-3℃、50%の確率、5〜10人です。",
    "korean": "30살, 사과 3개, 2시 30분, 6월 3일, 1,000원, 150명, 5~10개, 3.5%입니다. ",
}
PROSE = {
    "english": "The quick brown fox jumps over the lazy dog, and then it rests by the river. ",
    "chinese": "今天天气很好，我们一起去公园散步，然后在湖边喝茶聊天。",
    "japanese": "今日はとても良い天気なので、公園を散歩してから湖のそばでお茶を飲みました。",
    "korean": "오늘은 날씨가 아주 좋아서 공원을 산책하고 호숫가에서 차를 마셨습니다. ",
}
PROSE_LATIN = "Der schnelle braune Fuchs springt über den faulen Hund und ruht am Fluss. "


SPLIT_SHAPES = {"sentences": "Hi. ", "letter-dots": "a.", "words": "word ", "dots": ".",
                "cjk": "你好，世界。", "cjk-punct": "。", "long-word": "a", "hyphens": "a-", "bangs": "!",
                "e-mail-like": "a.b-c@", "abbreviations": "Dr. ", "ellipses": "Wait... ",
                "urls": "x.y@a.bc www.q.com Hi! "}


def cpu_s(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def split_table() -> None:
    print(f"\n{'shape':14s} {'split 1MB s':>12s} {'feed 1MB s':>11s} {'chars 100KB s':>14s}")
    for name, unit in SPLIT_SHAPES.items():
        big = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]

        def feed_once() -> None:
            sp = IncrementalSplitter()
            sp.feed(big)
            sp.flush()

        def feed_chars() -> None:
            sp = IncrementalSplitter()
            for ch in big[:100_000]:
                sp.feed(ch)
            sp.flush()
        one_shot = cpu_s(lambda: split_segments(big))
        print(f"{name:14s} {one_shot:12.2f} {cpu_s(feed_once):11.2f} {cpu_s(feed_chars):14.2f}")


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--no-split", action="store_true", help="skip the adversarial splitting table")
    args = ap.parse_args()
    print(f"{'language':11s} {'dense ms':>9s} {'prose ms':>9s} {'split ms':>9s} {'dense/split':>12s}")
    for lang, dense in DENSE.items():
        d = (dense * (20000 // len(dense) + 1))[:20000]
        p = PROSE.get(lang, PROSE_LATIN)
        p = (p * (20000 // len(p) + 1))[:20000]
        normalize(dense, lang)  # first use: imports and compiled patterns
        dense_ms = median_ms(lambda: normalize(d, lang), args.n)
        prose_ms = median_ms(lambda: normalize(p, lang), args.n)
        split_ms = median_ms(lambda: split_segments(d), args.n)
        print(f"{lang:11s} {dense_ms:9.1f} {prose_ms:9.1f} {split_ms:9.1f} {dense_ms / split_ms:12.2f}")
    if not args.no_split:
        split_table()


if __name__ == "__main__":
    main()
