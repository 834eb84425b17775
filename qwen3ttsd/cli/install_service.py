"""``qwen3tts-ctl install-service``: the systemd service for *this* installation, in one command.

The unit templates ship inside the package (``qwen3ttsd/systemd``, which ``./systemd`` links
to), so an installed wheel has them. They say ``ExecStart=/usr/bin/qwen3ttsd``; this writes
them with the real paths of the running installation (its venv's ``qwen3ttsd`` and
``qwen3tts-bridge``), plus the sysusers and tmpfiles entries and, if absent,
``/etc/qwen3ttsd/qwen3ttsd.toml``. Then it creates the user, reloads systemd and enables the
two sockets and the bridge (never ``qwen3ttsd.service``: the sockets start it).

``--root DIR`` is for packaging: files go under DIR in the vendor locations
(``/usr/lib/systemd/system``, ``/usr/lib/sysusers.d``, ``/usr/lib/tmpfiles.d``) and nothing
is run. ``--dry-run`` prints what would be written and run.

It runs as root and writes where systemd reads, so a path that cannot go into a unit as
written (a newline would add unit lines; systemd runs no program whose path holds a quote or
a backslash) is refused, never escaped into something else; each file is written through a
fresh temp file and renamed into place (a planted symlink is never followed); and the config,
which may hold the bridge's ``api_key``, is 0640 (group ``qwen3tts`` via the tmpfiles entry).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..atomic_file import replace_file
from .common import not_a_directory

UNITS = ("qwen3ttsd.socket", "qwen3ttsd-admin.socket", "qwen3ttsd.service", "qwen3tts-bridge.service")
ENABLE = ("qwen3ttsd.socket", "qwen3ttsd-admin.socket", "qwen3tts-bridge.service")
PROGRAMS = ("qwen3ttsd", "qwen3tts-bridge")
# --gpus: one daemon per GPU (template units, instance = GPU index) behind the front daemon,
# which becomes engine=upstream over their sockets (a drop-in; docs/scale-out.md)
GPU_UNITS = ("qwen3ttsd@.socket", "qwen3ttsd-admin@.socket", "qwen3ttsd@.service")
GPU_SOCKET = "/run/qwen3ttsd-gpu{}/tts.sock"
FRONT_DROPIN = "qwen3ttsd.service.d/upstream.conf"
HOME_DIRS = ("/home/", "/root/", "/run/user/")  # hidden from the units by ProtectHome=yes
EXEC_UNSAFE = "\"'\\"  # systemd refuses these in an ExecStart= program name (string_is_safe)
UNIT_MODE = 0o644
CONFIG_MODE = 0o640  # may hold [bridge] api_key; the tmpfiles entry gives it to group qwen3tts


class InstallError(Exception):
    pass


@dataclass(frozen=True)
class Layout:
    unit_dir: str
    sysusers: str
    tmpfiles: str
    config: str = "/etc/qwen3ttsd/qwen3ttsd.toml"


ADMIN = Layout("/etc/systemd/system", "/etc/sysusers.d/qwen3ttsd.conf", "/etc/tmpfiles.d/qwen3ttsd.conf")
VENDOR = Layout("/usr/lib/systemd/system", "/usr/lib/sysusers.d/qwen3ttsd.conf", "/usr/lib/tmpfiles.d/qwen3ttsd.conf")


def template(name: str) -> str:
    return (resources.files("qwen3ttsd") / "systemd" / name).read_text()


def checked_path(path: str, what: str, *, executable: bool = False) -> str:
    """``path`` if it can go into a unit file as written; else an ``InstallError`` saying why.

    A control character (a newline would start a new unit line) is refused everywhere;
    an executable's path must also be absolute and normalized, and free of ``"``, ``'`` and
    ``\\``, which systemd refuses in an executable's name whatever the quoting."""
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in path):
        raise InstallError(f"{what} {path!r} contains a control character")
    if not executable:
        return path
    if not os.path.isabs(path):
        raise InstallError(f"{what} {path!r} is not an absolute path")
    if os.path.normpath(path) != path.rstrip("/"):
        raise InstallError(f"{what} {path!r} is not normalized (write {os.path.normpath(path)!r})")
    if bad := sorted(set(path) & set(EXEC_UNSAFE)):
        raise InstallError(f"{what} {path!r} contains {' '.join(bad)}: systemd cannot run a program "
                           "from such a path; install into a directory without them")
    return path


