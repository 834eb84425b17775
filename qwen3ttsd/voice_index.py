"""The saved-voice index: which clone voices exist, readable without waking the daemon.

The daemon rewrites ``<state_dir>/voice-index.json`` (atomically: a temp file, then a
rename) whenever its saved voices change and when it starts. The bridge reads it, so
Home Assistant's Wyoming ``describe`` lists a voice saved a moment ago even while the
daemon is not running - asking the daemon would start it.

The file sits beside the voices directory, not in it: that directory is 0700 (recordings
of people are biometric data) while the bridge runs as another user in the daemon's group.
The index holds no audio and no transcripts, only what ``voices.list`` tells any client
of the data socket anyway, and is mode 0640. Torch- and numpy-free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .atomic_file import replace_file

INDEX_NAME = "voice-index.json"
INDEX_MODE = 0o640
MAX_INDEX_BYTES = 1 << 20          # a reader never loads more than this


@dataclass(frozen=True)
class IndexEntry:
    id: str                         # what a request names (``voice``)
    name: str                       # what a person sees
    model: str = ""                 # the checkpoint it was made with, if one
    created: float = 0.0


def index_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / INDEX_NAME


def write_index(state_dir: str | Path, entries: list[IndexEntry]) -> None:
    """Replace the index with ``entries`` (raises OSError; the old index then stays)."""
    path = index_path(state_dir)
    replace_file(path, json.dumps({"voices": [asdict(e) for e in entries]}, indent=1).encode(), INDEX_MODE)


def read_index(state_dir: str | Path) -> list[IndexEntry] | None:
    """The saved voices, or None when there is no readable index (an older daemon, no
    daemon ever started, no permission): the caller then knows nothing from here."""
    try:
        with open(index_path(state_dir), "rb") as f:
            raw = f.read(MAX_INDEX_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_INDEX_BYTES:
        return None
    try:
        voices = json.loads(raw).get("voices")
    except (ValueError, AttributeError):
        return None
    if not isinstance(voices, list):
        return None
    return [e for e in (_entry(v) for v in voices) if e is not None]


def _entry(v: Any) -> IndexEntry | None:
    if not isinstance(v, dict) or not isinstance(v.get("id"), str) or not v["id"]:
        return None
    created = v.get("created")
    return IndexEntry(id=v["id"], name=str(v.get("name") or v["id"]), model=str(v.get("model") or ""),
                      created=float(created) if isinstance(created, (int, float)) and not isinstance(created, bool)
                      else 0.0)
