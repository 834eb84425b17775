"""Reference audio for voice cloning: any common file in, clean mono 24 kHz out.

Steps: decode (libsndfile for wav/flac/ogg/mp3, ffmpeg for the rest, e.g. m4a/webm),
downmix, resample to 24 kHz, trim leading/trailing silence, clip to at most 15 s at the
quietest point near the limit (never mid-word), normalise loudness. Rejects, with
``ReferenceAudioError``, anything that is not audio, too short, silent or clipped beyond
use. Only raw bytes are accepted: never a path or URL (qwen-tts would fetch a URL - SSRF).

Uploads are hostile until proven otherwise. ffmpeg happily opens HLS playlists and concat
lists and fetches what they name (http, file): it gets the bytes on a pipe with only the
``pipe`` protocol allowed and only audio demuxers whitelisted, so an upload can never make
the daemon reach the network or the disk.

A tiny file can claim to hold gigabytes of samples (a 189 KB FLAC of 8 channels x 192 kHz
x 120 s of zeros is ~740 MB of float32). So memory is bounded by the *output*, never by
what the file claims: the header is read first and absurd channel counts or rates are
refused; libsndfile then decodes in blocks of ``DECODE_BLOCK_SAMPLES`` samples, each
downmixed and fed to a streaming resampler at once, so peak memory is the mono 24 kHz
result (<= ``MAX_DECODE_SECONDS``) plus one block; ffmpeg is asked for mono 24 kHz with a
duration cap, which it produces streaming too. Decoding stops at ``MAX_DECODE_SECONDS``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess

import numpy as np

from ..formats import MODEL_RATE as TARGET_RATE  # references are cleaned at the model's rate
from .encoders import AudioFormatError

MIN_SECONDS = 1.0
MAX_SECONDS = 15.0
TARGET_RMS_DBFS = -20.0
SILENCE_DBFS = -45.0
MAX_DECODE_SECONDS = 120.0          # decoded before trimming; longer uploads are cut here
FFMPEG_TIMEOUT_S = 30.0
# Demuxers an audio upload may need; never hls, concat, image2, lavfi, ... (they open URLs/files).
AUDIO_DEMUXERS = "wav,w64,mp3,flac,ogg,mov,matroska,aac,aiff,caf,amr,au"
MAX_CHANNELS = 8                    # FLAC's and 7.1's maximum; more is not a voice recording
RATE_LIMITS = (1000, 384_000)       # Hz an upload may declare
DECODE_BLOCK_SAMPLES = 1 << 18      # samples (all channels) decoded at a time: 1 MiB of float32


class ReferenceAudioError(AudioFormatError):
    """The upload cannot be used as a voice reference (message says why)."""


def _decode(data: bytes) -> np.ndarray:
    """Any upload -> float32 mono at TARGET_RATE, at most MAX_DECODE_SECONDS of it."""
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            return _decode_blocks(f)
    except ReferenceAudioError:
        raise
    except Exception:  # noqa: BLE001 - not for libsndfile (or broken for it): try ffmpeg
        pass
    return _decode_with_ffmpeg(data)


def _decode_blocks(f) -> np.ndarray:
    """Block-wise decode, downmix and resample: memory ~ the mono output plus one block.

    Bit-identical to decoding the whole file, averaging its channels and resampling in one
    shot (soxr's stream API gives the one-shot result whatever the chunking)."""
    sr, channels = int(f.samplerate), int(f.channels)
    if not 1 <= channels <= MAX_CHANNELS:
        raise ReferenceAudioError(f"the audio has {channels} channels; at most {MAX_CHANNELS} are accepted")
    if not RATE_LIMITS[0] <= sr <= RATE_LIMITS[1]:
        raise ReferenceAudioError(f"the audio's sample rate {sr} Hz is outside {RATE_LIMITS[0]}..{RATE_LIMITS[1]}")
    rs = None
    if sr != TARGET_RATE:
        import soxr

        rs = soxr.ResampleStream(sr, TARGET_RATE, 1, dtype="float32", quality="HQ")
    left = int(MAX_DECODE_SECONDS * sr)
    block = max(1, DECODE_BLOCK_SAMPLES // channels)
    parts: list[np.ndarray] = []
    while left > 0:
        wav = f.read(frames=min(block, left), dtype="float32", always_2d=True)
        if len(wav) == 0:
            break
        left -= len(wav)
        if not np.all(np.isfinite(wav)):
            raise ReferenceAudioError("the audio contains invalid samples")
        mono = wav.mean(axis=1).astype(np.float32)
        parts.append(mono if rs is None else rs.resample_chunk(mono))
    if rs is not None:
        parts.append(rs.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)


def _decode_with_ffmpeg(data: bytes) -> np.ndarray:
    """Sandboxed ffmpeg decode: bytes on stdin, mono 24 kHz float32 on stdout."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise ReferenceAudioError("the upload is not wav/flac/ogg/mp3 and ffmpeg is not installed")
    cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error",
           "-protocol_whitelist", "pipe", "-format_whitelist", AUDIO_DEMUXERS, "-i", "pipe:0",
           "-map", "0:a:0", "-vn", "-t", str(MAX_DECODE_SECONDS),
           "-f", "f32le", "-ac", "1", "-ar", str(TARGET_RATE), "pipe:1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    try:
        r = subprocess.run(cmd, input=data, capture_output=True, timeout=FFMPEG_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise ReferenceAudioError("the upload took too long to decode") from None
    if r.returncode != 0 or not r.stdout:
        raise ReferenceAudioError("the upload is not a readable audio file")
    return np.frombuffer(r.stdout[: len(r.stdout) // 4 * 4], dtype="<f4").astype(np.float32)


def _frame_db(x: np.ndarray, hop: int) -> np.ndarray:
    n = len(x) // hop
    if n == 0:
        return np.full(1, -120.0)
    f = x[: n * hop].reshape(n, hop)
    rms = np.sqrt(np.mean(np.square(f, dtype=np.float64), axis=1) + 1e-20)
    return 20 * np.log10(rms)


def process_reference(data: bytes, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Bytes of an audio file -> float32 mono 24 kHz, cleaned. Raises ReferenceAudioError
    (and nothing else) for anything unusable."""
    try:
        return _process(data, max_seconds)
    except ReferenceAudioError:
        raise
    except Exception as e:
        raise ReferenceAudioError(f"the audio could not be processed ({type(e).__name__})") from e


def _process(data: bytes, max_seconds: float) -> np.ndarray:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ReferenceAudioError("reference audio must be the file's bytes (no paths or URLs)")
    data = bytes(data)
    if len(data) < 44:
        raise ReferenceAudioError("the upload is too small to be audio")
    mono = _decode(data)
    if mono.size == 0:
        raise ReferenceAudioError("the audio is empty")
    if not np.all(np.isfinite(mono)):
        raise ReferenceAudioError("the audio contains invalid samples")
    return _clean(mono, max_seconds)


def _clean(mono: np.ndarray, max_seconds: float) -> np.ndarray:
    """Mono TARGET_RATE audio -> trimmed, clipped to ``max_seconds`` at a pause, normalised."""
    hop = TARGET_RATE // 100  # 10 ms
    db = _frame_db(mono, hop)
    loud = np.nonzero(db > SILENCE_DBFS)[0]
    if len(loud) == 0:
        raise ReferenceAudioError("the audio is silent")
    start = max(0, int(loud[0]) - 5) * hop          # keep 50 ms before speech
    end = min(len(db), int(loud[-1]) + 1 + 10) * hop  # and 100 ms after
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
