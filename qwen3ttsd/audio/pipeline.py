"""Per-stream audio path: 24 kHz model PCM -> speed -> resample -> encoder -> bytes.

Each stage is streaming with carried state, so chunk boundaries never add clicks: the
resampler is soxr's stream API and the speed change is a streaming WSOLA (pitch kept).
Both stages hold back some input (look-ahead, filter delay); ``flush`` ends them at a
segment boundary, so all of a segment's audio is out before its caption, and places the
output at an exact sample position, so segment timings never drift from the audio.
"""

from __future__ import annotations

import threading

import numpy as np

from ..formats import MODEL_RATE, SPEED_RANGE, AudioFormatError
from .encoders import Encoder, make_encoder


class TimeStretch:
    """Streaming WSOLA time-scale modification: duration / speed, same pitch.

    Output frames of ``n`` samples are overlap-added every ``hop`` samples with a periodic
    Hann window (which sums to 1 at 50% overlap). Frame ``k`` is centred on output sample
    ``k * hop`` and taken from near input ``k * hop * speed`` (centred too, so output time
    ``t`` plays input ``t * speed`` on average, at the ends as in the middle), shifted by up
    to ``tol`` samples to best continue the previous frame's waveform (maximum
    cross-correlation), which avoids phase clicks.

    Frames never read outside the input: frame 0 is the input's own start (its first half,
    before output 0, is never sent), later frames are clamped to start at input >= 0, and
    once the input is final, to end at its last sample. So the output starts with the
    input's first sample and its last milliseconds are the input's last, never zero padding
    (a segment's speech before a ``<break>`` is not faded into silence).
    """

    def __init__(self, speed: float, rate: int = MODEL_RATE) -> None:
        if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
            raise AudioFormatError(f"speed must be within {SPEED_RANGE[0]}..{SPEED_RANGE[1]}")
        self.speed = float(speed)
        self.n = 2 * int(rate * 0.02)          # 40 ms frames
        self.hop = self.n // 2
        self.tol = int(rate * 0.008)            # +-8 ms search
        self.win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.n) / self.n)).astype(np.float32)
        self.buf: np.ndarray = np.zeros(self.hop, np.float32)  # frame 0 starts at input -hop
        self.buf_start = -self.hop               # absolute input index of buf[0]
        self.k = 0                               # next frame (output centre k * hop)
        self.prev: int | None = None             # absolute input start of the previous frame
        self.out: np.ndarray = np.zeros(self.n, np.float32)  # overlap-add accumulator (starts at (k-1)*hop)
        self.total_in = 0
        self.emitted = 0                         # output samples returned so far

    def _nominal(self, k: int) -> int:
        return int(round(k * self.hop * self.speed)) - self.hop

    def _frame(self, final: bool) -> np.ndarray | None:
        end = self.buf_start + len(self.buf)     # absolute input index after the last sample held
        if self.prev is None:                    # frame 0: the input's start, no search
            if end < self.hop and not final:
                return None
            best = -self.hop
        else:
            nominal = self._nominal(self.k)
            need_end = max(max(0, nominal - self.tol) + 2 * self.tol, self.prev + self.hop) + self.n
            if need_end > end and not final:
                return None
            # the +-tol search window, moved (not shrunk) to lie within the input, so a
            # clamped frame still finds a waveform-continuing position
            lo = max(0, nominal - self.tol)
            if final:                            # never past the input's last sample
                lo = max(0, min(lo, self.total_in - self.n - 2 * self.tol))
            hi = lo + 2 * self.tol
            if final:
                hi = max(lo, min(hi, self.total_in - self.n))
            target = self._read(self.prev + self.hop, self.n)
            region = self._read(lo, hi - lo + self.n)
            corr = np.correlate(region, target, mode="valid")
            best = lo + int(np.argmax(corr))
        self.prev = best
        return self._read(best, self.n)

    def _read(self, start: int, count: int) -> np.ndarray:
        """Input samples [start, start + count), zeros where there are none (short input)."""
        a = start - self.buf_start
        seg = self.buf[max(0, a): max(0, a + count)]
        if len(seg) == count:
            return seg
        out: np.ndarray = np.zeros(count, np.float32)
        off = max(0, -a)
        out[off: off + len(seg)] = seg
        return out

    def process(self, x: np.ndarray, final: bool = False) -> np.ndarray:
        if self.speed == 1.0:
            return x
        self.buf = np.concatenate([self.buf, np.asarray(x, np.float32)])
        self.total_in += len(x)
        target_len = int(round(self.total_in / self.speed))
        outs: list[np.ndarray] = []
        while not (final and self.emitted + self.hop * len(outs) >= target_len):
            fr = self._frame(final)
            if fr is None:
                break
            self.out += self.win * fr
            if self.k > 0:                       # frame 0's first half lies before output 0
                outs.append(self.out[: self.hop].copy())
            self.out = np.concatenate([self.out[self.hop:], np.zeros(self.hop, np.float32)])
            self.k += 1
            # forget input no later frame can reach
            assert self.prev is not None  # set by _frame
            keep_from = min(self._nominal(self.k) - self.tol, self.prev + self.hop,
                            self.buf_start + len(self.buf) - self.n - 2 * self.tol) - self.buf_start
            if keep_from > 0:
                self.buf = self.buf[keep_from:]
                self.buf_start += keep_from
        y = np.concatenate(outs) if outs else np.zeros(0, np.float32)
        if final:
            y = y[: max(0, target_len - self.emitted)]
        self.emitted += len(y)
        return y


