"""What the CLI's commands share: the usage-error type (exit code 2, one line, no traceback)
and the path checks that turn a mistyped directory into one."""

from __future__ import annotations

from pathlib import Path


class UsageError(Exception):
    """A mistake in the command line: ``qwen3tts-ctl`` prints ``error: <message>`` and exits 2."""


def not_a_directory(path: str | Path) -> bool:
    """Whether ``path``, or the nearest of its parents that exists, is something other than
    a directory (a file given as ``--models-dir``): nothing could ever be created there."""
    for p in (Path(path), *Path(path).parents):
        if p.exists():
            return not p.is_dir()
    return False
