"""Placeholder normaliser: whitespace only (the full rules land with the text front end)."""

from __future__ import annotations

import re


def normalize(text: str, language: str = "auto") -> str:
    return re.sub(r"\s+", " ", text).strip()
