"""Nice values for the engine's background threads, and the one call that sets them.

Why: work that can wait (packing a cold start's int8 weights, writing the weight cache,
building the codec's kernels ahead of need) runs on threads of the serving process; on
Linux each thread has its own nice value, so it yields the cores to the threads that
serve without a process of its own. Elsewhere (no per-thread nice, no permission) the
call does nothing: the work then runs at the serving threads' priority.
"""

from __future__ import annotations

import contextlib
import os
import threading

IDLE_NICE = 19   # idle-time work: prewarm, cache writes
PACK_NICE = 10   # a cold start's int8 packing: below the first requests, above idle-time work


def set_thread_nice(value: int) -> None:
    """Nice ``value`` for the calling thread (and the OpenMP workers it starts)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), value)
