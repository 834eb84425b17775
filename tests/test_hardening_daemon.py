"""Hostile and careless clients against the real daemon (tiny model, real Unix sockets):
each finding of the hardening review, reproduced first, then kept fixed."""

from __future__ import annotations

import math
import os
import socket
import stat
import time

import pytest

from qwen3ttsd import protocol as P
from qwen3ttsd.client import Client
from qwen3ttsd.errors import TTSError

from .helpers import daemon_env, pid_alive, start_daemon, synth, wait_for
from .test_daemon import _raw, _read_msg

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def daemon(tiny_models, tmp_path_factory):
    rt = tmp_path_factory.mktemp("rt")
    env = daemon_env(tiny_models["custom_voice"], rt / "state", idle_timeout=-1)
    p = start_daemon(rt, env)
    synth(rt / "tts.sock", text="Warm up.", voice="ryan", max_frames=2)
    yield rt, p
    p.terminate()
    p.wait(30)


def test_nil_body_gets_error_and_the_connection_stays_open(daemon):
    rt, _ = daemon
    s = _raw(rt / "tts.sock")
    s.sendall(P.pack(None))
    msg = _read_msg(s)
    assert msg[:2] == [P.NOTIFICATION, "$/error"] and msg[2][0]["code"] == "protocol_error"
    s.sendall(P.request(3, "rpc.hello", {}))
    assert _read_msg(s)[3]["proto"] == 1
    s.close()


@pytest.mark.parametrize("field, value", [
    ("sample_rate", math.nan), ("sample_rate", math.inf), ("seed", math.inf), ("seed", -math.inf),
    ("max_frames", math.nan), ("speed", math.nan), ("temperature", math.inf), ("top_k", 2.5),
    ("sample_rate", 16000.5), ("seed", 1e300), ("chunk_frames", -math.inf),
])
def test_non_finite_and_fractional_numbers_are_bad_request(daemon, field, value):
    rt, proc = daemon
    with Client(str(rt / "tts.sock")) as c:
        with pytest.raises(TTSError) as ei:
            for _ in c.synthesize(**{"text": "Numbers.", "voice": "ryan", "max_frames": 2, field: value}):
                pass
    assert getattr(ei.value, "code", None) == "bad_request", ei.value
    assert proc.poll() is None


