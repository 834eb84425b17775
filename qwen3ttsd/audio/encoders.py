"""Streaming audio encoders: feed float32 mono chunks, get bytes to send right away.

Every encoder's concatenated output is a valid file/stream of its format:

* ``pcm16`` / ``f32``: raw little-endian samples;
* ``wav``: a PCM16 RIFF header whose sizes say "unknown/streaming" (0xFFFFFFFF), as
  browsers, ffmpeg and libsndfile accept;
* ``mulaw`` / ``alaw``: raw G.711 bytes (telephony, 8 kHz);
* ``mp3``, ``opus`` (Ogg): libsndfile through a write-only virtual file - bytes are
  emitted as libsndfile writes them; the header patches it attempts at close (total
  length) are dropped, which leaves valid "length unknown" streams. MP3 is constant
  bitrate. LAME delays the audio by 1105 samples (576 encoder + 529 decoder delay) and
  pads the last frame; decoders trim both only when a LAME "Info" frame says so, which
  LAME writes at close, over the first frame - too late for a stream. So a stream starts
  with an Info frame of our own carrying the (constant) delay: decoders that honour it
  (ffmpeg, hence Chromium and PyAV) start on the first real sample. Frame count and end
  padding are known only at the end: ``final_header()`` is then LAME's own Info frame, the
  same size, for a consumer that keeps the stream as a file to write over its start
  (libsndfile/mpg123 apply the delay only with a frame count);
* ``flac``: readers (libsndfile among them) trust STREAMINFO's total sample count, which
  is only known at the end, so FLAC is sent complete, with exact headers, at ``finish``;
* ``aac`` (ADTS): libsndfile has no AAC encoder, so an ffmpeg subprocess does it, fed
  through pipes.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import struct
import subprocess
import threading
from typing import IO

import numpy as np

from ..formats import FORMATS, AudioFormatError, canonical_format, check_rate


def to_int16(pcm: np.ndarray) -> np.ndarray:
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).round().astype("<i2")


# --- G.711 (ITU-T G.711, the Sun/CCITT reference algorithm, vectorised) -----------------

_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def lin2ulaw(x: np.ndarray) -> bytes:
    """16-bit linear -> mu-law bytes; bit-identical to audioop.lin2ulaw (14-bit input)."""
    v = x.astype(np.int32) >> 2
    mask = np.where(v < 0, 0x7F, 0xFF)
    v = np.minimum(np.abs(v), 8159) + (0x84 >> 2)
    seg = np.searchsorted(_SEG_UEND, v, side="left")
    uval = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((v >> (np.minimum(seg, 7) + 1)) & 0xF))
    return (uval ^ mask).astype(np.uint8).tobytes()


def ulaw2lin(b: bytes) -> np.ndarray:
    u = ~np.frombuffer(b, np.uint8).astype(np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def lin2alaw(x: np.ndarray) -> bytes:
    """16-bit linear -> A-law bytes; bit-identical to audioop.lin2alaw (13-bit input)."""
    v = x.astype(np.int32) >> 3
    mask = np.where(v >= 0, 0xD5, 0x55)
    v = np.where(v >= 0, v, -v - 1)
    seg = np.searchsorted(_SEG_AEND, v, side="left")
    segc = np.minimum(seg, 7)
    quant = np.where(segc < 2, v >> 1, v >> segc) & 0xF
    aval = np.where(seg >= 8, 0x7F, (segc << 4) | quant)
    return (aval ^ mask).astype(np.uint8).tobytes()


def alaw2lin(b: bytes) -> np.ndarray:
    a = np.frombuffer(b, np.uint8).astype(np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    return np.where(a & 0x80, t, -t).astype(np.int16)


# --- encoders ----------------------------------------------------------------------------


class Encoder:
    """Base: ``header()`` once, ``encode(chunk)`` per chunk, ``finish()`` once."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        self.format = fmt
        self.sample_rate = sample_rate
        self.mime = FORMATS[fmt].mime

    def header(self) -> bytes:
        return b""

    def encode(self, pcm: np.ndarray) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        return b""

    def final_header(self) -> bytes:
        """After ``finish``: what to write over the start of the complete output when it
        is kept as a file (a header a stream could not carry); b"" if nothing."""
        return b""

    def close(self) -> None:
        """Release resources without producing output (cancelled streams)."""


class RawEncoder(Encoder):
    def encode(self, pcm: np.ndarray) -> bytes:
        if self.format == "f32":
            return np.asarray(pcm, dtype="<f4").tobytes()
        s16 = to_int16(pcm)
        if self.format == "mulaw":
            return lin2ulaw(s16)
        if self.format == "alaw":
            return lin2alaw(s16)
        return s16.tobytes()


def wav_header(sample_rate: int, channels: int = 1, bits: int = 16, data_bytes: int | None = None) -> bytes:
    """RIFF/WAVE header; data_bytes=None writes the 0xFFFFFFFF 'streaming' sizes."""
    size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, bits) +
            b"data" + struct.pack("<I", size))


class WavEncoder(RawEncoder):
    def header(self) -> bytes:
        return wav_header(self.sample_rate)


