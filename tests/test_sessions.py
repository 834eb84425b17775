"""Call sessions: a phone call's requests run in order and continue one codec stream.
In-process, no torch: the ordering record must never point at a request that never runs."""

from __future__ import annotations

import asyncio

import pytest

from qwen3ttsd.daemon.scheduler import Job, Scheduler
from qwen3ttsd.daemon.sessions import CallSessions
from qwen3ttsd.errors import TTSError

from .test_scheduler import MODEL, FakeRegistry, FakeScheduler


def _job(loop: asyncio.AbstractEventLoop, text: str) -> Job:
    return Job(model=MODEL, segments=[text], request={"language": "english", "speaker": "ryan"}, loop=loop)


def test_a_refused_request_does_not_hold_up_the_calls_next_one():
    """The 'busy' hole: a request recorded as the call's last one and then refused by a full
    queue never finishes, so the call's next request waited for it until its queue timeout."""
    async def go() -> None:
        loop = asyncio.get_running_loop()
        sessions = CallSessions()
        s = FakeScheduler(FakeRegistry(), queue_max=0, engine="sequential")  # every submit: busy
        try:
            refused = _job(loop, "refused.")
            with pytest.raises(TTSError):
                sessions.submit(s, refused, "call-1")
            nxt = _job(loop, "next.")
            s.queue_max = 8
            sessions.submit(s, nxt, "call-1")
            assert nxt.after is None  # not chained behind the request that never ran
        finally:
            s.stop()

    asyncio.run(go())


def test_requests_chain_and_share_the_codec_slot():
    async def go() -> None:
        loop = asyncio.get_running_loop()
        sessions = CallSessions()
        s: Scheduler = FakeScheduler(FakeRegistry(), queue_max=8, engine="sequential")
        try:
            a, b, other = _job(loop, "a."), _job(loop, "b."), _job(loop, "c.")
            for j, sid in ((a, "call"), (b, "call"), (other, "other")):
                sessions.submit(s, j, sid)
            assert b.after is a and a.after is None and other.after is None
            assert a.session is b.session and other.session is not a.session
            sessions.drop_decoders()
            assert a.session == {"decoder": None}
        finally:
            s.stop()

    asyncio.run(go())


def test_old_calls_expire():
    sessions = CallSessions(max_calls=2, expiry_s=600)
    for sid in ("a", "b", "c"):
        sessions.slot_for(sid, now=0.0)
    assert sessions.ids() == ["b", "c"]
    sessions.slot_for("d", now=1000.0)
    assert sessions.ids() == ["d"]