def test_stalled_client_is_cut_off_and_the_daemon_then_idles_out(tiny_models, tmp_path):
    """A client that stops reading is disconnected after stall_timeout (not merely
    cancelled), so the daemon can exit while the client still holds its socket."""
    rt = tmp_path / "rt"
    env = daemon_env(tiny_models["custom_voice"], tmp_path / "state", idle_timeout=1.5,
                     stall_timeout=2, conn_idle_timeout=60)
    p = start_daemon(rt, env)
    try:
        s = _raw(rt / "tts.sock")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(P.request(1, "tts.synthesize", {"text": "Never read. " * 40, "voice": "ryan",
                                                   "max_frames": 3000, "format": "f32",
                                                   "sample_rate": 48000, "chunk_frames": 8}))
        # never read: the daemon must give up on us and exit although we keep the socket open
        wait_for(lambda: p.poll() is not None, 60, what="daemon exit after cutting off the stalled client")
        assert p.returncode == 0
        s.settimeout(5)
        got = b""
        try:
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                got += b
        except (ConnectionResetError, socket.timeout):
            pass
        s.close()
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def test_saved_voices_are_private_whatever_the_umask(tiny_models, tmp_path):
    import io

    import numpy as np
    import soundfile as sf

    rt = tmp_path / "rt"
    state = tmp_path / "state"
    env = daemon_env(tiny_models["base"], state, idle_timeout=-1)
    old = os.umask(0)  # the daemon inherits a permissive umask (activator, Docker)
    try:
        p = start_daemon(rt, env)
    finally:
        os.umask(old)
    try:
        t = np.arange(24000 * 2) / 24000
        buf = io.BytesIO()
        sf.write(buf, (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 24000, format="WAV")
        with Client(str(rt / "tts.sock")) as c:
            c.call("voices.add", {"name": "private", "audio": buf.getvalue(), "ref_text": "x", "consent": "t"})
        for path in [state / "voices", *(state / "voices").rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o077 == 0, (path, oct(mode))
    finally:
        p.terminate()
        p.wait(30)


def test_daemon_survives_and_idles_out_after_every_kind_of_ending(tiny_models, tmp_path):
    """Invariant: once every client is gone and nothing is queued, the daemon exits within
    idle_timeout + 1 s - after completed, cancelled, failed, disconnected and warm-up calls."""
    rt = tmp_path / "rt"
    idle = 1.5
    env = daemon_env(tiny_models["custom_voice"], tmp_path / "state", idle_timeout=idle)
    p = start_daemon(rt, env)
    try:
        sock = rt / "tts.sock"
        synth(sock, text="Done.", voice="ryan", max_frames=2)                     # completed
        with Client(str(sock)) as c:                                              # warm-up
            c.call("tts.warmup", {"voice": "ryan"})
        with Client(str(sock)) as c:                                              # failed
            with pytest.raises(TTSError):
                c.call("tts.synthesize", {"text": "x", "voice": "nobody"})
        s = _raw(sock)                                                            # cancelled
        s.sendall(P.request(1, "tts.synthesize", {"text": "Cancel.", "voice": "ryan", "max_frames": 400}))
        while _read_msg(s)[1] != P.N_CHUNK:
            pass
        s.sendall(P.notification(P.N_CANCEL, [1]))
        while _read_msg(s)[0] != P.RESPONSE:
            pass
        s.close()
        s = _raw(sock)                                                            # hung up mid-stream
        s.sendall(P.request(1, "tts.synthesize", {"text": "Hang up.", "voice": "ryan", "max_frames": 400}))
        while _read_msg(s)[1] != P.N_CHUNK:
            pass
        s.close()
        gone = time.monotonic()
        wait_for(lambda: p.poll() is not None, idle + 15, what="idle exit")
        # the last stream stops within a frame or so of the hang-up; then idle_timeout + 1 s
        assert time.monotonic() - gone < idle + 1 + 3
        assert p.returncode == 0 and not pid_alive(p.pid)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)


# --- the daemon socket: hello, consent, replace (issue 21 item 14) --------------------------


def _ref_wav() -> bytes:
    import io

    import numpy as np
    import soundfile as sf

    t = np.arange(24000 * 2) / 24000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 24000, format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize("params", [{"proto": -1}, {"proto": 2 ** 40}, {"proto": "1"}, {"client": "x" * 5000},
                                    {"client": 7}])
def test_hello_is_checked_against_its_declared_bounds(daemon, params):
    rt, proc = daemon
    with Client(str(rt / "tts.sock")) as c:
        with pytest.raises(TTSError) as ei:
            c.call("rpc.hello", params)
        assert ei.value.code in ("bad_request", "payload_too_large"), ei.value
        assert c.call("rpc.hello", {"proto": 1, "client": "test"})["proto"] == 1
    assert proc.poll() is None


@pytest.mark.parametrize("consent", [None, "", "   "])
def test_voices_add_needs_consent_on_the_socket_too(daemon, consent):
    rt, _ = daemon
    params = {"name": "noconsent", "audio": _ref_wav(), "ref_text": "x"}
    if consent is not None:
        params["consent"] = consent
    with Client(str(rt / "tts.sock")) as c:
        with pytest.raises(TTSError) as ei:
            c.call("voices.add", params)
        assert ei.value.code == "bad_request" and (ei.value.data or {}).get("param") == "consent"
        assert "noconsent" not in [v["name"] for v in c.call("voices.list", {})["clones"]]


def test_voices_add_refuses_to_replace_unless_asked(daemon):
    rt, _ = daemon
    add = {"name": "twice", "audio": _ref_wav(), "ref_text": "first", "consent": "recorded 2026-12-05"}
    with Client(str(rt / "tts.sock")) as c:
        c.call("voices.add", add)
        with pytest.raises(TTSError) as ei:
            c.call("voices.add", dict(add, ref_text="second"))
        assert ei.value.code == "conflict" and ei.value.http_status == 409
        assert {v["name"]: v["ref_text"] for v in c.call("voices.list", {})["clones"]}["twice"] == "first"
        c.call("voices.add", dict(add, ref_text="second", replace=True))
        assert {v["name"]: v["ref_text"] for v in c.call("voices.list", {})["clones"]}["twice"] == "second"


def test_a_model_removed_from_disk_is_not_found_without_its_path(tiny_models, tmp_path):
    """Not loaded, then deleted (``models remove``): a clear not_found (HTTP 404) naming the
    model and what to do, not a retryable internal error with an absolute path (item 13)."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_models["custom_voice"], models / "custom_voice")
    rt = tmp_path / "rt"
    env = daemon_env("", tmp_path / "state", idle_timeout=-1, models_dir=models)
    p = start_daemon(rt, env)
    try:
        shutil.rmtree(models / "custom_voice")
        with Client(str(rt / "tts.sock")) as c:
            for model in ("custom_voice", None):
                with pytest.raises(TTSError) as ei:
                    for _ in c.synthesize(text="Gone.", voice="ryan", max_frames=2,
                                          **({"model": model} if model else {})):
                        pass
                e = ei.value
                assert e.code == "not_found" and e.http_status == 404 and not e.retryable, e
                assert str(tmp_path) not in e.message and "custom_voice" in e.message, e.message
        assert p.poll() is None
    finally:
        p.terminate()
        p.wait(30)


def test_a_stalled_client_that_reads_again_gets_client_stalled(tiny_models, tmp_path):
    """The daemon frees a stalled connection, but not silently: the error response is queued
    behind the unread audio, so a client that reads again gets its audio and then
    ``client_stalled`` (item 15); the daemon still idles out while the socket stays open."""
    rt = tmp_path / "rt"
    env = daemon_env(tiny_models["custom_voice"], tmp_path / "state", idle_timeout=1.5,
                     stall_timeout=2, conn_idle_timeout=60)
    p = start_daemon(rt, env)
    try:
        synth(rt / "tts.sock", text="Warm up.", voice="ryan", max_frames=2)  # the stall starts at once
        s = _raw(rt / "tts.sock")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(P.request(1, "tts.synthesize", {"text": "Read late. " * 20, "voice": "ryan",
                                                   "max_frames": 200, "format": "f32",
                                                   "sample_rate": 48000, "chunk_frames": 8}))
        time.sleep(3.5)  # the daemon gives up on us after 2 s
        s.settimeout(5)
        deadline = time.monotonic() + 30
        response = None
        while time.monotonic() < deadline and (msg := _read_msg(s)) is not None:
            if msg[0] == P.RESPONSE:
                response = msg
                break
        assert response is not None and response[1] == 1 and response[2]["code"] == "client_stalled", response
        assert _read_msg(s) is None  # then the daemon hangs up
        s.close()
        wait_for(lambda: p.poll() is not None, 30, what="idle exit")
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)


@pytest.mark.parametrize("gone", [True, False])
def test_a_client_hanging_up_mid_answer_is_not_logged_as_a_failure(caplog, gone):
    """Found by a user test: ordinary hang-ups (a caller closing while its request was being
    answered) filled the daemon's log with "handler tts.synthesize failed" tracebacks
    (BrokenPipe on the 'queued' progress). A connection error on a closed connection is a
    hang-up (logged at INFO); on an open one it is still a failure, answered and logged."""
    import asyncio
    import logging
    from types import SimpleNamespace

    from qwen3ttsd.daemon.server import Server

    sent: list[bytes] = []

    async def handler(conn, msgid, method, params):
        raise BrokenPipeError(32, "Broken pipe")

    async def send(data: bytes, timeout: float | None = None) -> None:
        sent.append(data)

    srv = Server.__new__(Server)
    srv.handler, srv.touch = handler, lambda: None
    conn = SimpleNamespace(closed=gone, writer=SimpleNamespace(is_closing=lambda: gone), early_text={},
                           active=False, send=send)
    with caplog.at_level(logging.INFO, logger="qwen3ttsd"):
        asyncio.run(srv._run_handler(conn, 1, "tts.synthesize", {}))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    if gone:
        assert not errors and not sent and "went away" in caplog.text
    else:
        assert errors and len(sent) == 1


def test_an_unknown_voice_on_a_base_only_install_is_a_clear_not_found(tiny_models, tmp_path):
    """Only a Base checkpoint installed: a voice that is neither saved nor anyone's speaker
    was 'no custom_voice model is installed (run models pull ...)', as if pulling a model
    were the fix. It is a voice that does not exist."""
    rt = tmp_path / "rt"
    p = start_daemon(rt, daemon_env(tiny_models["base"], tmp_path / "state", idle_timeout=-1, prewarm=0))
    try:
        with pytest.raises(TTSError) as e:
            synth(rt / "tts.sock", text="Hello.", voice="nobody", max_frames=2)
        assert e.value.code == "not_found" and "'nobody' does not exist" in e.value.message
        assert "saved clone voices: []" in e.value.message
    finally:
        p.terminate()
        p.wait(30)