def programs(bin_dir: str | None = None) -> dict[str, str]:
    """Absolute paths of this installation's entry points (``bin_dir`` overrides, for packaging)."""
    if bin_dir:
        checked_path(bin_dir, "--bin-dir", executable=True)
    out = {}
    for name in PROGRAMS:
        if bin_dir:
            out[name] = str(Path(bin_dir) / name)
            continue
        p = Path(sysconfig.get_path("scripts")) / name
        found = str(p) if os.access(p, os.X_OK) else shutil.which(name)
        if not found:
            raise InstallError(f"{name} is not installed next to this qwen3tts-ctl "
                               f"({p.parent}) nor on PATH: pip install 'qwen3ttsd[daemon]' first")
        out[name] = checked_path(os.path.abspath(found), f"this installation's {name}", executable=True)
    return out


def _exec_path(path: str) -> str:
    """A checked path in ExecStart= syntax: ``%`` doubled (specifiers), quoted if it has spaces.
    ``$`` needs nothing: systemd expands variables in arguments, never in the program's name."""
    path = path.replace("%", "%%")
    return f'"{path}"' if re.search(r"\s", path) else path


def render_unit(text: str, exes: dict[str, str]) -> str:
    text = re.sub(r"^ExecStart=/usr/bin/(\S+)", lambda m: "ExecStart=" + _exec_path(exes[m[1]]),
                  text, flags=re.M)
    if any(p.startswith(HOME_DIRS) for p in _runtime_paths(exes)):
        # A venv under a home directory must stay visible to the service.
        text = text.replace("ProtectHome=yes", "ProtectHome=read-only")
    return text


def _runtime_paths(exes: dict[str, str]) -> list[str]:
    paths = [*exes.values()]
    for exe in exes.values():
        try:
            first = Path(exe).read_bytes()[:256].split(b"\n", 1)[0]
        except OSError:
            continue
        if first.startswith(b"#!"):  # the venv's interpreter and what it links to
            interp = first[2:].decode(errors="replace").strip().split()[0]
            paths += [interp, os.path.realpath(interp)]
    return paths


def closed_dirs(paths: list[str]) -> list[str]:
    """Directories on the way to ``paths`` that other users cannot enter: the bridge runs as
    a dynamic user and the daemon as qwen3tts, so neither could start from there."""
    closed = []
    for p in paths:
        for d in list(Path(p).parents)[::-1]:
            try:
                if not d.stat().st_mode & 0o001 and str(d) not in closed:
                    closed.append(str(d))
            except OSError:
                break
    return closed


def parse_gpus(spec: str | None) -> list[int]:
    """``0,1,3`` -> [0, 1, 3]; an InstallError for anything else."""
    if not spec:
        return []
    try:
        gpus = [int(x) for x in spec.split(",")]
    except ValueError:
        raise InstallError(f"--gpus {spec!r}: a comma-separated list of GPU indexes (0,1,...)") from None
    if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise InstallError(f"--gpus {spec!r}: indexes must be distinct and >= 0")
    return gpus


def front_dropin(gpus: list[int]) -> str:
    """The front daemon in front of the per-GPU daemons: no model of its own, their sockets
    as its upstreams (a drop-in beats qwen3ttsd.env's Environment and the TOML file)."""
    ups = ",".join("unix://" + GPU_SOCKET.format(g) for g in gpus)
    return ("# Written by qwen3tts-ctl install-service --gpus: this daemon fronts one daemon per GPU.\n"
            f"[Unit]\nWants={' '.join(f'qwen3ttsd@{g}.socket' for g in gpus)}\n\n"
            f"[Service]\nEnvironment=QWEN3TTSD_ENGINE=upstream QWEN3TTSD_UPSTREAM={ups}\n")


