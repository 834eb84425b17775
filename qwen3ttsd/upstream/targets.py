"""The configured upstreams: ``QWEN3TTSD_UPSTREAM`` (comma-separated URLs) and their keys.

Torch- and numpy-free: the daemon validates the list at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_CAP = 16   # streams one upstream runs at once unless ``?cap=N`` says otherwise


@dataclass(frozen=True)
class Target:
    """One upstream: ``kind`` is ``unix`` (a qwen3ttsd daemon's tts.sock) or ``http``."""

    url: str              # as configured, without the key or query
    kind: str             # unix | http
    address: str          # socket path (unix) or base URL without trailing slash (http)
    key: str = ""         # bearer key (http)
    cap: int = DEFAULT_CAP

    @property
    def label(self) -> str:
        return self.url


def parse(spec: str | list[str], key: str = "") -> list[Target]:
    """``unix:///run/qwen3ttsd-0/tts.sock, http://gpu1:8091/prefix?cap=32``; ``key`` is every
    HTTP upstream's bearer key unless a URL carries its own (``https://KEY@host``).
    Raises ValueError naming the bad entry."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    out: list[Target] = []
    for item in items:
        u = urlsplit(item)
        cap = DEFAULT_CAP
        for part in filter(None, u.query.split("&")):
            name, _, value = part.partition("=")
            if name != "cap" or not value.isdigit() or int(value) < 1:
                raise ValueError(f"upstream {item!r}: the only query is cap=N (N >= 1)")
            cap = int(value)
        if u.scheme == "unix":
            path = (u.netloc + u.path) if u.netloc else u.path
            if not path.startswith("/"):
                raise ValueError(f"upstream {item!r}: unix:///absolute/path/tts.sock")
            out.append(Target(f"unix://{path}", "unix", path, cap=cap))
        elif u.scheme in ("http", "https"):
            if not u.hostname:
                raise ValueError(f"upstream {item!r}: no host")
            own_key = u.username or ""
            host = u.hostname + (f":{u.port}" if u.port else "")
            base = f"{u.scheme}://{host}{u.path.rstrip('/')}"
            out.append(Target(base, "http", base, key=own_key or key, cap=cap))
        else:
            raise ValueError(f"upstream {item!r}: use unix:///path or http(s)://host:port")
    if len({t.url for t in out}) != len(out):
        raise ValueError("an upstream is listed twice")
    return out
