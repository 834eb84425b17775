"""A file written whole or not at all, with its mode set before any content.

Why one place: the voice index (read by the bridge), a saved voice's kept registration and
the units ``install-service`` writes must each never be seen half-written, nor written
through a file or symlink someone planted at the temporary name. ``mkstemp`` opens a fresh
random name with O_CREAT|O_EXCL (never following a link); the mode is set on the open file
before the content; one rename puts it over ``dest`` (replacing a symlink there rather than
following it). Torch- and numpy-free.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def replace_file(dest: Path, data: bytes, mode: int, sync: bool = False) -> None:
    """Put ``data`` at ``dest`` (mode ``mode``) in one rename; ``sync``: on disk before the
    rename. Raises OSError (``dest`` is then as it was, no temporary left)."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


__all__ = ["replace_file"]
