"""The voice store on disk: a failed save leaves nothing and says why; names are not
silently replaced; the voice index the bridge reads follows every change (issue 21 items
9 and 14, issue 20 item 10). In-process, no daemon, no model."""

from __future__ import annotations

import errno
import json
import os
import stat

import numpy as np
import pytest

from qwen3ttsd.daemon import voices as voices_mod
from qwen3ttsd.daemon.voices import VoiceStore
from qwen3ttsd.errors import TTSError
from qwen3ttsd.voice_index import INDEX_NAME, read_index, write_index

WAV = (0.1 * np.sin(np.arange(24000) / 10)).astype(np.float32)


def leftovers(store: VoiceStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EDQUOT])
@pytest.mark.parametrize("failing", ["ref.wav", "meta.json"])
def test_a_save_the_disk_refuses_is_storage_full_and_leaves_nothing(tmp_path, monkeypatch, code, failing):
    store = VoiceStore(tmp_path)
    store.add("kept", WAV, "hi", {"consent": "y"})
    real = voices_mod._write_private

    def write(path, data):
        if path.name == failing:
            real(path, data[: len(data) // 2])  # a partial file, as a full disk leaves it
            raise OSError(code, os.strerror(code))
        real(path, data)

    monkeypatch.setattr(voices_mod, "_write_private", write)
    with pytest.raises(TTSError) as ei:
        store.add("big", WAV, "hi", {"consent": "y"})
    assert ei.value.code == "storage_full" and not ei.value.retryable and ei.value.http_status == 507
    assert leftovers(store) == [] and not store.exists("big")
    with pytest.raises(TTSError):  # a replace that fails keeps the old voice
        store.add("kept", WAV, "new", {"consent": "y"}, replace=True)
    assert store.get("kept")[1]["ref_text"] == "hi" and leftovers(store) == []


def test_other_write_errors_leave_nothing_either(tmp_path, monkeypatch):
    store = VoiceStore(tmp_path)

    def write(path, data):
        raise PermissionError(errno.EACCES, "denied")

    monkeypatch.setattr(voices_mod, "_write_private", write)
    with pytest.raises(PermissionError):
        store.add("x", WAV, "", {})
    assert leftovers(store) == []


def test_temp_folders_a_crash_left_are_swept_at_start(tmp_path):
    store = VoiceStore(tmp_path)
    store.add("v", WAV, "", {})
    (store.root / ".v.tmp").mkdir()
    (store.root / ".v.tmp" / "ref.wav").write_bytes(b"half")
    assert leftovers(VoiceStore(tmp_path)) == [] and VoiceStore(tmp_path).exists("v")


def test_a_taken_name_is_a_conflict_unless_replaced(tmp_path):
    store = VoiceStore(tmp_path)
    store.add("v", WAV, "one", {})
    with pytest.raises(TTSError) as ei:
        store.add("v", WAV, "two", {})
    assert ei.value.code == "conflict" and ei.value.http_status == 409
    assert store.get("v")[1]["ref_text"] == "one"
    store.add("v", WAV, "two", {}, replace=True)
    assert store.get("v")[1]["ref_text"] == "two" and leftovers(store) == []


def test_the_voice_index_follows_every_change(tmp_path):
    assert read_index(tmp_path) is None  # no daemon ever ran here
    store = VoiceStore(tmp_path)
    store.add("grandpa", WAV, "secret words", {"consent": "y", "model": "base-0b6"})
    store.add("aunt", WAV, "", {})
    index = read_index(tmp_path)
    assert index is not None and [(e.id, e.name) for e in index] == [("aunt", "aunt"), ("grandpa", "grandpa")]
    assert index[1].model == "base-0b6" and index[1].created > 0
    raw = (tmp_path / INDEX_NAME).read_text()
    assert "secret words" not in raw and "consent" not in raw  # names only: no transcripts
    assert stat.S_IMODE((tmp_path / INDEX_NAME).stat().st_mode) == 0o640
    store.remove("aunt")
    assert [e.id for e in read_index(tmp_path) or []] == ["grandpa"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_the_index_is_rebuilt_when_the_daemon_starts(tmp_path):
    VoiceStore(tmp_path).add("old", WAV, "", {})
    (tmp_path / INDEX_NAME).unlink()  # saved by a daemon from before the index
    VoiceStore(tmp_path)
    assert [e.id for e in read_index(tmp_path) or []] == ["old"]


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'{"voices": 3}', b"{" * 10, b"x" * (2 << 20)])
def test_a_damaged_index_reads_as_unknown(tmp_path, raw):
    (tmp_path / INDEX_NAME).write_bytes(raw)
    assert read_index(tmp_path) is None


def test_index_entries_that_make_no_sense_are_skipped(tmp_path):
    (tmp_path / INDEX_NAME).write_text(json.dumps({"voices": [{"id": "ok", "created": "x"}, {"id": 5}, "s", {}]}))
    assert [(e.id, e.created) for e in read_index(tmp_path) or []] == [("ok", 0.0)]


def test_an_index_that_cannot_be_written_leaves_the_old_one(tmp_path, monkeypatch):
    write_index(tmp_path, [])
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    store = VoiceStore(tmp_path)
    store.add("v", WAV, "", {})  # the voice is saved; the index is stale (logged)
    assert store.exists("v") and read_index(tmp_path) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_wyoming_describe_lists_saved_voices_without_waking_the_daemon(tmp_path):
    """Home Assistant sees a voice saved a moment ago although the daemon has exited since:
    describe reads the index; nothing connects to the daemon's socket (issue 20 item 10)."""
    import asyncio
    import socket

    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe, Info

    from qwen3ttsd.bridge.facts import DaemonFacts
    from qwen3ttsd.bridge.wyoming import WyomingService
    from qwen3ttsd.config import BridgeConfig
    from qwen3ttsd.testing import free_port

    state = tmp_path / "state"
    VoiceStore(state).add("grandpa", WAV, "", {"consent": "y"})  # what the daemon did, before it exited
    (tmp_path / "rt").mkdir()
    listener = socket.socket(socket.AF_UNIX)  # the socket an activator would hold: never touched
    listener.bind(str(tmp_path / "rt" / "tts.sock"))
    listener.listen(8)
    listener.setblocking(False)

    async def go() -> Info:
        port = free_port()
        cfg = BridgeConfig(runtime_dir=str(tmp_path / "rt"), state_dir=str(state),
                           wyoming=f"tcp://127.0.0.1:{port}")
        service = WyomingService(cfg, DaemonFacts(cfg))
        await service.start()
        try:
            async with AsyncTcpClient("127.0.0.1", port) as c:
                await c.write_event(Describe().event())
                while (ev := await asyncio.wait_for(c.read_event(), 10)) is not None:
                    if Info.is_type(ev.type):
                        return Info.from_event(ev)
        finally:
            await service.stop()
        raise AssertionError("no info")

    info = asyncio.run(go())
    names = [v.name for v in info.tts[0].voices]
    assert "grandpa" in names and "ryan" in names
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()
