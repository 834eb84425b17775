"""``qwen3tts-ctl install-service`` into a temporary root: the written units carry this
installation's paths and verify cleanly; the sysusers/tmpfiles entries work; the config is
never overwritten; an installed wheel carries the templates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from qwen3ttsd.cli.install_service import UNITS, closed_dirs

from .helpers import PY

REPO = Path(__file__).resolve().parents[1]
ANALYZE = shutil.which("systemd-analyze")


def install(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3TTSD_")}
    return subprocess.run([PY, "-m", "qwen3ttsd.cli", "install-service", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture()
def root(tmp_path):
    r = install("--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    return tmp_path


def test_units_point_at_this_installation_and_verify(root):
    unit_dir = root / "usr/lib/systemd/system"
    assert sorted(p.name for p in unit_dir.iterdir()) == sorted(UNITS)
    scripts = Path(sysconfig.get_path("scripts"))
    assert f"ExecStart={scripts / 'qwen3ttsd'}\n" in (unit_dir / "qwen3ttsd.service").read_text()
    assert f"ExecStart={scripts / 'qwen3tts-bridge'}\n" in (unit_dir / "qwen3tts-bridge.service").read_text()
    # An interpreter under /root or /home (pyenv, pipx) must stay visible to the service.
    in_home = os.path.realpath(sys.executable).startswith(("/home/", "/root/"))
    for u in UNITS:  # the rest is the template, unchanged
        template = (REPO / "systemd" / u).read_text()
        if in_home:
            template = template.replace("ProtectHome=yes", "ProtectHome=read-only")
        written = (unit_dir / u).read_text()
        assert [a for a in template.splitlines() if not a.startswith("ExecStart=")] == \
               [b for b in written.splitlines() if not b.startswith("ExecStart=")]
    if ANALYZE:
        r = subprocess.run([ANALYZE, "verify", "--man=no", *sorted(map(str, unit_dir.iterdir()))],
                           capture_output=True, text=True, cwd=unit_dir)
        assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
    example = (REPO / "contrib" / "qwen3ttsd.toml.example").read_text()
    assert (root / "etc/qwen3ttsd/qwen3ttsd.toml").read_text() == example


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("systemd-sysusers"), reason="needs root to chown")
def test_sysusers_and_tmpfiles_entries_apply(root):
    (root / "etc").mkdir(exist_ok=True)
    for cmd in (["systemd-sysusers", f"--root={root}", str(root / "usr/lib/sysusers.d/qwen3ttsd.conf")],
                ["systemd-tmpfiles", f"--root={root}", "--create", str(root / "usr/lib/tmpfiles.d/qwen3ttsd.conf")]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    users = {line.split(":")[0]: line.split(":")[2] for line in (root / "etc/passwd").read_text().splitlines()}
    models = root / "var/lib/qwen3ttsd/models"
    assert models.is_dir() and str(models.stat().st_uid) == users["qwen3tts"]
    assert "qwen3tts-admin:" in (root / "etc/group").read_text()
    groups = {line.split(":")[0]: line.split(":")[2] for line in (root / "etc/group").read_text().splitlines()}
    cfg = (root / "etc/qwen3ttsd/qwen3ttsd.toml").stat()
    assert (cfg.st_uid, str(cfg.st_gid), cfg.st_mode & 0o777) == (0, groups["qwen3tts"], 0o640)


def test_config_is_kept_and_dry_run_writes_nothing(root, tmp_path_factory):
    cfg = root / "etc/qwen3ttsd/qwen3ttsd.toml"
    cfg.write_text("[daemon]\nidle_timeout = 60\n")
    r = install("--root", str(root))
    assert r.returncode == 0 and f"keep {cfg}" in r.stderr
    assert cfg.read_text() == "[daemon]\nidle_timeout = 60\n"
    empty = tmp_path_factory.mktemp("dry")
    r = install("--root", str(empty), "--dry-run")
    assert r.returncode == 0 and list(empty.iterdir()) == []
    assert "[dry-run] run systemctl enable --now qwen3ttsd.socket qwen3ttsd-admin.socket " \
           "qwen3tts-bridge.service" in r.stderr


def test_venv_in_a_home_directory_stays_reachable(tmp_path):
    r = install("--root", str(tmp_path), "--bin-dir", "/home/ann/my venv/bin")
    assert r.returncode == 0, r.stderr
    svc = (tmp_path / "usr/lib/systemd/system/qwen3ttsd.service").read_text()
    assert 'ExecStart="/home/ann/my venv/bin/qwen3ttsd"\n' in svc
    assert "ProtectHome=read-only" in svc and "ProtectHome=yes" not in svc


def test_package_build_carries_the_unit_templates(tmp_path):
    """What setuptools puts in the wheel (build_py: packages + package data)."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", ".models", ".run", "__pycache__", "tests", "bench"))
    r = subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
                        "--build-lib", str(tmp_path / "lib")], cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for f in (REPO / "systemd").iterdir():
        assert (tmp_path / "lib/qwen3ttsd/systemd" / f.name).read_text() == f.read_text(), f.name


