"""The speaker encoder's mel spectrogram without librosa (engine/mel.py) equals qwen-tts's:
the filterbank bitwise librosa's, the spectrogram bitwise qwen-tts's ``mel_spectrogram``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen3ttsd.engine.mel import mel_filterbank, mel_spectrogram


@pytest.mark.parametrize("args", [(24000, 1024, 128, 0, 12000), (16000, 400, 80, 0, None), (22050, 2048, 64, 30, 8000)])
def test_the_filterbank_is_librosas(args):
    from librosa.filters import mel

    sr, n_fft, n_mels, fmin, fmax = args
    want = mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    got = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_the_spectrogram_is_qwen_tts_s():
    from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram as reference

    torch.manual_seed(0)
    y = (torch.rand(1, 24000) * 1.6 - 0.8)
    want = reference(y, n_fft=1024, num_mels=128, sampling_rate=24000, hop_size=256, win_size=1024, fmin=0,
                     fmax=12000)
    assert torch.equal(mel_spectrogram(y), want)


def test_importing_it_leaves_librosa_out():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "import sys, torch; from qwen3ttsd.engine.mel import mel_spectrogram; "
                        "mel_spectrogram(torch.zeros(1, 4800)); print('librosa' in sys.modules)"],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr
