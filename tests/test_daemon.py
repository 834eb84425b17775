"""The daemon as a process: activation, idle exit, re-activation, robustness, admin auth.

Every test here runs the real ``qwen3ttsd`` on a tiny checkpoint over real Unix sockets.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from qwen3ttsd import protocol as P
from qwen3ttsd.client import Client
from qwen3ttsd.errors import TTSError

from .helpers import DAEMON, PY, NotifyListener, daemon_env, pid_alive, start_daemon, synth, wait_for

pytestmark = pytest.mark.slow

ACTIVATE = shutil.which("systemd-socket-activate")


@pytest.fixture(scope="module")
def daemon(tiny_models, tmp_path_factory):
    """A long-lived self-bound daemon (not activated) shared by the robustness tests."""
    rt = tmp_path_factory.mktemp("rt")
    env = daemon_env(tiny_models["custom_voice"], rt / "state", idle_timeout=-1, conn_idle_timeout=30)
    p = start_daemon(rt, env)
    # warm it up so timing-sensitive tests do not pay the model load
    synth(rt / "tts.sock", text="Warm up.", voice="ryan", max_frames=2)
    yield rt, p
    p.terminate()
    p.wait(30)


# --- activation ------------------------------------------------------------------------


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate not installed")
def test_systemd_socket_activate_names_queue_notify_idle_exit(tiny_models, tmp_path):
    rt = tmp_path / "rt"
    rt.mkdir()
    notify = NotifyListener(tmp_path / "notify")
    env = daemon_env(tiny_models["custom_voice"], tmp_path / "state", idle_timeout=1.5)
    env["NOTIFY_SOCKET"] = notify.path
    cmd = [ACTIVATE, "-l", str(rt / "tts.sock"), "-l", str(rt / "admin.sock"), "--fdname=tts:admin",
           "-E", "NOTIFY_SOCKET", *sum((["-E", k] for k in env if k.startswith("QWEN3TTSD_")), []),
           "-E", "HF_HUB_OFFLINE", "-E", "OMP_NUM_THREADS", *DAEMON]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (rt / "tts.sock").exists() and (rt / "admin.sock").exists(), 20, what="sockets")
        # Five clients connect while the daemon is still importing torch / loading the model.
        results: list = [None] * 5

        def client(i: int) -> None:
            try:
                results[i] = synth(rt / "tts.sock", text=f"Queued request {i}.", voice="ryan", max_frames=3)
            except Exception as e:  # noqa: BLE001
                results[i] = e

        threads = [threading.Thread(target=client, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        with Client(str(rt / "admin.sock")) as c:
            status = c.call("admin.status", {})
        for r in results:
            assert isinstance(r, tuple), r
            assert r[0]["frames"] == 3 and len(r[1]) == 3 * 1920 * 2
        assert status["sockets"]["tts"] == {"fd": 3, "identified_by": "name"}
        assert status["sockets"]["admin"] == {"fd": 4, "identified_by": "name"}
        assert status["rss_bytes"] > 200 * 2 ** 20  # torch + model resident while running
        pid = status["pid"]
        assert pid == p.pid  # systemd-socket-activate execs the daemon in place
        # idle exit: no requests and no connections for 1.5 s
        assert p.wait(60) == 0
        assert not pid_alive(pid)  # all its memory went back to the host
        msgs = notify.poll()
        ready = next(i for i, m in enumerate(msgs) if "READY=1" in m)
        stopping = next(i for i, m in enumerate(msgs) if "STOPPING=1" in m)
        assert ready < stopping
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in msgs)
        # the socket nodes survive the daemon (never unlinked; 3.13 cleanup_socket trap)
        assert (rt / "tts.sock").exists() and (rt / "admin.sock").exists()
        err = p.stderr.read().decode()
        assert "exiting (idle)" in err
        assert p.stdout.read() == b""  # nothing, not even qwen-tts's banner, on stdout
    finally:
        if p.poll() is None:
            p.kill()
        notify.close()


def _activated(rt: Path, env: dict) -> subprocess.Popen:
    cmd = [ACTIVATE, "-l", str(rt / "tts.sock"), "-l", str(rt / "admin.sock"), "--fdname=tts:admin",
           *sum((["-E", k] for k in env if k.startswith("QWEN3TTSD_")), []),
           "-E", "HF_HUB_OFFLINE", "-E", "OMP_NUM_THREADS", *DAEMON]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: (rt / "tts.sock").exists() and (rt / "admin.sock").exists(), 20, what="sockets")
    return p


def _loaded(rt: Path) -> list[str]:
    with Client(str(rt / "admin.sock")) as c:
        return list(c.call("admin.status", {})["loaded"])


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate not installed")
def test_a_caller_on_the_speech_socket_starts_the_model_load_at_once(tiny_models, tmp_path):
    """Overlap (issue 19): a connection on tts.sock is a caller about to speak, so the model
    loads while its request is still being written and read; an admin caller loads nothing."""
    rt = tmp_path / "rt"
    rt.mkdir()
    p = _activated(rt, daemon_env(tiny_models["custom_voice"], tmp_path / "state", idle_timeout=30))
    try:
        with socket.socket(socket.AF_UNIX) as caller:
            caller.connect(str(rt / "tts.sock"))  # connected, nothing sent yet
            wait_for(lambda: _loaded(rt) == ["custom_voice"], 60, what="the model loaded before any request")
    finally:
        p.kill()
        p.wait(30)
    rt2 = tmp_path / "rt2"
    rt2.mkdir()
    p = _activated(rt2, daemon_env(tiny_models["custom_voice"], tmp_path / "state", idle_timeout=30))
    try:
        assert _loaded(rt2) == []  # woken by an admin caller
        time.sleep(1.0)
        assert _loaded(rt2) == []
    finally:
        p.kill()
        p.wait(30)


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate not installed")
def test_activation_without_fdnames_falls_back_to_socket_address(tiny_models, tmp_path):
    rt = tmp_path / "rt"
    rt.mkdir()
    env = daemon_env(tiny_models["custom_voice"], tmp_path / "state", idle_timeout=0.5)
    cmd = [ACTIVATE, "-l", str(rt / "admin.sock"), "-l", str(rt / "tts.sock"),  # admin first
           *sum((["-E", k] for k in env if k.startswith("QWEN3TTSD_")), []), *DAEMON]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (rt / "admin.sock").exists() and (rt / "tts.sock").exists(), 20, what="sockets")
        with Client(str(rt / "admin.sock")) as c:
            st = c.call("admin.status", {})
        assert st["sockets"]["admin"] == {"fd": 3, "identified_by": "address"}
        assert st["sockets"]["tts"] == {"fd": 4, "identified_by": "address"}
        assert st["torch_imported"] is False  # admin-only wake-ups do not load torch
        with Client(str(rt / "tts.sock")) as c, pytest.raises(TTSError) as ei:
            c.call("admin.status", {})
        assert ei.value.code == "forbidden"
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()


def test_the_default_engine_serves_without_transformers_qwen_tts_or_librosa(tiny_models, tmp_path):
    """Issue 19: the batched engine on its own weights (the default) loads a CustomVoice or
    VoiceDesign checkpoint itself (a Base one too: tests/test_speaker_encoder.py, test_codec_encoder.py)."""
    models = tiny_models["custom_voice"].parent
    env = daemon_env("", tmp_path / "state", idle_timeout=60, models_dir=models, default_model="custom_voice",
                     max_loaded_models=3)
    env.pop("QWEN3TTSD_MODEL")
    rt = tmp_path / "rt"
    p = start_daemon(rt, env)
    try:
        res, audio, _ = synth(rt / "tts.sock", text="Lean and quick.", voice="ryan", max_frames=3)
        assert res["frames"] == 3 and len(audio) == 3 * 1920 * 2
        synth(rt / "tts.sock", text="Designed.", model="voice_design", instructions="a calm voice", max_frames=2)
        with Client(str(rt / "admin.sock")) as c:
            st = c.call("admin.status", {})
        assert st["torch_imported"] is True and st["heavy_imports"] == []
        assert st["loaded"]["custom_voice"]["weights"] == "own"
        assert set(st["loaded"]["custom_voice"]["memory_bytes"]) == {"text_embedding", "talker", "code_predictor",
                                                                     "codec", "int8"}   # the CPU default
    finally:
        p.terminate()
        p.wait(30)
    assert p.stdout.read() == b""  # nothing on stdout


def test_listen_env_is_cleared_for_children(tiny_models, tmp_path):
    from qwen3ttsd.daemon.activation import listen_fds

    a, b = socket.socketpair()
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "tts"}
    assert listen_fds(env) == {}  # not for us
    assert not any(k.startswith("LISTEN_") for k in env)
    a.close()
    b.close()


def test_reactivation_load_test_loses_nothing(tiny_models, tmp_path):
    """Streaming requests spread around the 1 s idle threshold: the daemon exits and is
    re-spawned by the activator several times; every request completes."""
    rt = tmp_path / "rt"
    env = daemon_env(tiny_models["custom_voice"], tmp_path / "state", idle_timeout=1.0)
    act = subprocess.Popen([PY, "-m", "qwen3ttsd.activator", "--runtime-dir", str(rt), "--", *DAEMON],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (rt / "tts.sock").exists(), 20, what="activator sockets")
        rng = random.Random(7)
        failures: list = []
        done: list = []

        def one(tag: str) -> None:
            try:
                res, audio, _ = synth(rt / "tts.sock", text=f"Request {tag}.", voice="ryan",
                                      max_frames=2, format="pcm16")
                assert res["frames"] == 2 and len(audio) == 2 * 1920 * 2
                done.append(tag)
            except Exception as e:  # noqa: BLE001
                failures.append((tag, repr(e)))

        # Waves of 3 concurrent streams; the gaps straddle the idle threshold, so some
        # requests land while the daemon is deciding to exit or has just exited.
        gaps = [0.3, 2.2, 0.9, 2.5, 1.05, 2.2, 0.5]  # three clearly past the threshold
        for wave, gap in enumerate(gaps):
            threads = [threading.Thread(target=one, args=(f"{wave}-{i}",)) for i in range(3)]
            for t in threads:
                t.start()
                time.sleep(rng.uniform(0.0, 0.3))
            for t in threads:
                t.join(300)
            time.sleep(gap)
        assert failures == []
        assert len(done) == 21
    finally:
        act.terminate()
        err = act.communicate(timeout=60)[1].decode()
    spawns = err.count("spawned daemon")
    assert spawns >= 3, err[-2000:]
    assert "exited with 0" in err


# --- robustness --------------------------------------------------------------------------


def _raw(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(str(path))
    return s


def _read_msg(s: socket.socket):
    return P.read_frame_sync(s, P.MAX_RESPONSE_FRAME)


def test_bad_frames_get_clean_errors_while_another_stream_continues(daemon):
    rt, proc = daemon
    sock = rt / "tts.sock"
    long_result: dict = {}

    def long_stream() -> None:
        long_result["r"] = synth(sock, text="A long and steady stream of speech.", voice="vivian",
                                 max_frames=60, chunk_frames=1, seed=3)

    t = threading.Thread(target=long_stream)
    t.start()
    time.sleep(0.5)

    # 1. oversized frame: rejected from the header alone, this connection only is closed
    s = _raw(sock)
    s.sendall(struct.pack(">I", 0xFFFFFFF0) + b"x" * 16)
    msg = _read_msg(s)
    assert msg[0] == P.NOTIFICATION and msg[1] == "$/error" and msg[2][0]["code"] == "frame_too_large"
    assert _read_msg(s) is None
    s.close()
    # 2. garbage body
    s = _raw(sock)
    s.sendall(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1")
    msg = _read_msg(s)
    assert msg[1] == "$/error" and msg[2][0]["code"] == "protocol_error"
    s.close()
    # 3. valid msgpack, not a request; then an unknown method; then bad params - same connection
    s = _raw(sock)
    s.sendall(P.pack([9, 9]))
    assert _read_msg(s)[1] == "$/error"
    s.sendall(P.request(5, "tts.explode", {}))
    msg = _read_msg(s)
    assert msg[:2] == [P.RESPONSE, 5] and msg[2]["code"] == "no_such_method" and msg[3] is None
    s.sendall(P.request(6, "tts.synthesize", {"text": ""}))
    msg = _read_msg(s)
    assert msg[1] == 6 and msg[2]["code"] == "bad_request"
    s.sendall(P.pack([0, 7, "tts.synthesize", ["not", "a", "map"]]))
    assert _read_msg(s)[2]["code"] == "bad_request"
    s.sendall(P.request(8, "tts.synthesize", {"text": "x", "format": "wma"}))
    assert _read_msg(s)[2]["code"] == "bad_request"
    s.sendall(P.request(9, "tts.synthesize", {"text": "x", "voice": "nobody"}))
    assert _read_msg(s)[2]["code"] == "bad_request"
    s.sendall(P.request(10, "tts.synthesize", {"text": "x", "ref_audio": "http://169.254.169.254/x"}))
    assert _read_msg(s)[2]["code"] in ("bad_request", "unsupported")
    s.sendall(P.pack([0, 11, "rpc.hello", [{}]]))
    assert _read_msg(s)[3]["proto"] == 1  # the connection is still good
    s.close()
    # 4. deep nesting and a huge declared array
    s = _raw(sock)
    body = b"\x91" * 5000 + b"\xc0"
    s.sendall(struct.pack(">I", len(body)) + body)
    assert _read_msg(s)[1] == "$/error"
    s.close()
    s = _raw(sock)
    body = b"\xdd\x7f\xff\xff\xff"
    s.sendall(struct.pack(">I", len(body)) + body)
    assert _read_msg(s)[1] == "$/error"
    s.close()
    # 5. truncated frame then hang up
    s = _raw(sock)
    s.sendall(struct.pack(">I", 100) + b"\x93")
    s.close()

    t.join(120)
    res, audio, events = long_result["r"]
    assert res["frames"] == 60 and len(audio) == 60 * 1920 * 2
    assert proc.poll() is None


def test_disconnect_and_cancel_stop_generation(daemon):
    rt, proc = daemon
    # disconnect mid-stream
    c = Client(str(rt / "tts.sock"))
    it = c.synthesize(text="Disconnect me.", voice="ryan", max_frames=400, chunk_frames=1)
    n = 0
    for ev in it:
        if ev.kind == "chunk":
            n += 1
            if n == 3:
                break
    c.close()
    with Client(str(rt / "admin.sock")) as a:
        wait_for(lambda: a.call("admin.status", {})["active_streams"] == 0 and
                 a.call("admin.status", {})["queue_len"] == 0, 10, what="stream cancelled")
    # explicit $/cancel
    s = _raw(rt / "tts.sock")
    s.sendall(P.request(1, "tts.synthesize", {"text": "Cancel me.", "voice": "ryan", "max_frames": 400,
                                               "chunk_frames": 1}))
    chunks = 0
    while True:
        msg = _read_msg(s)
        if msg[0] == P.NOTIFICATION and msg[1] == P.N_CHUNK:
            chunks += 1
            if chunks == 3:
                s.sendall(P.notification(P.N_CANCEL, [1]))
        elif msg[0] == P.RESPONSE:
            assert msg[1] == 1 and msg[2]["code"] == "cancelled"
            break
    assert chunks < 20
    s.close()
    # the GPU is free again right away
    t0 = time.monotonic()
    res, _, _ = synth(rt / "tts.sock", text="Next.", voice="ryan", max_frames=2)
    assert res["frames"] == 2 and time.monotonic() - t0 < 10


def test_short_request_is_not_stuck_behind_a_long_one(daemon):
    rt, _ = daemon
    finished: dict = {}

    def run(name: str, text: str, frames: int) -> None:
        synth(rt / "tts.sock", text=text, voice="ryan", max_frames=frames)
        finished[name] = time.monotonic()

    long_text = " ".join(f"Sentence number {i} of a long narration." for i in range(8))
    tl = threading.Thread(target=run, args=("long", long_text, 25))
    tl.start()
    time.sleep(0.8)
    run("short", "Quick reply.", 2)
    tl.join(300)
    assert finished["short"] < finished["long"]


def test_seeded_requests_are_deterministic(daemon):
    rt, _ = daemon
    a = synth(rt / "tts.sock", text="Same seed. Same audio.", voice="serena", seed=42, max_frames=6)[1]
    b = synth(rt / "tts.sock", text="Same seed. Same audio.", voice="serena", seed=42, max_frames=6)[1]
    c = synth(rt / "tts.sock", text="Same seed. Same audio.", voice="serena", seed=43, max_frames=6)[1]
    assert a == b and a != c


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another uid")
def test_admin_socket_refuses_non_admin_uid(daemon):
    rt, _ = daemon
    for d in [rt, *rt.parents]:  # pytest's temp dirs are 0700: let 'nobody' reach the sockets
        if d == Path("/tmp") or d == d.parent:
            break
        os.chmod(d, 0o755)
    for n in ("tts.sock", "admin.sock"):
        os.chmod(rt / n, 0o666)  # let filesystem permissions through: SO_PEERCRED must refuse
    code = f"""