class Resampler:
    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._rs = None
        self.pending = False                     # input since the stream began (a flush has work)
        if in_rate != out_rate:
            import soxr

            self._rs = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")

    def process(self, x: np.ndarray, final: bool = False) -> np.ndarray:
        if self._rs is None:
            return x
        self.pending = self.pending or len(x) > 0
        return self._rs.resample_chunk(np.asarray(x, np.float32), last=final)


class AudioPipeline:
    """One stream's speed/resample/encode chain; ``feed`` and ``finish`` return bytes.

    The daemon calls it from worker threads (encoding stays off the event loop); one lock
    serialises the calls, so ``close`` after a cancelled stream waits for an encode still
    running instead of freeing the encoder under it."""

    def __init__(self, fmt: str, sample_rate: int | None = None, speed: float = 1.0) -> None:
        rate = int(sample_rate or MODEL_RATE)
        self.encoder: Encoder = make_encoder(fmt, rate)
        self.format = self.encoder.format
        self.sample_rate = rate
        self.mime = self.encoder.mime
        self.stretch = TimeStretch(speed) if speed != 1.0 else None
        self.resampler = Resampler(MODEL_RATE, rate)
        self.samples_out = 0
        self._last = 0.0                         # last output sample (``flush`` may hold it)
        self._lock = threading.RLock()

    def header(self) -> bytes:
        with self._lock:
            return self.encoder.header()

    def _stages(self, pcm: np.ndarray, final: bool) -> np.ndarray:
        if self.stretch is not None:
            pcm = self.stretch.process(pcm, final)
        return self._resample(pcm, final)

    def _resample(self, pcm: np.ndarray, final: bool) -> np.ndarray:
        return self._count(self.resampler.process(pcm, final))

    @property
    def speed(self) -> float:
        return self.stretch.speed if self.stretch is not None else 1.0

    def _flush_stretch(self, speed: float) -> bytes:
        """End the current time-stretch (its tail goes out) and continue at ``speed``."""
        tail = self.stretch.process(np.zeros(0, np.float32), True) if self.stretch is not None else None
        self.stretch = TimeStretch(speed) if speed != 1.0 else None
        return b"" if tail is None else self.encoder.encode(self._resample(tail, False))

    def set_speed(self, speed: float) -> bytes:
        """Between segments (SSML ``<prosody rate>``): from here on, ``speed``."""
        with self._lock:
            return self._flush_stretch(speed) if speed != self.speed else b""

    def flush(self, until: int | None = None) -> bytes:
        """All audio fed so far goes out now: the time-stretch and the resampler are ended
        (their held-back tails emitted) and restarted. With ``until``, the output is then
        exactly ``until`` samples long: a rounding sample or two trimmed from the tail, or
        the last sample held (never zeros: this is still speech)."""
        with self._lock:
            return self.encoder.encode(self._flush(until))

    def _flush(self, until: int | None) -> np.ndarray:
        pcm: np.ndarray = np.zeros(0, np.float32)
        if self.stretch is not None and self.stretch.total_in:
            pcm = self.stretch.process(pcm, True)
            self.stretch = TimeStretch(self.stretch.speed)
        if self.resampler.pending:
            pcm = self.resampler.process(pcm, True)
            self.resampler = Resampler(MODEL_RATE, self.sample_rate)
        if until is not None:
            short = until - (self.samples_out + len(pcm))
            if short < 0:
                pcm = pcm[: max(0, len(pcm) + short)]
            elif short > 0:
                hold = pcm[-1] if len(pcm) else self._last
                pcm = np.concatenate([pcm, np.full(short, hold, np.float32)])
        return self._count(pcm)

    def _count(self, pcm: np.ndarray) -> np.ndarray:
        self.samples_out += len(pcm)
        if len(pcm):
            self._last = float(pcm[-1])
        return pcm

    def silence(self, seconds: float, until: int | None = None) -> bytes:
        """Exact digital silence (SSML ``<break>``) after everything fed so far (flushed):
        ``seconds`` of it, or up to output sample ``until``. Not stretched, not resampled."""
        with self._lock:
            pcm = self._flush(None)
            n = int(round(seconds * self.sample_rate)) if until is None else until - self.samples_out
            return self.encoder.encode(pcm) + self.encoder.encode(self._count(np.zeros(max(0, n), np.float32)))

    def feed(self, pcm: np.ndarray) -> bytes:
        with self._lock:
            return self.encoder.encode(self._stages(pcm, False))

    def finish(self) -> bytes:
        with self._lock:
            tail = self._stages(np.zeros(0, np.float32), True)
            return self.encoder.encode(tail) + self.encoder.finish()

    def final_header(self) -> bytes:
        """After ``finish``: bytes to write over the start of the complete output, for a
        consumer that keeps it as a file (mp3: LAME's Info frame with the frame count
        and end padding, which a stream cannot carry); b"" for formats without one."""
        with self._lock:
            return self.encoder.final_header()

    def close(self) -> None:
        with self._lock:
            self.encoder.close()

    @property
    def duration_s(self) -> float:
        return self.samples_out / self.sample_rate
