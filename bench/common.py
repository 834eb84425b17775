"""What the benchmarks share: which checkpoint to run (a given one, or a random-weight one
of a named size built for the run)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from qwen3ttsd.testing import tinymodel


def add_model_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", help="checkpoint dir (default: build a random one of --size)")
    ap.add_argument("--size", default="tiny", choices=sorted(tinymodel.SIZES))


def checkpoint(a: argparse.Namespace) -> tuple[str, tempfile.TemporaryDirectory | None]:
    """The checkpoint dir, and the temporary directory to clean up (if one was built)."""
    if a.model:
        return a.model, None
    tmp = tempfile.TemporaryDirectory()
    return str(tinymodel.build(Path(tmp.name) / f"cv-{a.size}", variant="custom_voice", size=a.size)), tmp
