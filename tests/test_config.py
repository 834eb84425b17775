"""Settings precedence: command line > environment > TOML > defaults."""

from __future__ import annotations

import pytest

from qwen3ttsd import config


def test_precedence(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[daemon]\nidle_timeout = 60\nqueue_max = 5\n[bridge]\nport = 9000\nhost = "0.0.0.0"\n')
    env = {"QWEN3TTSD_CONFIG": str(toml), "QWEN3TTSD_QUEUE_MAX": "7", "QWEN3TTSD_PRELOAD": "yes",
           "QWEN3TTS_BRIDGE_PORT": "9100", "QWEN3TTSD_RUNTIME_DIR": "/tmp/q"}
    d = config.load(config.DaemonConfig, "daemon", {"idle_timeout": 5.0, "device": None}, env=env)
    assert (d.idle_timeout, d.queue_max, d.preload, d.device) == (5.0, 7, True, "auto")
    assert d.tts_socket == "/tmp/q/tts.sock" and d.admin_socket == "/tmp/q/admin.sock"
    b = config.load(config.BridgeConfig, "bridge", {}, env=env)
    assert (b.port, b.host, b.tts_socket) == (9100, "0.0.0.0", "/tmp/q/tts.sock")


def test_unknown_keys_are_errors(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[daemon]\nidle_timeot = 60\n")
    with pytest.raises(ValueError, match="idle_timeot"):
        config.load(config.DaemonConfig, "daemon", env={"QWEN3TTSD_CONFIG": str(toml)})
