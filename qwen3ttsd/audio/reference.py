"""Reference audio for voice cloning: any common file in, clean mono 24 kHz out.

Steps: decode (libsndfile for wav/flac/ogg/mp3, ffmpeg via pydub for the rest, e.g. m4a),
downmix, resample to 24 kHz, trim leading/trailing silence, clip to at most 15 s at the
quietest point near the limit (never mid-word), normalise loudness. Rejects, with
``ReferenceAudioError``, anything that is not audio, too short, silent or clipped beyond
use. Only raw bytes are accepted: never a path or URL (qwen-tts would fetch a URL - SSRF).
"""

from __future__ import annotations

import io

import numpy as np

from .encoders import AudioFormatError

TARGET_RATE = 24_000
MIN_SECONDS = 1.0
MAX_SECONDS = 15.0
TARGET_RMS_DBFS = -20.0
SILENCE_DBFS = -45.0


class ReferenceAudioError(AudioFormatError):
    """The upload cannot be used as a voice reference (message says why)."""


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return wav, int(sr)
    except Exception:  # noqa: BLE001 - fall through to ffmpeg
        pass
    try:
        from pydub import AudioSegment

        seg = AudioSegment.from_file(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - anything ffmpeg cannot read is not audio
        raise ReferenceAudioError("the upload is not a readable audio file") from e
    samples = np.array(seg.get_array_of_samples(), dtype=np.float32)
    samples /= float(1 << (8 * seg.sample_width - 1))
    return samples.reshape(-1, seg.channels), int(seg.frame_rate)


def _frame_db(x: np.ndarray, hop: int) -> np.ndarray:
    n = len(x) // hop
    if n == 0:
        return np.full(1, -120.0)
    f = x[: n * hop].reshape(n, hop)
    rms = np.sqrt(np.mean(f.astype(np.float64) ** 2, axis=1) + 1e-20)
    return 20 * np.log10(rms)


def process_reference(data: bytes, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Bytes of an audio file -> float32 mono 24 kHz, cleaned. Raises ReferenceAudioError
    (and nothing else) for anything unusable."""
    try:
        return _process(data, max_seconds)
    except ReferenceAudioError:
        raise
    except Exception as e:  # noqa: BLE001 - decoder/resampler surprises are bad input too
        raise ReferenceAudioError(f"the audio could not be processed ({type(e).__name__})") from e


def _process(data: bytes, max_seconds: float) -> np.ndarray:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ReferenceAudioError("reference audio must be the file's bytes (no paths or URLs)")
    data = bytes(data)
    if len(data) < 44:
        raise ReferenceAudioError("the upload is too small to be audio")
    wav, sr = _decode(data)
    if wav.size == 0 or sr <= 0:
        raise ReferenceAudioError("the audio is empty")
    if not np.all(np.isfinite(wav)):
        raise ReferenceAudioError("the audio contains invalid samples")
    mono = wav.mean(axis=1).astype(np.float32)
    if sr != TARGET_RATE:
        import soxr

        mono = soxr.resample(mono, sr, TARGET_RATE, quality="HQ").astype(np.float32)
    hop = TARGET_RATE // 100  # 10 ms
    db = _frame_db(mono, hop)
    loud = np.nonzero(db > SILENCE_DBFS)[0]
    if len(loud) == 0:
        raise ReferenceAudioError("the audio is silent")
    start = max(0, loud[0] - 5) * hop          # keep 50 ms before speech
    end = min(len(db), loud[-1] + 1 + 10) * hop  # and 100 ms after
    mono = mono[start:end]
    limit = int(max_seconds * TARGET_RATE)
    if len(mono) > limit:
        # cut in the middle of the longest quiet stretch of the last 3 s before the limit
        lo = max(0, limit - 3 * TARGET_RATE)
        seg_db = _frame_db(mono[lo:limit], hop)
        quiet = seg_db <= min(seg_db.min() + 6.0, SILENCE_DBFS)
        if not quiet.any():
            quiet = seg_db <= seg_db.min() + 3.0
        best_len, best_mid, run = 0, int(np.argmin(seg_db)), 0
        for i, q in enumerate(quiet):
            run = run + 1 if q else 0
            if run > best_len:
                best_len, best_mid = run, i - run // 2
        mono = mono[: lo + best_mid * hop + hop // 2]
    if len(mono) < MIN_SECONDS * TARGET_RATE:
        raise ReferenceAudioError(f"need at least {MIN_SECONDS:.0f} s of speech, got {len(mono) / TARGET_RATE:.2f} s")
    voiced = _frame_db(mono, hop) > SILENCE_DBFS
    if voiced.mean() < 0.2:
        raise ReferenceAudioError("the audio is mostly silence")
    clipped = np.mean(np.abs(mono) >= 0.999)
    if clipped > 0.01:
        raise ReferenceAudioError("the audio is heavily clipped")
    f = mono[: len(voiced) * hop].reshape(len(voiced), hop)[voiced]
    rms = float(np.sqrt(np.mean(f.astype(np.float64) ** 2)))
    gain = 10 ** (TARGET_RMS_DBFS / 20) / max(rms, 1e-9)
    peak = float(np.max(np.abs(mono)))
    gain = min(gain, 0.95 / max(peak, 1e-9))  # never clip while normalising
    return (mono * gain).astype(np.float32)
