"""mp3 timing: the encoder's delay is marked, so decoders put speech where it was (issue 20 item 2).

LAME adds 1105 samples of lead (576 encoder + 529 decoder delay) and pads the last frame.
Unmarked, every decoder played a 3.200 s clip as 3.264 s, 46 ms late. A streamed mp3 now
starts with a LAME "Info" frame giving the delay (decoders that read it - ffmpeg, so
Chromium and PyAV - start on the first real sample); once finished, ``final_header()``
is LAME's own complete Info frame (frame count, padding, seek table) for whoever keeps the
stream as a file: patched in, every decoder gets the exact duration.
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from qwen3ttsd.audio import AudioPipeline
from qwen3ttsd.formats import FRAME_SAMPLES, MODEL_RATE

FFMPEG = shutil.which("ffmpeg")
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed")
SECONDS, CLICK = 3.2, 0.5
RATES = [24000, 16000, 48000, 8000]


def clicked() -> np.ndarray:
    x = np.zeros(int(MODEL_RATE * SECONDS), np.float32)
    x[int(MODEL_RATE * CLICK)] = 0.9
    return x


def encode(rate: int) -> tuple[bytes, bytes]:
    """(the streamed bytes, the final header to patch in)."""
    p = AudioPipeline("mp3", rate)
    x = clicked()
    parts = [p.header()] + [p.feed(x[i:i + 4 * FRAME_SAMPLES]) for i in range(0, len(x), 4 * FRAME_SAMPLES)]
    parts.append(p.finish())
    final = p.final_header()
    p.close()
    return b"".join(parts), final


def ffmpeg_decode(src: str, rate: int, data: bytes | None = None) -> np.ndarray:
    r = subprocess.run([FFMPEG, "-v", "error", "-i", src, "-f", "f32le", "-ac", "1", "-ar", str(rate), "pipe:1"],
                       input=data, capture_output=True, check=True)
    return np.frombuffer(r.stdout, np.float32)


def click_at(y: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(y))) / rate


def spf(rate: int) -> int:
    return 1152 if rate > 24000 else 576


@pytest.mark.parametrize("rate", RATES)
def test_streamed_mp3_starts_without_the_encoder_lead(rate):
    data, _ = encode(rate)
    y = ffmpeg_decode("pipe:0", rate, data)
    assert click_at(y, rate) == pytest.approx(CLICK, abs=0.002)        # was 46 ms late at 24 kHz
    # the end is only marked in a finished file: at most one frame of padding remains
    assert SECONDS <= len(y) / rate <= SECONDS + spf(rate) / rate


@pytest.mark.parametrize("rate", RATES)
def test_finished_mp3_file_has_exact_duration_for_every_decoder(rate, tmp_path):
    data, final = encode(rate)
    assert final and data.startswith(final[:4]) and len(final) < len(data)
    whole = final + data[len(final):]
    path = tmp_path / "speech.mp3"
    path.write_bytes(whole)
    y = ffmpeg_decode(str(path), rate)
    assert len(y) / rate == pytest.approx(SECONDS, abs=0.001)
    assert click_at(y, rate) == pytest.approx(CLICK, abs=0.002)
    s, sr = sf.read(io.BytesIO(whole), dtype="float32")
    assert sr == rate and len(s) / rate == pytest.approx(SECONDS, abs=0.001)
    assert click_at(s, rate) == pytest.approx(CLICK, abs=0.002)


def test_other_formats_have_no_final_header():
    for fmt in ("wav", "pcm16", "flac", "opus"):
        p = AudioPipeline(fmt, 24000)
        p.header()
        p.feed(clicked()[:4800])
        p.finish()
        assert p.final_header() == b""
        p.close()


CHROMIUM_DECODE = """async ([b64, rate]) => {
  const bin = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const audio = await new OfflineAudioContext(1, 1, rate).decodeAudioData(bin.buffer);
  const d = audio.getChannelData(0);
  let peak = 0, at = 0;
  for (let i = 0; i < d.length; i++) if (Math.abs(d[i]) > peak) { peak = Math.abs(d[i]); at = i; }
  return [audio.duration, at / audio.sampleRate];
}"""


def test_chromium_plays_the_streamed_mp3_on_time():
    """What the web page and LiveKit/Pipecat browser clients hear (Chromium's decoder)."""
    import base64
    import os

    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("no chromium")
    data, final = encode(24000)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--headless", "--disable-gpu"])
        try:
            page = browser.new_page()
            streamed = page.evaluate(CHROMIUM_DECODE, [base64.b64encode(data).decode(), 24000])
            whole = final + data[len(final):]
            finished = page.evaluate(CHROMIUM_DECODE, [base64.b64encode(whole).decode(), 24000])
        finally:
            browser.close()
    assert streamed[1] == pytest.approx(CLICK, abs=0.002)          # was +46 ms
    assert SECONDS <= streamed[0] <= SECONDS + 576 / 24000
    assert finished[0] == pytest.approx(SECONDS, abs=0.001) and finished[1] == pytest.approx(CLICK, abs=0.002)
