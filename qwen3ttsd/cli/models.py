"""``qwen3tts-ctl models pull|list|remove|info``: the checkpoints in ``models_dir``.

Everything but ``pull`` is local: it reads the checkpoint directories (never torch), and
asks the daemon which models are loaded only when it is already running (``probe``), so
listing never starts it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import checkpoints, config, probe
from ..checkpoints import ModelEntry
from ..client import Client
from ..errors import TTSError
from .common import UsageError, not_a_directory


def add_parser(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models-dir", help="checkpoint directory (default: the daemon's models_dir, "
                        f"else {config.DEFAULT_MODELS_DIR})")
    p = sub.add_parser("models", help="pull, list, remove and inspect checkpoints")
    msub = p.add_subparsers(dest="models_cmd", required=True)
    q = msub.add_parser("pull", parents=[common], help="download, verify and install a checkpoint",
                        description="official: " + ", ".join(f"{k} ({v})" for k, v in checkpoints.OFFICIAL.items()))
    q.add_argument("name", help="short name (1.7b-customvoice, 0.6b-base, ...) or owner/repository")
    q.add_argument("--source", choices=("huggingface", "modelscope"), default="huggingface")
    q.add_argument("--revision", help="branch, tag or commit (default: main; master on ModelScope)")
    q.add_argument("--if-missing", action="store_true", help="no network when it is already installed")
    q = msub.add_parser("list", parents=[common], help="installed checkpoints")
    q.add_argument("--json", action="store_true")
    q = msub.add_parser("remove", parents=[common], help="delete an installed checkpoint (refused while loaded)")
    q.add_argument("name")
    q.add_argument("--force", action="store_true", help="even when it cannot be told whether it is loaded")
    q = msub.add_parser("info", parents=[common], help="details of one checkpoint")
    q.add_argument("name")
    q.add_argument("--verify", action="store_true", help="re-hash the files against the pulled hashes")


@dataclass
class Store:
    root: Path          # models_dir
    model: str          # the daemon's single QWEN3TTSD_MODEL checkpoint, if any
    admin_socket: str

    @classmethod
    def from_args(cls, a, admin_socket: str) -> "Store":
        if a.models_dir:  # an explicit directory: only what is in it
            return cls(Path(a.models_dir), "", admin_socket)
        cfg = config.load(config.DaemonConfig, "daemon")
        return cls(Path(cfg.models_dir or config.DEFAULT_MODELS_DIR), cfg.model, admin_socket)

    def installed(self) -> list[Path]:
        single = [Path(self.model)] if self.model and checkpoints.is_checkpoint(Path(self.model)) else []
        return single + [p for p in checkpoints.checkpoint_dirs(self.root) if p not in single]


def loaded_models(admin_socket: str) -> set[str] | None:
    """Names the running daemon has loaded; empty when it is not running; None if unknown."""
    running = probe.daemon_running(admin_socket)
    if not running:
        return None if running is None else set()
    try:
        with Client(admin_socket, timeout=5) as c:
            return {m["name"] for m in c.call("admin.status", {}).get("models", []) if m.get("loaded")}
    except (OSError, TTSError):
        return None


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def describe(path: Path, loaded: set[str] | None) -> dict:
    e = ModelEntry.read(path)
    src = checkpoints.read_json(path / checkpoints.SOURCE_FILE)
    return {"name": e.name, "type": e.type, "size": {"0b6": "0.6B", "1b7": "1.7B"}.get(e.size, e.size),
            "disk_bytes": disk_bytes(path), "speakers": e.speakers, "languages": e.languages,
            "loaded": None if loaded is None else e.name in loaded,
            "random_weights": checkpoints.has_random_weights(path), "path": str(path),
            "repo": src.get("repo"), "source": src.get("source"), "revision": src.get("revision"),
            "pulled_at": src.get("pulled_at")}


def _find(store: Store, name: str) -> Path:
    installed = store.installed()
    for p in installed:
        if p.name == name:
            return p
    try:
        wanted = checkpoints.dir_name(checkpoints.resolve(name))
    except checkpoints.UnknownModel:
        wanted = None
    for p in installed:
        if p.name == wanted:
            return p
    raise SystemExit(f"error: no installed model {name!r} in {store.root} "
                     f"(installed: {[p.name for p in installed] or 'none'})")


def _table(rows: list[dict]) -> str:
    from .pull import human_bytes

    def loaded(v):
        return "?" if v is None else ("yes" if v else "no")

    cols = [("NAME", lambda r: r["name"]), ("TYPE", lambda r: r["type"]), ("SIZE", lambda r: r["size"]),
            ("DISK", lambda r: human_bytes(r["disk_bytes"])),
            ("SPEAKERS", lambda r: str(len(r["speakers"])) if r["speakers"] else "-"),
            ("LANGUAGES", lambda r: str(len(r["languages"]))), ("LOADED", lambda r: loaded(r["loaded"])),
            ("NOTE", lambda r: checkpoints.RANDOM_WEIGHTS_NOTE if r["random_weights"] else "")]
    cells = [[h for h, _ in cols]] + [[f(r) for _, f in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def cmd_list(a, store: Store) -> int:
    loaded = loaded_models(store.admin_socket)
    rows = []
    for p in store.installed():
        try:
            rows.append(describe(p, loaded))
        except (OSError, ValueError) as e:  # what the daemon skips too
            print(f"skipping {p}: unreadable config.json ({e})", file=sys.stderr)
    root = store.root
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    if rows:
        print(_table(rows))
    else:
        print(f"{checkpoints.NO_MODEL_MESSAGE} (models_dir {root})", file=sys.stderr)
    from .pull import partial_pulls

    for p in partial_pulls(root):
        print(f"partial pull: {p.name} - run the pull again to resume, or `models remove` it", file=sys.stderr)
    return 0


def cmd_remove(a, store: Store) -> int:
    from .pull import STAGING_PREFIX

    path, root = _find(store, a.name), store.root
    if path.parent.resolve() != root.resolve():
        raise SystemExit(f"error: {path} is not in models_dir {root}; it is configured as QWEN3TTSD_MODEL")
    loaded = loaded_models(store.admin_socket)
    if loaded is None and not a.force:
        raise SystemExit("error: cannot tell whether the daemon has it loaded (run as root or a "
                         "member of qwen3tts-admin, or pass --force)")
    if loaded and path.name in loaded:
        raise SystemExit(f"error: {path.name} is loaded in the running daemon; "
                         f"`qwen3tts-ctl unload {path.name}` first")
    if path.is_symlink():  # installed by linking: what it points at is not ours to delete
        target = os.path.realpath(path)
        path.unlink()
        print(f"removed the link {path.name} (the checkpoint it pointed to, {target}, is kept)", file=sys.stderr)
        return 0
    doomed = root / f"{STAGING_PREFIX}{path.name}.removing"
    path.rename(doomed)  # gone from the registry's view at once, then deleted
    shutil.rmtree(doomed)
    shutil.rmtree(root / f"{STAGING_PREFIX}{path.name}", ignore_errors=True)
    print(f"removed {path.name}", file=sys.stderr)
    return 0


def cmd_info(a, store: Store) -> int:
    path = _find(store, a.name)
    info = describe(path, loaded_models(store.admin_socket))
    src = checkpoints.read_json(path / checkpoints.SOURCE_FILE)
    info["files"] = len(src.get("files", [])) or sum(1 for f in path.rglob("*") if f.is_file())
    rc = 0
    if a.verify:
        from .pull import RemoteFile, verify

        if not src.get("files"):
            info["verified"] = "no recorded hashes (not installed by `models pull`)"
        else:
            problems = verify(path, [RemoteFile(**f) for f in src["files"]])
            info["verified"] = problems or "ok"
            rc = 1 if problems else 0
    print(json.dumps(info, indent=2))
    return rc


def run(a, admin_socket: str) -> int:
    store = Store.from_args(a, admin_socket)
    if not_a_directory(store.root):
        raise UsageError(f"models_dir {store.root} is not a directory")
    if a.models_cmd == "pull":
        from .pull import PullError, pull

        try:
            path = pull(a.name, store.root, source=a.source, revision=a.revision, if_missing=a.if_missing)
        except PullError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted: run the same command again to resume", file=sys.stderr)
            return 130
        print(path)
        return 0
    return {"list": cmd_list, "remove": cmd_remove, "info": cmd_info}[a.models_cmd](a, store)