import os
from qwen3ttsd.client import Client  # import while still root: nobody cannot read the stdlib here
from qwen3ttsd.errors import TTSError
os.setgroups([]); os.setgid(65534); os.setuid(65534)
with Client({str(rt / 'admin.sock')!r}) as c:
    print('hello-admin', c.call('rpc.hello', {{}})['admin'])
    try:
        c.call('admin.status', {{}})
        print('status-allowed')
    except TTSError as e:
        print('status', e.code)
    try:
        c.call('admin.shutdown', {{}})
    except TTSError as e:
        print('shutdown', e.code)
with Client({str(rt / 'tts.sock')!r}) as c:
    print('voices', len(c.call('voices.list', {{}})['speakers']))
"""
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 0, r.stderr
    assert "hello-admin False" in r.stdout
    assert "status forbidden" in r.stdout and "shutdown forbidden" in r.stdout
    assert "voices 9" in r.stdout  # the data socket still serves this uid
    with Client(str(rt / "admin.sock")) as c:  # root is allowed
        assert c.call("admin.status", {})["state"] in ("ready", "idle")


def test_admin_methods(daemon, tmp_path):
    rt, _ = daemon
    with Client(str(rt / "admin.sock")) as c:
        st = c.call("admin.status", {})
        assert st["state"] == "ready" and st["idle_exit_in_s"] is None
        # the codec's kernels were built for every batch shape once the warm-up request ended
        wait_for(lambda: c.call("admin.status", {})["loaded"]["custom_voice"]["backend"]["codec_prewarm"]["done"], 60,
                 what="codec prewarm")
        pw = c.call("admin.status", {})["loaded"]["custom_voice"]["backend"]["codec_prewarm"]
        assert pw["built"] == pw["shapes"] > 1
        ka = c.call("admin.keepalive", {"seconds": 5})
        assert ka["keepalive_s"] == 5
        cl = c.call("admin.cache.list", {})
        assert cl["models"][0]["bytes"] > 1_000_000
        assert c.call("admin.unload", {})["unloaded"] == ["custom_voice"]
        assert c.call("admin.status", {})["state"] == "idle"
        info = c.call("admin.load", {"model": "custom_voice"})
        assert info["device"] == "cpu"
        with pytest.raises(TTSError) as ei:
            c.call("admin.load", {"model": "nope"})
        assert ei.value.code == "not_found"
        assert c.call("admin.cache.clear", {"what": "prompts"})["cleared_prompts"] == 0


def test_preload_then_sigterm_drains_streams(tiny_models, tmp_path):
    """--preload: READY=1 only after the model is loaded (heart-beating EXTEND_TIMEOUT_USEC);
    SIGTERM lets an in-flight stream finish before exiting 0."""
    rt = tmp_path / "rt"
    notify = NotifyListener(tmp_path / "notify")
    env = daemon_env(tiny_models["custom_voice"], tmp_path / "state", idle_timeout=-1)
    env["NOTIFY_SOCKET"] = notify.path
    p = start_daemon(rt, env, "--preload")
    try:
        wait_for(lambda: any("READY=1" in m for m in notify.poll()), 120, what="READY")
        msgs = notify.poll()
        ready = next(i for i, m in enumerate(msgs) if "READY=1" in m)
        assert any("EXTEND_TIMEOUT_USEC=" in m for m in msgs[:ready])
        assert "ready: custom_voice" in msgs[ready]  # the model was loaded before READY
        result: dict = {}

        def stream() -> None:
            result["r"] = synth(rt / "tts.sock", text="Finish me.", voice="ryan", max_frames=40, chunk_frames=1)

        t = threading.Thread(target=stream)
        t.start()
        time.sleep(0.5)
        p.send_signal(15)
        t.join(120)
        assert result["r"][0]["frames"] == 40 and len(result["r"][1]) == 40 * 1920 * 2
        assert p.wait(60) == 0
        assert any("STOPPING=1" in m for m in notify.poll())
    finally:
        if p.poll() is None:
            p.kill()
        notify.close()


def test_session_requests_continue_one_codec_stream_in_order(daemon):
    """Requests sharing a session run in order and continue the codec state: the second
    request decodes differently (it has the first one's context) but deterministically."""
    rt, _ = daemon
    kw = dict(voice="ryan", max_frames=4, chunk_frames=1)
    plain = synth(rt / "tts.sock", text="Second part.", seed=2, **kw)[1]
    results: dict = {}

    def run(name: str, text: str, seed: int, session: str) -> None:
        results[name] = (time.monotonic(), synth(rt / "tts.sock", text=text, seed=seed, session=session, **kw)[1])

    for sess in ("call-a", "call-b"):
        t1 = threading.Thread(target=run, args=(sess + "1", "First part.", 1, sess))
        t2 = threading.Thread(target=run, args=(sess + "2", "Second part.", 2, sess))
        t1.start()
        time.sleep(0.05)
        t2.start()  # queued while the first still runs: must wait for it
        t1.join(60)
        t2.join(60)
    a2, b2 = results["call-a2"][1], results["call-b2"][1]
    assert a2 == b2  # same history, same seed -> same audio
    assert a2 != plain and len(a2) == len(plain)  # continued stream, not a fresh decode
    assert results["call-a1"][0] <= results["call-a2"][0]


def test_iso_language_codes_route_like_names(daemon):
    """'en' and 'en-US' are English to the daemon too, not an unsupported language."""
    rt, _ = daemon
    req = dict(text="Language by code.", voice="ryan", seed=5, max_frames=4)
    named = synth(rt / "tts.sock", language="english", **req)[1]
    assert synth(rt / "tts.sock", language="en", **req)[1] == named
    assert synth(rt / "tts.sock", language="en-US", **req)[1] == named
    with pytest.raises(TTSError) as e:
        synth(rt / "tts.sock", language="xx", **req)
    assert e.value.code == "bad_request"
