"""Audio back end: streaming encoders, G.711, resampling, speed, reference-audio cleanup."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf

from qwen3ttsd.audio import AudioFormatError, AudioPipeline, make_encoder
from qwen3ttsd.audio.encoders import alaw2lin, lin2alaw, lin2ulaw, ulaw2lin, wav_header
from qwen3ttsd.audio.pipeline import TimeStretch
from qwen3ttsd.audio.reference import ReferenceAudioError, process_reference

FFMPEG = shutil.which("ffmpeg")
SR = 24000
FRAME = 1920  # one codec frame = 80 ms at 24 kHz


def tone(seconds: float = 3.0, sr: int = SR, f: float = 220.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * f * t) * (0.7 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def encode_stream(fmt: str, rate: int, pcm: np.ndarray, chunk: int = FRAME,
                  speed: float = 1.0) -> tuple[bytes, list[bytes]]:
    p = AudioPipeline(fmt, rate, speed)
    parts = [p.header()]
    for i in range(0, len(pcm), chunk):
        parts.append(p.feed(pcm[i:i + chunk]))
    parts.append(p.finish())
    return b"".join(parts), parts


def ffmpeg_decode(data: bytes, rate: int) -> np.ndarray:
    r = subprocess.run([FFMPEG, "-v", "error", "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", str(rate), "pipe:1"],
                       input=data, capture_output=True, check=True)
    return np.frombuffer(r.stdout, np.float32)


# --- encoders: every format decodes back to the same duration -----------------------------

RAW = {"pcm16": (np.int16, 2), "f32": (np.float32, 4)}


@pytest.mark.parametrize("fmt", ["pcm16", "f32", "mulaw", "alaw", "wav", "flac", "mp3", "opus", "aac"])
@pytest.mark.parametrize("rate", [24000, 16000, 48000, 8000])
def test_stream_concatenation_decodes_to_same_duration(fmt, rate):
    if fmt in ("mp3", "aac") and rate == 8000:
        pytest.skip("8 kHz mp3/aac are not telephony formats; covered by mulaw/alaw/pcm16")
    if fmt in ("aac", "mp3", "opus", "flac") and FFMPEG is None:
        pytest.skip("ffmpeg not installed")
    pcm = tone(3.0)
    data, parts = encode_stream(fmt, rate, pcm, chunk=FRAME * 3)
    if fmt == "flac":  # sent complete: readers need STREAMINFO's exact length
        assert parts[-1] == data
    else:
        assert sum(1 for p in parts if p) >= 3  # really streamed, not all at the end
    want = 3.0 * rate
    if fmt in RAW:
        got = len(np.frombuffer(data, RAW[fmt][0]))
    elif fmt == "mulaw":
        got = len(ulaw2lin(data))
    elif fmt == "alaw":
        got = len(alaw2lin(data))
    else:
        decoded = ffmpeg_decode(data, rate)
        got = len(decoded)
        if fmt != "aac":  # libsndfile has no AAC; every other reader agrees on the length
            wav, sr = sf.read(io.BytesIO(data), dtype="float32")
            assert sr == rate
            assert abs(len(wav) - got) <= 1152 if fmt == "mp3" else len(wav) == got, (len(wav), got)
    assert abs(got - want) <= rate * FRAME / SR + (1024 if fmt in ("aac", "mp3") else 0), (got, want)


def test_lossless_round_trip_values():
    pcm = tone(1.0)
    data, _ = encode_stream("wav", SR, pcm)
    d, r = sf.read(io.BytesIO(data), dtype="float32")
    assert r == SR and np.abs(d - pcm).max() < 1 / 16000
    data, _ = encode_stream("flac", SR, pcm)
    back = ffmpeg_decode(data, SR) if FFMPEG else None
    if back is not None:
        assert np.abs(back[: len(pcm)] - pcm).max() < 1 / 16000


def test_wav_header_is_streaming_then_exact():
    h = wav_header(8000)
    assert h[:4] == b"RIFF" and h[4:8] == b"\xff\xff\xff\xff" and h[40:44] == b"\xff\xff\xff\xff"
    h = wav_header(8000, data_bytes=100)
    assert int.from_bytes(h[40:44], "little") == 100 and int.from_bytes(h[4:8], "little") == 136


@pytest.mark.parametrize("fmt, rate", [("mp3", 7000), ("opus", 44100), ("wma", 24000), ("pcm16", 1000)])
def test_unsupported_format_or_rate(fmt, rate):
    with pytest.raises(AudioFormatError):
        make_encoder(fmt, rate)


# --- G.711 --------------------------------------------------------------------------------

# Reference values from ITU-T G.711 (decoded levels, 16-bit scale)
ULAW_DECODE = {0x00: -32124, 0x0F: -16764, 0x7F: 0, 0x80: 32124, 0x8F: 16764, 0xFF: 0, 0xF0: 120, 0x70: -120}
ALAW_DECODE = {0xD5: 8, 0x55: -8, 0xAA: 32256, 0x2A: -32256, 0x80: 5504, 0x00: -5504}


def test_g711_tables():
    for code, lin in ULAW_DECODE.items():
        assert int(ulaw2lin(bytes([code]))[0]) == lin
    for code, lin in ALAW_DECODE.items():
        assert int(alaw2lin(bytes([code]))[0]) == lin
    assert lin2ulaw(np.array([0], np.int16)) == b"\xff"
    assert lin2alaw(np.array([0], np.int16)) == b"\xd5"
    # encoding every decoded level gives back the same code (the tables are consistent)
    for decode, encode in ((ulaw2lin, lin2ulaw), (alaw2lin, lin2alaw)):
        levels = decode(bytes(range(256)))
        again = decode(encode(levels))
        assert np.array_equal(levels, again)


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="audioop removed in 3.13")
def test_g711_bit_identical_to_audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    x = np.arange(-32768, 32768, dtype=np.int16)
    assert lin2ulaw(x) == audioop.lin2ulaw(x.tobytes(), 2)
    assert lin2alaw(x) == audioop.lin2alaw(x.tobytes(), 2)
    codes = bytes(range(256))
    assert ulaw2lin(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert alaw2lin(codes).tobytes() == audioop.alaw2lin(codes, 2)


# --- resampling and speed -------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_streaming_resample_matches_one_shot(rate):
    import soxr

    pcm = tone(2.0)
    data, _ = encode_stream("f32", rate, pcm, chunk=777)
    got = np.frombuffer(data, np.float32)
    ref = soxr.resample(pcm, SR, rate, quality="HQ")
    assert abs(len(got) - len(ref)) <= 2
    n = min(len(got), len(ref))
    assert np.abs(got[:n] - ref[:n]).max() < 1e-3  # no seams at the 777-sample chunk joins


@pytest.mark.parametrize("speed", [0.25, 0.5, 0.8, 1.25, 2.0, 4.0])
def test_speed_changes_duration_not_pitch(speed):
    pcm = tone(3.0, f=300.0)
    data, _ = encode_stream("f32", SR, pcm, chunk=FRAME, speed=speed)
    out = np.frombuffer(data, np.float32)
    assert abs(len(out) - len(pcm) / speed) <= FRAME
    seg = out[len(out) // 4: len(out) // 4 + 8192]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    peak = np.argmax(spec) * SR / len(seg)
    assert abs(peak - 300.0) < 12.0  # pitch kept
    assert np.abs(out).max() < 1.0


def test_speed_stream_is_independent_of_chunking():
    pcm = tone(2.0)
    a = TimeStretch(1.5)
    b = TimeStretch(1.5)
    out_a = np.concatenate([a.process(pcm[i:i + 300]) for i in range(0, len(pcm), 300)] + [a.process(pcm[:0], True)])
    out_b = np.concatenate([b.process(pcm[i:i + 5000]) for i in range(0, len(pcm), 5000)] + [b.process(pcm[:0], True)])
    assert len(out_a) == len(out_b)
    assert np.abs(out_a - out_b).max() < 1e-5


def test_speed_range_enforced():
    for bad in (0.1, 5.0):
        with pytest.raises(AudioFormatError):
            AudioPipeline("pcm16", SR, bad)


# --- reference audio -------------------------------------------------------------------------


def _file(x: np.ndarray, sr: int, fmt: str = "WAV", channels: int = 1) -> bytes:
    buf = io.BytesIO()
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    sf.write(buf, data, sr, format=fmt)
    return buf.getvalue()


def test_reference_cleanup():
    speech = tone(4.0, 44100)
    pad = np.zeros(44100, np.float32)
    raw = _file(np.concatenate([pad, speech, pad]) * 0.2, 44100, "FLAC", channels=2)
    out = process_reference(raw)
    assert out.dtype == np.float32
    assert 4.0 <= len(out) / SR <= 4.3          # edge silence trimmed (50/100 ms margins kept)
    rms = np.sqrt(np.mean(out[SR: 3 * SR] ** 2))
    assert 0.05 < rms < 0.2 and np.abs(out).max() <= 0.95  # loudness normalised, no clipping


def test_reference_clipped_to_15s_at_a_pause():
    parts = []
    for _ in range(10):  # 2 s bursts separated by 0.3 s pauses = 23 s
        parts += [tone(2.0), np.zeros(int(0.3 * SR), np.float32)]
    out = process_reference(_file(np.concatenate(parts), SR))
    assert 12.0 <= len(out) / SR <= 15.0
    tail = out[-int(0.05 * SR):]
    assert np.abs(tail).max() < 0.05  # cut inside a pause, not mid-word


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed")
def test_reference_formats_via_ffmpeg():
    wav = _file(tone(3.0), SR)
    m4a = subprocess.run([FFMPEG, "-v", "error", "-i", "pipe:0", "-c:a", "aac", "-f", "ipod", "pipe:1"],
                         input=wav, capture_output=True).stdout
    if not m4a:  # ipod muxer needs a seekable output on some builds: use ADTS
        m4a = subprocess.run([FFMPEG, "-v", "error", "-i", "pipe:0", "-c:a", "aac", "-f", "adts", "pipe:1"],
                             input=wav, capture_output=True).stdout
    out = process_reference(m4a)
    assert 2.5 < len(out) / SR < 3.3
    mp3 = _file(tone(3.0), SR, "MP3")
    assert 2.5 < len(process_reference(mp3)) / SR < 3.3


@pytest.mark.parametrize("data, why", [
    (b"", "small"), (b"RIFF" + b"\0" * 100, "not a readable"), (b"hello world" * 50, "not a readable"),
    (_file(np.zeros(SR * 3, np.float32), SR), "silent"), (_file(tone(0.5), SR), "at least"),
    (_file(np.sign(tone(3.0)) * 1.0, SR), "clipped"),
])
def test_reference_rejections(data, why):
    with pytest.raises(ReferenceAudioError) as ei:
        process_reference(data)
    assert why in str(ei.value)


def test_reference_rejects_paths_and_urls():
    for bad in ("http://169.254.169.254/latest", "/etc/passwd", None, 42):
        with pytest.raises(ReferenceAudioError):
            process_reference(bad)  # type: ignore[arg-type]


def test_fuzz_reference_decoder_only_raises_its_own_error():
    rng = random.Random(7)
    good = _file(tone(2.0), SR)
    headers = [good[:44], b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"RIFF\xff\xff\xff\xffWAVE"]
    for i in range(300):
        kind = i % 3
        if kind == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3000)))
        elif kind == 1:
            data = rng.choice(headers) + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3000)))
        else:  # corrupt a real file
            b = bytearray(good)
            for _ in range(rng.randrange(1, 50)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            data = bytes(b[: rng.randrange(44, len(b))])
        try:
            out = process_reference(data)
        except ReferenceAudioError:
            continue
        assert out.dtype == np.float32 and np.all(np.isfinite(out))


class _Canary:
    """A loopback HTTP server that records every request: nothing may ever reach it."""

    def __init__(self, body: bytes) -> None:
        import http.server
        import threading

        hits = self.hits = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.srv.shutdown()


def hostile_uploads(url: str, local_file: str) -> dict[str, bytes]:
    """Files that are not audio but make a naive ffmpeg fetch other resources."""
    return {
        "hls-http": (f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3,\n{url}/internal/voice.wav\n"
                     "#EXT-X-ENDLIST\n").encode(),
        "hls-file": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3,\nfile://{local_file}\n#EXT-X-ENDLIST\n".encode(),
        "concat": f"ffconcat version 1.0\nfile '{local_file}'\nfile '{url}/internal/b.wav'\n".encode(),
        "m3u": f"#EXTM3U\n{url}/internal/c.wav\n".encode() * 3,
    }


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed")
def test_reference_playlists_never_fetch_anything(tmp_path):
    wav = _file(tone(3.0), SR)
    local = tmp_path / "secret.wav"
    local.write_bytes(wav)
    canary = _Canary(wav)
    try:
        for _name, data in hostile_uploads(canary.url, str(local)).items():
            with pytest.raises(ReferenceAudioError):
                process_reference(data)
        assert canary.hits == []
    finally:
        canary.close()


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed")
def test_reference_webm_and_m4a_still_decode():
    wav = _file(tone(3.0), SR)
    for args in (["-c:a", "libopus", "-f", "webm"],
                 ["-c:a", "aac", "-f", "mp4", "-movflags", "frag_keyframe+empty_moov"]):
        data = subprocess.run([FFMPEG, "-v", "error", "-i", "pipe:0", *args, "pipe:1"],
                              input=wav, capture_output=True).stdout
        assert data, args
        assert 2.5 < len(process_reference(data)) / SR < 3.3
