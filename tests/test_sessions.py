"""Call sessions: a phone call's requests run in order and continue one codec stream.
In-process, no torch: the ordering record must never point at a request that never runs."""

from __future__ import annotations

import asyncio

import pytest

from qwen3ttsd.daemon.job import CallSlot, Job
from qwen3ttsd.daemon.scheduler import Scheduler
from qwen3ttsd.daemon.sessions import CallSessions
from qwen3ttsd.errors import TTSError

from .test_scheduler import MODEL, fake_registry


def scheduler(queue_max: int) -> Scheduler:
    return Scheduler(fake_registry()[0], queue_max=queue_max)


def _job(loop: asyncio.AbstractEventLoop, text: str) -> Job:
    return Job(model=MODEL, segments=[text], request={"language": "english", "speaker": "ryan"}, loop=loop)


def test_a_refused_request_does_not_hold_up_the_calls_next_one():
    """The 'busy' hole: a request recorded as the call's last one and then refused by a full
    queue never finishes, so the call's next request waited for it until its queue timeout."""
    async def go() -> None:
        loop = asyncio.get_running_loop()
        sessions = CallSessions()
        s = scheduler(queue_max=0)  # every submit: busy
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
        s: Scheduler = scheduler(queue_max=8)
        try:
            a, b, other = _job(loop, "a."), _job(loop, "b."), _job(loop, "c.")
            for j, sid in ((a, "call"), (b, "call"), (other, "other")):
                sessions.submit(s, j, sid)
            assert b.after is a and a.after is None and other.after is None
            assert a.session is b.session and other.session is not a.session
            sessions.drop_decoders()
            assert a.session == CallSlot(codec=None)
        finally:
            s.stop()

    asyncio.run(go())


def test_old_calls_expire(monkeypatch):
    class Queue:
        def submit(self, job: Job) -> int:
            return 1

    def call(sid: str, now: float) -> None:
        monkeypatch.setattr("qwen3ttsd.daemon.sessions.time.monotonic", lambda: now)
        sessions.submit(Queue(), _job(loop, "x."), sid)  # type: ignore[arg-type]

    loop = asyncio.new_event_loop()
    sessions = CallSessions(max_calls=2, expiry_s=600)
    for sid in ("a", "b", "c"):
        call(sid, now=0.0)
    assert sessions.ids() == ["b", "c"]
    call("d", now=1000.0)
    assert sessions.ids() == ["d"]
    loop.close()