def test_directories_the_service_users_cannot_enter_are_reported(tmp_path):
    home = tmp_path / "home" / "ann"
    (home / "venv" / "bin").mkdir(parents=True)
    home.chmod(0o700)
    assert str(home) in closed_dirs([str(home / "venv/bin/qwen3ttsd")])
    home.chmod(0o755)
    assert str(home) not in closed_dirs([str(home / "venv/bin/qwen3ttsd")])


# --- hostile or odd paths (issue 21 item 12) ------------------------------------------------


@pytest.mark.parametrize("bin_dir, why", [
    ("/opt/q\nExecStartPre=/bin/sh -c id/bin", "control character"),
    ("/opt/q\x1b/bin", "control character"),
    ('/opt/a"b/bin', "systemd cannot run"),
    ("/opt/a\\b/bin", "systemd cannot run"),
    ("/opt/a'b/bin", "systemd cannot run"),
    ("venv/bin", "absolute"),
    ("/opt/q/../bin", "normalized"),
])
def test_unsafe_bin_dir_is_refused_and_nothing_is_written(tmp_path, bin_dir, why):
    r = install("--root", str(tmp_path), "--bin-dir", bin_dir)
    assert r.returncode == 1 and why in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_unsafe_root_is_refused(tmp_path):
    r = install("--root", str(tmp_path / "a\nb"))
    assert r.returncode == 1 and "control character" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not ANALYZE, reason="systemd-analyze not installed")
