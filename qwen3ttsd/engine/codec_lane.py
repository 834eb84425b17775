"""The streams' audio work off the generation path: batched codec decode and the codec lane.

The step engine (:mod:`.batched`) hands each step's new frames, and the streams that left,
to a :class:`CodecLane`; it groups frames into chunks, decodes all due streams together
(:func:`decode_many`: batched calls of power-of-two sizes) and reports each stream's end.
With ``overlap`` the lane is its own thread, so the codec runs while the next step generates.
"""

from __future__ import annotations

import functools
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import Tensor

from ..errors import TTSError
from .backend import Done, Failed, Stream, StreamEvent, internal_error
from .engine import AudioOut
from .streaming_decoder import StreamingDecoder
from .thread_priority import pin_torch_threads

Leaving = tuple[Stream, AudioOut, "TTSError | None"]  # a stream's last flush and report (None: done)


def decode_many(outs: list[AudioOut]) -> None:
    """Decode the pending frames of several streams: batched codec calls per chunk length
    (rows admitted together stay in phase), each of a power-of-two size (7 rows: 4 + 2 + 1).

    Why the sizes: oneDNN builds (JIT-compiles) its convolution kernels for every new input
    shape, and a codec call's shapes follow its batch size: as streams join and leave, every
    new batch size stalled every stream for as long as the build took (up to a second on the
    0.6B codec; figures in bench/RESULTS.md (Design measurements)). Power-of-two sizes leave 5 shapes per chunk
    length, built within the first busy seconds."""
    by_len: dict[int, list[AudioOut]] = {}
    for o in outs:
        by_len.setdefault(len(o.pending), []).append(o)
    for rows in by_len.values():
        while rows:
            size = 1 << (len(rows).bit_length() - 1)
            group, rows = rows[:size], rows[size:]
            codes = torch.stack([o.take() for o in group])
            audio = StreamingDecoder.push_many([o.decoder for o in group], codes)
            for o, a in zip(group, audio):
                o.emit(a)