class _StreamSink:
    """Write-only file for libsndfile: appends are passed on, rewinds are dropped.

    ``skip_first`` drops the first write: for MP3 that is LAME's Xing/info frame, a
    placeholder libsndfile fills in at close - never filled in a stream, so it must not be
    sent at all (decoders would read the zeros as a corrupt frame); ``Mp3Encoder`` sends
    an Info frame of its own instead. The fill-in, a rewrite at offset 0, is kept in
    ``rewritten_start`` (the complete file's header).
    """

    def __init__(self, skip_first: bool = False) -> None:
        self.pos = 0
        self.end = 0
        self.out = bytearray()
        self.skip_first = skip_first
        self.rewritten_start = b""   # the last rewrite at offset 0 (MP3: LAME's final Info frame)

    def write(self, data) -> int:
        data = bytes(data)
        if self.skip_first:
            self.skip_first = False
            self.pos += len(data)
            self.end += len(data)
            return len(data)
        if self.pos == self.end:
            self.out += data
            self.end += len(data)
        elif self.pos == 0 and len(data) <= self.end:
            self.rewritten_start = data
        elif self.pos + len(data) > self.end:  # overlapping rewrite that extends the end
            tail = data[self.end - self.pos:]
            self.out += tail
            self.end += len(tail)
        self.pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.end}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        return b""

    def take(self) -> bytes:
        b = bytes(self.out)
        self.out.clear()
        return b


class _WholeFileSink(io.BytesIO):
    """A real in-memory file (rewrites land): for formats sent complete at the end."""

    def take(self) -> bytes:
        return self.getvalue() if self.closed_by_encoder else b""

    closed_by_encoder = False


_MPEG2_MAX_RATE = 24_000  # MPEG-2 layer III rates end here; MPEG-1 above


def mp3_cbr_level(sample_rate: int) -> float:
    """libsndfile compression level for speech-quality CBR: ~64 kbit/s up to 24 kHz
    (MPEG-2), ~96 kbit/s above (MPEG-1)."""
    return 0.6 if sample_rate <= _MPEG2_MAX_RATE else 0.8


# --- MP3 gapless info (Xing/LAME "Info" frame) ------------------------------------------------

