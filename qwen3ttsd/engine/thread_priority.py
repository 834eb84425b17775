"""How the engine's helper threads yield to the stepping thread: their nice value and their
torch thread count.

Why nice: work that can wait (packing a cold start's int8 weights, writing the weight cache,
building the codec's kernels ahead of need) runs on threads of the serving process; on
Linux each thread has its own nice value, so it yields the cores to the threads that
serve without a process of its own. Elsewhere (no per-thread nice, no permission) the
call does nothing: the work then runs at the serving threads' priority.

Why one torch thread: torch's CPU ops parallelise on an OpenMP team per calling thread,
and libgomp counts the threads of every team; once they outnumber the cores it stops
spinning between parallel regions ("throttled" waits), so every one of the stepping
thread's small parallel ops - hundreds a frame - waits for a futex wake-up. One idle
prompt-builder thread that had run a single parallel op was enough: the 0.6B int8
predictor frame went from 80 to 130 ms at 2 threads (bench/RESULTS.md, session 13). A
helper that runs torch therefore pins itself to one thread (:func:`pin_torch_threads`);
only the stepping thread and the codec lane keep teams, and helper work that needs several
cores gets a team on a thread that ends with it (:func:`on_own_team`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

IDLE_NICE = 19   # idle-time work: prewarm, cache writes
PACK_NICE = 10   # a cold start's int8 packing: below the first requests, above idle-time work


def set_thread_nice(value: int) -> None:
    """Nice ``value`` for the calling thread (and the OpenMP workers it starts)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), value)


def pin_torch_threads(n: int) -> None:
    """Run the calling thread's torch ops on ``n`` threads, whatever other threads set.

    torch keeps one process-wide count that each thread copies on its first parallel op:
    asking for the count first makes that copy now, so the ``set`` below stays this
    thread's (another thread's later ``set_num_threads`` changes only threads still to
    start)."""
    import torch

    torch.get_num_threads()
    torch.set_num_threads(n)


def background_thread(nice: int) -> None:
    """The calling thread becomes background work: ``nice``, and torch on it alone."""
    set_thread_nice(nice)
    pin_torch_threads(1)


def on_own_team(threads: int, nice: int | None, fn: Callable[[], T]) -> T:
    """``fn()`` on a fresh thread at ``nice`` (None: the caller's priority) whose torch ops
    use a team of ``threads``; the team goes with that thread when ``fn`` returns. For work
    on a thread that waits most of its life but that should use several cores (or the
    serving thread count: oneDNN keys the kernels it builds by it): a team kept by a waiting
    thread would throttle the stepping thread's."""
    out: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        if nice is not None:
            set_thread_nice(nice)
        pin_torch_threads(threads)
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 - raised on the calling thread
            failed.append(e)

    t = threading.Thread(target=run, name=f"{threading.current_thread().name}-team", daemon=True)
    t.start()
    t.join()
    if failed:
        raise failed[0]
    return out[0]
