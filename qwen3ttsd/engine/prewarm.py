"""Build the codec's convolution kernels for every batch shape before a burst needs them (CPU).

Why: oneDNN JIT-builds a convolution kernel the first time it sees an input shape, and a
codec call's shape is (batch size, chunk frames). Each socket activation starts a fresh
process whose load warm-up built batch 1 only, so the first burst of calls paid for the
kernels on the way to its first audio (2-3x a built call; bench/RESULTS.md (Design measurements)).

The shapes the codec lane uses are few (:func:`.codec_lane.decode_many`: power-of-two
batches up to ``max_batch``, chunks of 1..``chunk_frames`` frames), so right after a model
loads a thread decodes silence at each of them, smallest first, whenever no stream is in
flight, at the lowest CPU priority (its idle time and peak memory: bench/RESULTS.md (Design
measurements)). A stream that arrives meanwhile shares the CPU with at most one shape's
decode. The thread holds the backend (and so the model) only weakly and stops when it is
unloaded; afterwards the freed buffers go back to the OS (``malloc_trim``).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

import torch

from .serving_size import trim_heap
from .streaming_decoder import StreamingDecoder
from .thread_priority import IDLE_NICE, background_thread, on_own_team
from .weight_cache import IDLE_GRACE_S

log = logging.getLogger("qwen3ttsd.engine")

IDLE_POLL_S = 0.02  # how often a waiting prewarm looks whether the streams are done
START_QUIET_S = IDLE_GRACE_S  # idle before the first shape: a load's first caller may be just being admitted


def codec_shapes(max_batch: int, max_frames: int) -> list[tuple[int, int]]:
    """(batch, frames) of every codec call :func:`.codec_lane.decode_many` can make with
    chunks of up to ``max_frames`` frames, smallest batch first."""
    sizes = [1 << i for i in range(max(1, max_batch).bit_length())]
    return [(b, n) for b in sizes for n in range(1, max_frames + 1)]


class Prewarm:
    """A backend's prewarm: started with the backend, progress in :attr:`status`
    (admin.status shows it), over when the backend is gone."""

    def __init__(self, backend: Any, shapes: list[tuple[int, int]], threads: int) -> None:
        """Decode silence at each of ``shapes`` while ``backend`` (a
        :class:`.batched.BatchedBackend`) is idle, on a low-priority thread with ``threads``
        torch threads (oneDNN keys its kernels by thread count too: the count of the
        thread that decodes)."""
        self.status: dict[str, Any] = {"built": 0, "shapes": len(shapes), "done": False, "seconds": 0.0}
        self.thread = threading.Thread(target=self._run, args=(weakref.ref(backend), shapes, threads),
                                       name="qwen3ttsd-prewarm", daemon=True)
        self.thread.start()

    def _report(self, **progress: Any) -> None:
        self.status = dict(self.status, **progress)

    def _run(self, backend_ref: weakref.ref, shapes: list[tuple[int, int]], threads: int) -> None:
        background_thread(IDLE_NICE)   # this thread waits; each decode runs on a team of its own
        t0 = time.monotonic()
        built = 0
        try:
            for i, (batch, frames) in enumerate(shapes):
                if not _decode_silence(backend_ref, batch, frames, threads, START_QUIET_S if i == 0 else 0.0):
                    return  # the model was unloaded
                built += 1
                self._report(built=built, seconds=round(time.monotonic() - t0, 2))
        except Exception:  # an optimisation: never worth a crash
            log.exception("codec prewarm failed")
        finally:
            trim_heap()
            self._report(done=True)
            log.info("codec kernels built for %d of %d shapes in %.1f s", built, len(shapes), time.monotonic() - t0)


def _decode_silence(backend_ref: weakref.ref, batch: int, frames: int, threads: int, quiet_s: float = 0.0) -> bool:
    """One shape, once no stream has run for ``quiet_s``, on ``threads`` torch threads of a
    thread that ends with it (False: the model is gone)."""
    engine = _idle_engine(backend_ref, quiet_s)
    if engine is None:
        return False
    decoders = [engine.new_decoder() for _ in range(batch)]
    groups = int(decoders[0].config.num_quantizers)
    del engine  # only the decoders (and so the model) stay alive, and only for this call

    def decode() -> None:
        with torch.inference_mode():
            StreamingDecoder.push_many(decoders, torch.zeros(batch, frames, groups, dtype=torch.long))

    on_own_team(threads, IDLE_NICE, decode)
    return True


def _idle_engine(backend_ref: weakref.ref, quiet_s: float = 0.0) -> Any:
    """The backend's engine once it has had no stream in flight for ``quiet_s``; None once
    the model is gone.

    Why wait: CPU priority alone does not keep a prewarm off the streams' backs. The talker
    and predictor are memory-bound, and a stream ran markedly slower while a nice-19
    prewarm decoded beside it (bench/RESULTS.md (Design measurements)). The first shape
    waits for a quiet spell too: the prewarm starts as a load ends, and a cold start's
    first request is admitted just after (issue 19)."""
    since = time.monotonic()
    while True:
        backend = backend_ref()
        if backend is None or not backend.engine.loaded:
            return None
        if backend.active:
            since = time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return backend.engine
        del backend
        time.sleep(IDLE_POLL_S)


__all__ = ["Prewarm", "codec_shapes"]