_XING_FLAGS_ALL = 0x0F          # frames, bytes, TOC, quality: LAME's layout
_XING_BYTES = 0x02
_UNKNOWN_SIZE = 0xFFFFFFFF      # "still growing": ffmpeg then skips the Info frame, not decodes it
_LAME_TAG_CRC_AT = 34           # LAME tag: delay/padding at +21, music length +28, music CRC +32
_BITRATES = {1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
             2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def crc16(data: bytes) -> int:
    """CRC-16/ARC, the LAME tag's checksum."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def mp3_frame_size(header: bytes) -> int:
    """Bytes in the MPEG-1/2/2.5 layer III frame that starts with ``header``."""
    h = struct.unpack(">I", header[:4])[0]
    version, bitrate_i, rate_i, pad = (h >> 19) & 3, (h >> 12) & 15, (h >> 10) & 3, (h >> 9) & 1
    kbps = _BITRATES[1 if version == 3 else 2][bitrate_i]
    return (144_000 if version == 3 else 72_000) * kbps // _RATES[version][rate_i] + pad


def _info_offset(frame: bytes) -> int:
    """Where the Xing/Info tag starts: after the header and the side information."""
    h = struct.unpack(">I", frame[:4])[0]
    mpeg1, mono, crc = ((h >> 19) & 3) == 3, ((h >> 6) & 3) == 3, not (h >> 16) & 1
    return 4 + 2 * crc + ((17 if mono else 32) if mpeg1 else (9 if mono else 17))


@functools.lru_cache(maxsize=16)
def _lame_info_template(sample_rate: int, level: float) -> bytes:
    """LAME's Info frame for this rate and bitrate, from a tiny throwaway encode."""
    import soundfile as sf

    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=sample_rate, channels=1, format="MP3", subtype="MPEG_LAYER_III",
                      bitrate_mode="CONSTANT", compression_level=level) as f:
        f.write(np.zeros(sample_rate // 10, np.float32))
    data = buf.getvalue()
    return data[: mp3_frame_size(data)]


def streaming_info_frame(template: bytes) -> bytes:
    """An Info frame for a stream of unknown length: LAME's, with the encoder delay kept,
    frame count, seek table and end padding left out (unknown yet), size "unknown"."""
    at = _info_offset(template)
    if template[at:at + 4] not in (b"Info", b"Xing") or struct.unpack(">I", template[at + 4:at + 8])[0] != \
            _XING_FLAGS_ALL:
        raise AudioFormatError("unexpected LAME Info frame layout")
    lame_at = at + 8 + 4 + 4 + 100 + 4
    lame = bytearray(template[lame_at:lame_at + _LAME_TAG_CRC_AT])
    delay = int.from_bytes(lame[21:24], "big") >> 12
    lame[21:24] = (delay << 12).to_bytes(3, "big")   # padding: unknown until the end
    lame[28:34] = bytes(6)                            # music length and CRC: unknown too
    frame = bytearray(template[:at]) + b"Info" + struct.pack(">II", _XING_BYTES, _UNKNOWN_SIZE) + lame
    frame += crc16(bytes(frame)).to_bytes(2, "big")
    return bytes(frame + bytes(len(template) - len(frame)))


class SndfileEncoder(Encoder):
    _SPEC = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}

    def __init__(self, fmt: str, sample_rate: int) -> None:
        super().__init__(fmt, sample_rate)
        import soundfile as sf

        container, subtype = self._SPEC[fmt]
        self._sink: _StreamSink | _WholeFileSink = (
            _WholeFileSink() if fmt == "flac" else _StreamSink(skip_first=fmt == "mp3"))
        extra = {"bitrate_mode": "CONSTANT", "compression_level": mp3_cbr_level(sample_rate)} \
            if fmt == "mp3" else {}
        try:
            self._sf = sf.SoundFile(self._sink, mode="w", samplerate=sample_rate, channels=1,
                                    format=container, subtype=subtype, **extra)
        except Exception as e:
            raise AudioFormatError(f"{fmt} at {sample_rate} Hz is not supported: {e}") from e

    def header(self) -> bytes:
        return self._sink.take()

    def encode(self, pcm: np.ndarray) -> bytes:
        self._sf.write(np.asarray(pcm, dtype=np.float32))
        return self._sink.take()

    def finish(self) -> bytes:
        self._sf.close()
        if isinstance(self._sink, _WholeFileSink):
            self._sink.closed_by_encoder = True
        return self._sink.take()


class Mp3Encoder(SndfileEncoder):
    """CBR MP3 whose stream starts with an Info frame giving LAME's delay (module doc)."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        super().__init__(fmt, sample_rate)
        try:
            self._info = streaming_info_frame(_lame_info_template(sample_rate, mp3_cbr_level(sample_rate)))
        except Exception:  # noqa: BLE001 - another LAME build's layout: plain frames, as before
            self._info = b""
        self._final = b""

    def header(self) -> bytes:
        return self._info + super().header()

    def finish(self) -> bytes:
        out = super().finish()
        assert isinstance(self._sink, _StreamSink)  # MP3 always streams
        final = self._sink.rewritten_start
        if len(final) == len(self._info):
            at = _info_offset(final)
            if final[at:at + 4] in (b"Info", b"Xing"):
                self._final = final
        return out

    def final_header(self) -> bytes:
        return self._final

    def close(self) -> None:
        try:
            self._sf.close()
        except Exception:  # noqa: BLE001
            pass


class FfmpegEncoder(Encoder):
    """AAC/ADTS via an ffmpeg child: s16le on stdin, encoded bytes drained by a thread."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        super().__init__(fmt, sample_rate)
        exe = shutil.which("ffmpeg")
        if exe is None:
            raise AudioFormatError(f"{fmt} needs ffmpeg, which is not installed")
        cmd = [exe, "-hide_banner", "-loglevel", "error", "-probesize", "32", "-analyzeduration", "0",
               "-fflags", "nobuffer", "-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0",
               "-c:a", "aac", "-b:a", "64k", "-f", "adts", "-flush_packets", "1", "pipe:1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        self._p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, env=env)
        assert self._p.stdin is not None and self._p.stdout is not None  # PIPE
        self._stdin: IO[bytes] = self._p.stdin
        self._stdout: IO[bytes] = self._p.stdout
        self._buf = bytearray()
        self._written = 0
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            out = self._stdout
            data = out.read1(65536) if isinstance(out, io.BufferedReader) else out.read(4096)
            if not data:
                return
            with self._lock:
                self._buf += data
            self._ready.set()

    def _take(self) -> bytes:
        with self._lock:
            b = bytes(self._buf)
            self._buf.clear()
        return b

    def encode(self, pcm: np.ndarray) -> bytes:
        try:
            self._stdin.write(to_int16(pcm).tobytes())
            self._stdin.flush()
        except BrokenPipeError as e:
            raise AudioFormatError("ffmpeg encoder exited") from e
        self._written += len(pcm)
        # Give ffmpeg a moment to emit what this chunk completes (AAC frames are 1024
        # samples); never long enough to hold up the stream.
        if self._written > 2048:
            self._ready.wait(0.02)
        self._ready.clear()
        return self._take()

    def finish(self) -> bytes:
        try:
            self._stdin.close()
        except BrokenPipeError:
            pass
        self._p.wait(timeout=30)
        self._reader.join(timeout=30)
        return self._take()

    def close(self) -> None:
        if self._p.poll() is None:
            self._p.kill()
            self._p.wait()


def make_encoder(fmt: str, sample_rate: int) -> Encoder:
    fmt = canonical_format(fmt)
    check_rate(fmt, sample_rate)
    if FORMATS[fmt].raw:
        return RawEncoder(fmt, sample_rate)
    if fmt == "wav":
        return WavEncoder(fmt, sample_rate)
    if fmt == "aac":
        return FfmpegEncoder(fmt, sample_rate)
    if fmt == "mp3":
        return Mp3Encoder(fmt, sample_rate)
    return SndfileEncoder(fmt, sample_rate)
