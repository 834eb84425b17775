"""Wire protocol: framing, limits, and the shared client - no torch involved."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from qwen3ttsd import protocol as P
from qwen3ttsd.errors import CODES, TTSError


def _reader(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    r.feed_eof()
    return r


def test_roundtrip_messages():
    async def go():
        data = P.request(7, "tts.synthesize", {"text": "hi", "audio": b"\x00\x01"}) + \
            P.response(7, None, {"ok": True}) + P.notification("tts.chunk", [7, 0, {"audio": b"x"}])
        r = _reader(data)
        a = await P.read_frame(r, 1024)
        b = await P.read_frame(r, 1024)
        c = await P.read_frame(r, 1024)
        assert await P.read_frame(r, 1024) is None
        return a, b, c

    a, b, c = asyncio.run(go())
    assert P.parse_request(a) == (7, "tts.synthesize", {"text": "hi", "audio": b"\x00\x01"})
    assert b == [1, 7, None, {"ok": True}]
    assert c == [2, "tts.chunk", [7, 0, {"audio": b"x"}]]


def test_oversized_frame_rejected_from_header():
    async def go():
        return await P.read_frame(_reader(struct.pack(">I", 10_000)), 1000)

    with pytest.raises(P.ProtocolError) as ei:
        asyncio.run(go())
    assert ei.value.code == "frame_too_large"


@pytest.mark.parametrize("body", [
    b"\xc1", b"\x93\x01", b"\xdd\x7f\xff\xff\xff", b"\x91" * 3000 + b"\xc0",
    b"\xc6\x7f\xff\xff\xff", b"\x81\x01\x02",  # bin32 claiming 2 GB; int map key (strict)
])
def test_malformed_bodies_raise_protocol_error(body):
    with pytest.raises(P.ProtocolError):
        P.unpack_body(body, 4096)


def test_fuzz_only_protocol_errors():
    """Random bodies: each is refused as a ProtocolError (not msgpack) or a TTSError (not a
    request), never anything else; the fuzz reaches both layers."""
    rng = random.Random(0)
    outcomes = {"not_msgpack": 0, "not_a_request": 0, "request": 0}
    for _ in range(3000):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        try:
            msg = P.unpack_body(body, 4096)
        except P.ProtocolError:
            outcomes["not_msgpack"] += 1
            continue
        try:
            P.parse_request(msg)
        except TTSError as e:
            assert e.code in CODES
            outcomes["not_a_request"] += 1
        else:
            outcomes["request"] += 1
    assert outcomes["not_msgpack"] > 0 and outcomes["not_a_request"] > 0
    assert sum(outcomes.values()) == 3000


@pytest.mark.parametrize("msg", [
    [0, -1, "m", [{}]], [0, 2 ** 32, "m", [{}]], [0, 1, 5, [{}]], [1, 1, None, None],
    [0, 1, "m", [1, 2]], [0, 1, "m", "x"], "nope", [0, True, "m", [{}]],
])
def test_parse_request_rejects(msg):
    with pytest.raises(TTSError):
        P.parse_request(msg)


def test_error_objects():
    e = TTSError("busy", "queue full")
    assert e.to_wire() == {"code": "busy", "message": "queue full", "retryable": True}
    assert TTSError.from_wire(e.to_wire()).code == "busy"
    assert TTSError("made-up", "x").code == "internal"
    assert all(400 <= s < 600 for s, _ in CODES.values())


def test_admin_check_root_own_uid_and_group(monkeypatch):
    import grp
    import os
    import pwd

    from qwen3ttsd.daemon import server

    class G:
        gr_gid = 4242

    monkeypatch.setattr(grp, "getgrnam",
                        lambda name: G if name == "qwen3tts-admin" else (_ for _ in ()).throw(KeyError(name)))
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: type("P", (), {"pw_name": f"user{uid}"}))
    monkeypatch.setattr(os, "getgrouplist", lambda name, gid: [gid, 4242] if name == "user2000" else [gid])
    assert server.is_admin(0, 0, "qwen3tts-admin")
    assert server.is_admin(os.getuid(), 0, "qwen3tts-admin")
    assert server.is_admin(1000, 4242, "qwen3tts-admin")          # primary group
    assert server.is_admin(2000, 100, "qwen3tts-admin")           # supplementary member
    assert not server.is_admin(3000, 100, "qwen3tts-admin")
    assert not server.is_admin(3000, 100, "no-such-group")
