"""The shipped units must verify cleanly and stay hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "systemd"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")


@pytest.fixture()
def units(tmp_path):
    for f in UNITS.iterdir():
        if f.suffix in (".socket", ".service"):
            text = re.sub(r"^ExecStart=/usr/bin/\S+", "ExecStart=/bin/true", f.read_text(), flags=re.M)
            (tmp_path / f.name).write_text(text)
    return tmp_path


def test_verify_has_no_output(units):
    files = sorted(str(p) for p in units.iterdir())
    r = subprocess.run([ANALYZE, "verify", "--man=no", *files], capture_output=True, text=True, cwd=units)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


@pytest.mark.parametrize("unit, threshold", [("qwen3ttsd.service", 20), ("qwen3tts-bridge.service", 20)])
def test_security_exposure(units, unit, threshold):
    r = subprocess.run([ANALYZE, "security", "--offline=yes", f"--threshold={threshold}", str(units / unit)],
                       capture_output=True, text=True, cwd=units)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert "OK" in r.stdout.splitlines()[-1]


def test_daemon_unit_rules():
    svc = (UNITS / "qwen3ttsd.service").read_text()
    assert "RuntimeDirectory=" not in svc.replace("# No RuntimeDirectory=", "")
    assert "Type=notify" in svc and "Restart=no" in svc and "[Install]" not in svc
    assert "DeviceAllow=char-nvidiactl" in svc and "PrivateDevices=yes" not in svc
    for s in ("qwen3ttsd.socket", "qwen3ttsd-admin.socket"):
        text = (UNITS / s).read_text()
        assert "Accept=yes" not in text and "FileDescriptorName=" in text


@pytest.mark.parametrize("unit", ["qwen3ttsd.service", "qwen3tts-bridge.service"])
def test_fd_limit_is_raised_above_the_1024_default(unit):
    """~1,100 idle connections used up the bridge's 1,024 fds (issue 21 item 3)."""
    assert "\nLimitNOFILE=65536\n" in (UNITS / unit).read_text()