def _split_threads() -> int:
    """Give half of torch's CPU threads to the codec lane (it returns that count) and keep
    the rest for the calling, stepping thread: both run at once, and oversubscribed cores
    lose more than they gain (measured: bench/RESULTS.md (Design measurements))."""
    n = cpu_threads()
    lane = max(1, n // 2)
    torch.set_num_threads(max(1, n - lane))
    return lane


# The fewest torch threads (cores) at which the codec gets its own lane (half the threads)
# by default; below, it decodes inside the step on all of them. Measured on 2 cores once
# helper threads no longer throttled the stepping thread's OpenMP team (thread_priority):
# in the step is 23 % faster at B=1 and 10 % at B=8 (bench/RESULTS.md, session 13); the
# lane's 2 + 2 split on 4 cores is not measured (2-core machines only).
OVERLAP_MIN_CORES = 4


def overlap_by_default(cores: int) -> bool:
    """Whether the codec decodes on its own lane when the configuration leaves it open."""
    return cores >= OVERLAP_MIN_CORES


@functools.cache
def cpu_threads() -> int:
    """torch's CPU thread count before any lane took its share (process-wide)."""
    return torch.get_num_threads()


class CodecLane:
    """The streams' audio work - frames into chunks, codec decode, the last flush and the
    final report - in submission order, on its own thread when ``overlap`` is on.

    Why: on CPU the codec decoder is compute-bound while the talker and predictor are
    memory-bound, so step n can decode on some cores while step n+1 generates on the
    others. On by default from ``OVERLAP_MIN_CORES`` cores (``QWEN3TTSD_OVERLAP_DECODE=auto``;
    1 / 0 force it). On 2 cores it lost once idle helper threads no longer throttled the
    stepping thread's OpenMP team (session 13; it had won by 19-31 % at B=1 in session 9,
    on that throttling): see ``OVERLAP_MIN_CORES``.

    Jobs run in submission order, so every stream's chunks stay in order; at most
    ``MAX_AHEAD`` are queued (a chunk of several frames decodes while several steps
    generate), after which submitting waits: generation never runs away from a slower
    codec. Audio goes to each stream's sink from the lane (sinks are thread-safe); the
    final ``done`` / ``error`` reports are handed back to the stepping thread
    (:meth:`deliver`), so the scheduler's bookkeeping stays on one thread.
    """

    MAX_AHEAD = 8  # steps' work queued before submitting waits (a few frames of audio)

    def __init__(self, overlap: bool, batch_decode: bool) -> None:
        self.batch_decode = batch_decode
        self._pool = None
        self.threads = torch.get_num_threads()  # torch threads of the thread that decodes
        if overlap:
            self.threads = _split_threads()
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="qwen3ttsd-codec", initializer=pin_torch_threads,
                                            initargs=(self.threads,))
        self.gen_threads = torch.get_num_threads()  # the stepping thread's (talker and predictor)
        self._jobs: deque[Future] = deque()
        self._done: list[tuple[Stream, StreamEvent]] = []

    @property
    def overlaps(self) -> bool:
        """Whether decoding runs on its own thread."""
        return self._pool is not None

    @property
    def split(self) -> str:
        """How the CPU threads are shared out, as status and the benchmarks show it."""
        how = "overlapped" if self.overlaps else "in the step"
        return f"generation {self.gen_threads} / codec {self.threads} threads, {how}"

    @property
    def busy(self) -> bool:
        return bool(self._jobs) or bool(self._done)

    def submit(self, frames: list[tuple[AudioOut, Tensor]], leaving: list[Leaving]) -> None:
        """Queue one step's audio work: ``frames`` to add (and decode when a chunk is
        due), then the ``leaving`` streams' last flush and report (``err`` None: done).
        Raises the previous job's failure (the reports it made are kept for :meth:`deliver`)."""
        self._harvest(keep=self.MAX_AHEAD - 1)
        if self._pool is None:
            self._collect(self._run(frames, leaving))
        else:
            self._jobs.append(self._pool.submit(self._run, frames, leaving))

    def join(self) -> None:
        """Wait for the work in flight, then :meth:`deliver`."""
        try:
            self._harvest(keep=0)
        finally:
            self.deliver()

    def drain(self) -> None:
        """Wait for every job and deliver all reports; job failures are dropped (the
        caller is reporting a failure to the streams already)."""
        while self._jobs:
            try:
                self._collect(self._jobs.popleft().result())
            except TTSError:
                pass
        self._deliver()

    def deliver(self) -> None:
        """Hand the reports of the jobs finished so far to their sinks (on the calling thread)."""
        try:
            self._harvest(keep=len(self._jobs), finished_too=True)
        finally:
            self._deliver()

    def _deliver(self) -> None:
        done, self._done = self._done, []
        for stream, event in done:
            stream.sink(event)

    def _harvest(self, keep: int, finished_too: bool = False) -> None:
        """Collect jobs from the head until at most ``keep`` are in flight (waiting for
        them); with ``finished_too``, also the finished ones beyond that."""
        while self._jobs and (len(self._jobs) > keep or (finished_too and self._jobs[0].done())):
            self._collect(self._jobs.popleft().result())

    def _collect(self, result: tuple[list[tuple[Stream, StreamEvent]], TTSError | None]) -> None:
        reports, err = result
        self._done += reports
        if err is not None:
            raise err

    def _run(self, frames: list[tuple[AudioOut, Tensor]], leaving: list[Leaving],
             ) -> tuple[list[tuple[Stream, StreamEvent]], TTSError | None]:
        """The job: (reports of the leaving streams, the failure that ends the others)."""
        failed: TTSError | None = None
        reports: list[tuple[Stream, StreamEvent]] = []
        with torch.inference_mode():
            try:
                due = [out for out, frame in frames if out.add(frame.unsqueeze(0))]
                if self.batch_decode and due:
                    decode_many(due)
                else:
                    for out in due:
                        out.flush()
            except BaseException as e:  # noqa: BLE001 - fails the streams, not the lane
                failed = internal_error(e)
            for stream, out, err in leaving:
                err = err or failed
                try:
                    if err is None:
                        out.flush()
                except BaseException as e:  # noqa: BLE001
                    err = internal_error(e)
                out.finish()
                reports.append((stream, Done(out.stats, out.decoder) if err is None else Failed(err)))
        return reports, failed


__all__ = ["CodecLane", "Leaving", "cpu_threads", "decode_many", "overlap_by_default"]