def plan(layout: Layout, exes: dict[str, str], gpus: list[int] | None = None) -> list[tuple[str, str, bool, int]]:
    """(path, content, replace existing, mode) for every file to write."""
    files = [(f"{layout.unit_dir}/{u}", render_unit(template(u), exes), True, UNIT_MODE) for u in UNITS]
    if gpus:
        files += [(f"{layout.unit_dir}/{u}", render_unit(template(u), exes), True, UNIT_MODE) for u in GPU_UNITS]
        files.append((f"{layout.unit_dir}/{FRONT_DROPIN}", front_dropin(gpus), True, UNIT_MODE))
    files += [(layout.sysusers, template("qwen3ttsd.sysusers.conf"), True, UNIT_MODE),
              (layout.tmpfiles, template("qwen3ttsd.tmpfiles.conf"), True, UNIT_MODE),
              (layout.config, template("qwen3ttsd.toml.example"), False, CONFIG_MODE)]
    return files


def commands(layout: Layout, gpus: list[int] | None = None) -> list[list[str]]:
    per_gpu = [f"{u}@{g}.socket" for g in gpus or [] for u in ("qwen3ttsd", "qwen3ttsd-admin")]
    return [["systemd-sysusers", layout.sysusers], ["systemd-tmpfiles", "--create", layout.tmpfiles],
            ["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", *per_gpu, *ENABLE]]


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def write_file(dest: Path, content: str, mode: int) -> None:
    """Write ``dest`` whole or not at all: a fresh temp file next to it (``mkstemp``:
    O_CREAT|O_EXCL|O_NOFOLLOW, a random name, so a planted file or symlink is never
    written through), its mode set before any content, then one rename over ``dest``
    (which replaces a symlink there instead of following it)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    replace_file(dest, content.encode("utf-8"), mode, sync=True)


def install(root: str | None = None, dry_run: bool = False, bin_dir: str | None = None,
            out=sys.stderr, gpus: str | None = None) -> int:
    gpu_list = parse_gpus(gpus)
    if root:
        root = os.path.abspath(checked_path(root, "--root"))
        if not_a_directory(root):
            raise InstallError(f"--root {root} is not a directory")
    exes = programs(bin_dir)
    layout = VENDOR if root else ADMIN
    base = Path(root or "/")
    run_them = not root and not dry_run
    if run_them and os.geteuid() != 0:
        raise InstallError("installing the service needs root: sudo "
                           f"{_exec_path(sys.argv[0] if os.path.isabs(sys.argv[0]) else 'qwen3tts-ctl')}"
                           " install-service (or --dry-run / --root DIR)")
    if run_them and not Path("/run/systemd/system").is_dir():
        raise InstallError("systemd is not running on this host (a container?): use "
                           "`qwen3tts-bridge --activate` instead, or --root DIR to only write the files")
    tag = "[dry-run] " if dry_run else ""
    for path, content, replace, mode in plan(layout, exes, gpu_list):
        dest = _under(base, path)
        if dest.exists() and not replace:
            print(f"{tag}keep {dest} (exists)", file=out)
            continue
        print(f"{tag}write {dest}", file=out)
        if not dry_run:
            write_file(dest, content, mode)
    print(f"{tag}ExecStart: {exes['qwen3ttsd']}, {exes['qwen3tts-bridge']}", file=out)
    if not bin_dir and (closed := closed_dirs(_runtime_paths(exes))):
        print(f"warning: the service users cannot enter {', '.join(closed)} (mode o-x): install into a venv "
              "outside home directories (e.g. /opt/qwen3ttsd) or chmod o+x them", file=out)
    for cmd in commands(layout, gpu_list):
        if not run_them:
            print(f"{'[dry-run] ' if dry_run else '[skipped under --root] '}run {' '.join(cmd)}", file=out)
            continue
        print(f"run {' '.join(cmd)}", file=out)
        r = subprocess.run(cmd)
        if r.returncode != 0:
            raise InstallError(f"{' '.join(cmd)} failed with exit code {r.returncode}")
    if run_them:
        ctl = Path(exes["qwen3ttsd"]).with_name("qwen3tts-ctl")
        print("\nqwen3ttsd is installed: the bridge serves http://127.0.0.1:8880 and the daemon starts on "
              f"the first request.\nNext: sudo {ctl} models pull 1.7b-customvoice; add admins to the "
              "qwen3tts-admin group; settings in /etc/qwen3ttsd/qwen3ttsd.toml.", file=out)
    return 0
