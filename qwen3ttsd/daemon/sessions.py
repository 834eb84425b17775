"""Call sessions: the requests of one phone call run in order and continue one codec stream.

Each call (a ``session`` id) keeps its codec slot - the streaming decoder the next request
continues, so the joins are sample-continuous - and its last request, which the next one
waits for. A request becomes the call's last only once the scheduler has accepted it: a
request refused at the door (``busy``) never runs, so nothing may wait for it. Calls that
have been quiet for ``expiry_s`` or that exceed ``max_calls`` are forgotten (their codec
state is all they hold).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from .job import CallSlot, Job
from .scheduler import Scheduler

MAX_CALLS = 512
EXPIRY_S = 600.0


@dataclass
class _Call:
    slot: CallSlot = field(default_factory=CallSlot)  # shared with the call's jobs
    last: Job | None = None
    used: float = 0.0


class CallSessions:
    def __init__(self, max_calls: int = MAX_CALLS, expiry_s: float = EXPIRY_S) -> None:
        self.max_calls = max_calls
        self.expiry_s = expiry_s
        self._calls: OrderedDict[str, _Call] = OrderedDict()

    def submit(self, scheduler: Scheduler, job: Job, session: str | None) -> int:
        """Queue ``job`` (after the call's previous request, on its codec stream); returns the
        queue position. Raises what ``scheduler.submit`` raises, leaving the call as it was."""
        if not session:
            return scheduler.submit(job)
        call = self._touch(session, time.monotonic())
        previous = call.last
        job.session = call.slot
        job.after = previous if previous is not None and not previous.done else None
        position = scheduler.submit(job)   # may raise busy: then the call's last is unchanged
        call.last = job
        return position

    def drop_decoders(self) -> None:
        """A model is being unloaded: no call may pin its decoder."""
        for call in self._calls.values():
            call.slot.codec = None

    def ids(self) -> list[str]:
        return list(self._calls)

    def _touch(self, session: str, now: float) -> _Call:
        call = self._calls.pop(session, None) or _Call()
        call.used = now
        self._calls[session] = call
        while self._calls and (len(self._calls) > self.max_calls or
                               now - next(iter(self._calls.values())).used > self.expiry_s):
            self._calls.popitem(last=False)
        return call