def test_specifier_and_dollar_paths_survive_unit_syntax(tmp_path):
    bin_dir = tmp_path / "v 100%$HOME;x" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("qwen3ttsd", "qwen3tts-bridge"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    root = tmp_path / "root"
    r = install("--root", str(root), "--bin-dir", str(bin_dir))
    assert r.returncode == 0, r.stderr
    unit_dir = root / "usr/lib/systemd/system"
    assert f'ExecStart="{str(bin_dir).replace("%", "%%")}/qwen3ttsd"\n' in (unit_dir / "qwen3ttsd.service").read_text()
    # verify resolves the executable: a wrongly quoted path would be "not executable"
    r = subprocess.run([ANALYZE, "verify", "--man=no", *sorted(map(str, unit_dir.iterdir()))],
                       capture_output=True, text=True, cwd=unit_dir)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stdout + r.stderr


def test_a_planted_symlink_at_the_temp_name_is_never_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    unit_dir = tmp_path / "root/usr/lib/systemd/system"
    unit_dir.mkdir(parents=True)
    for u in UNITS:  # the names a fixed temp file would use
        (unit_dir / f".{u}.tmp").symlink_to(victim)
    r = install("--root", str(tmp_path / "root"))
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "precious\n"
    assert all((unit_dir / u).is_file() and not (unit_dir / u).is_symlink() for u in UNITS)
    assert not [p for p in unit_dir.iterdir() if p.name.startswith(".") and not p.is_symlink()]


def test_config_that_may_hold_the_api_key_is_not_world_readable(root):
    cfg = root / "etc/qwen3ttsd/qwen3ttsd.toml"
    assert cfg.stat().st_mode & 0o777 == 0o640
    assert (root / "usr/lib/systemd/system/qwen3ttsd.service").stat().st_mode & 0o777 == 0o644
    # the service users read it through their group, set by the tmpfiles entry
    tmpfiles = (root / "usr/lib/tmpfiles.d/qwen3ttsd.conf").read_text()
    assert "z /etc/qwen3ttsd/qwen3ttsd.toml 0640 root qwen3tts -" in tmpfiles


def test_a_file_as_root_is_a_one_line_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    r = install("--root", str(afile))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: --root {afile} is not a directory"


def test_gpus_install_template_units_and_a_front_over_their_sockets(tmp_path):
    r = install("--root", str(tmp_path), "--gpus", "0,1")
    assert r.returncode == 0, r.stderr
    unit_dir = tmp_path / "usr/lib/systemd/system"
    for u in ("qwen3ttsd@.socket", "qwen3ttsd-admin@.socket", "qwen3ttsd@.service"):
        assert (unit_dir / u).is_file()
    svc = (unit_dir / "qwen3ttsd@.service").read_text()
    assert "CUDA_VISIBLE_DEVICES=%i" in svc and "QWEN3TTSD_RUNTIME_DIR=/run/qwen3ttsd-gpu%i" in svc
    assert "ListenStream=/run/qwen3ttsd-gpu%i/tts.sock" in (unit_dir / "qwen3ttsd@.socket").read_text()
    # the per-GPU service is the single-daemon one (same hardening) but for the instance lines
    base = (REPO / "systemd" / "qwen3ttsd.service").read_text().splitlines()
    own = [ln for ln in svc.splitlines() if ln not in base and not ln.startswith(("ExecStart=", "ProtectHome="))]
    assert all("%i" in ln or ln.startswith("#") for ln in own), own
    rendered = ("#", "ExecStart=", "ProtectHome=")
    assert [ln for ln in base if ln not in svc.splitlines() and not ln.startswith(rendered)] == [
        "Description=Qwen3-TTS speech daemon", "Requires=qwen3ttsd.socket qwen3ttsd-admin.socket",
        "After=qwen3ttsd.socket qwen3ttsd-admin.socket", "Sockets=qwen3ttsd.socket qwen3ttsd-admin.socket"]
    dropin = (unit_dir / "qwen3ttsd.service.d/upstream.conf").read_text()
    assert ("QWEN3TTSD_UPSTREAM=unix:///run/qwen3ttsd-gpu0/tts.sock,unix:///run/qwen3ttsd-gpu1/tts.sock"
            in dropin) and "QWEN3TTSD_ENGINE=upstream" in dropin
    assert "enable --now qwen3ttsd@0.socket qwen3ttsd-admin@0.socket qwen3ttsd@1.socket" in r.stderr
    if ANALYZE:
        units = [str(unit_dir / u) for u in ("qwen3ttsd@0.socket", "qwen3ttsd@0.service")]
        for u in ("qwen3ttsd@.socket", "qwen3ttsd-admin@.socket", "qwen3ttsd@.service"):
            shutil.copy(unit_dir / u, unit_dir / u.replace("@.", "@0."))
        shutil.copy(unit_dir / "qwen3ttsd-admin@.socket", unit_dir / "qwen3ttsd-admin@0.socket")
        v = subprocess.run([ANALYZE, "verify", "--man=no", *units], capture_output=True, text=True, cwd=unit_dir)
        assert v.returncode == 0, v.stdout + v.stderr
    assert install("--root", str(tmp_path), "--gpus", "0,x").returncode == 1
