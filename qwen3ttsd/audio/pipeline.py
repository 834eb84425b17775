"""Per-stream audio path: 24 kHz model PCM -> speed -> resample -> encoder -> bytes.

Each stage is streaming with carried state, so chunk boundaries never add clicks: the
resampler is soxr's stream API and the speed change is a streaming WSOLA (pitch kept).
"""

from __future__ import annotations

import threading

import numpy as np

from ..formats import MODEL_RATE, SPEED_RANGE, AudioFormatError
from .encoders import Encoder, make_encoder


class TimeStretch:
    """Streaming WSOLA time-scale modification: duration / speed, same pitch.

    Output frames of ``n`` samples are overlap-added every ``hop`` samples with a periodic
    Hann window (which sums to 1 at 50% overlap); each frame is taken from near
    ``k * hop * speed`` in the input, shifted by up to ``tol`` samples to best continue the
    previous frame's waveform (maximum cross-correlation), which avoids phase clicks.
    """

    def __init__(self, speed: float, rate: int = MODEL_RATE) -> None:
        if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
            raise AudioFormatError(f"speed must be within {SPEED_RANGE[0]}..{SPEED_RANGE[1]}")
        self.speed = float(speed)
        self.n = 2 * int(rate * 0.02)          # 40 ms frames
        self.hop = self.n // 2
        self.tol = int(rate * 0.008)            # +-8 ms search
        self.win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.n) / self.n)).astype(np.float32)
        self.buf: np.ndarray = np.zeros(self.tol, np.float32)  # left pad so the first search has room
        self.buf_start = -self.tol               # absolute input index of buf[0]
        self.k = 0                               # next output frame
        self.prev: int | None = None             # absolute input start of the previous frame
        self.out: np.ndarray = np.zeros(self.n, np.float32)  # overlap-add accumulator (starts at k*hop)
        self.total_in = 0

    def _frame(self, final: bool) -> np.ndarray | None:
        nominal = int(round(self.k * self.hop * self.speed))
        need_end = nominal + self.tol + self.n
        if self.prev is not None:
            need_end = max(need_end, self.prev + self.hop + self.n)
        if need_end > self.buf_start + len(self.buf):
            if not final:
                return None
            pad = need_end - (self.buf_start + len(self.buf))
            self.buf = np.concatenate([self.buf, np.zeros(pad, np.float32)])
        lo = nominal - self.tol - self.buf_start
        if self.prev is None:
            best = nominal - self.buf_start
        else:
            target = self.buf[self.prev + self.hop - self.buf_start:][: self.n]
            region = self.buf[lo: lo + self.n + 2 * self.tol]
            corr = np.correlate(region, target, mode="valid")
            best = lo + int(np.argmax(corr))
        self.prev = best + self.buf_start
        return self.buf[best: best + self.n]

    def process(self, x: np.ndarray, final: bool = False) -> np.ndarray:
        if self.speed == 1.0:
            return x
        self.buf = np.concatenate([self.buf, np.asarray(x, np.float32)])
        self.total_in += len(x)
        outs = []
        target_len = int(round(self.total_in / self.speed))
        while True:
            if final and self.k * self.hop >= target_len:
                break
            fr = self._frame(final)
            if fr is None:
                break
            self.out += self.win * fr
            outs.append(self.out[: self.hop].copy())
            self.out = np.concatenate([self.out[self.hop:], np.zeros(self.hop, np.float32)])
            self.k += 1
            # forget input no later frame can reach
            assert self.prev is not None  # set by _frame
            keep_from = min(int(round(self.k * self.hop * self.speed)) - self.tol,
                            self.prev + self.hop) - self.buf_start
            if keep_from > 0:
                self.buf = self.buf[keep_from:]
                self.buf_start += keep_from
        y = np.concatenate(outs) if outs else np.zeros(0, np.float32)
        if final:
            emitted = (self.k - len(outs)) * self.hop
            y = y[: max(0, target_len - emitted)]
        return y


class Resampler:
    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._rs = None
        if in_rate != out_rate:
            import soxr

            self._rs = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")

    def process(self, x: np.ndarray, final: bool = False) -> np.ndarray:
        if self._rs is None:
            return x
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
        self._lock = threading.RLock()

    def header(self) -> bytes:
        with self._lock:
            return self.encoder.header()

    def _stages(self, pcm: np.ndarray, final: bool) -> np.ndarray:
        if self.stretch is not None:
            pcm = self.stretch.process(pcm, final)
        return self._resample(pcm, final)

    def _resample(self, pcm: np.ndarray, final: bool) -> np.ndarray:
        pcm = self.resampler.process(pcm, final)
        self.samples_out += len(pcm)
        return pcm

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

    def silence(self, seconds: float) -> bytes:
        """Exact silence (SSML ``<break>``): not stretched, after everything fed so far."""
        with self._lock:
            out = self._flush_stretch(self.speed)
            n = int(round(seconds * MODEL_RATE))
            return out + self.encoder.encode(self._resample(np.zeros(n, np.float32), False))

    def feed(self, pcm: np.ndarray) -> bytes:
        with self._lock:
            return self.encoder.encode(self._stages(pcm, False))

    def finish(self) -> bytes:
        with self._lock:
            tail = self._stages(np.zeros(0, np.float32), True)
            return self.encoder.encode(tail) + self.encoder.finish()

    def close(self) -> None:
        with self._lock:
            self.encoder.close()

    @property
    def duration_s(self) -> float:
        return self.samples_out / self.sample_rate
