"""The speaker encoder's mel spectrogram without librosa (issue 19: Base clone prompts).

qwen-tts computes a reference clip's x-vector from a 128-bin log-mel spectrogram whose
filterbank comes from ``librosa.filters.mel`` (Slaney mel scale, Slaney area norm);
importing librosa costs a cold start ~1 s and pulls scipy and numba. This is librosa's
filterbank, op for op in numpy (the same float64 steps and the same float32 roundings, so
the table is bitwise librosa's: ``tests/test_mel.py``), and qwen-tts's
``mel_spectrogram`` around it.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

_F_SP = 200.0 / 3          # Slaney: linear below 1 kHz ...
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0   # ... logarithmic above


def hz_to_mel(hz: float) -> float:
    if hz >= _MIN_LOG_HZ:
        return float(_MIN_LOG_MEL + np.log(hz / _MIN_LOG_HZ) / _LOGSTEP)
    return hz / _F_SP


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    freqs = _F_SP * mels
    log_t = mels >= _MIN_LOG_MEL
    freqs[log_t] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_t] - _MIN_LOG_MEL))
    return freqs


@functools.lru_cache(maxsize=4)
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)``
    (htk=False, norm="slaney", float32): (n_mels, 1 + n_fft // 2). Read-only."""
    fmax = float(sr) / 2 if fmax is None else fmax
    weights: np.ndarray = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    weights.setflags(write=False)
    return weights


def mel_spectrogram(y: torch.Tensor, n_fft: int = 1024, num_mels: int = 128, sampling_rate: int = 24000,
                    hop_size: int = 256, win_size: int = 1024, fmin: float = 0,
                    fmax: float | None = 12000) -> torch.Tensor:
    """qwen-tts's ``mel_spectrogram`` (its defaults: the speaker encoder's settings): y (B, T)
    -> log mel (B, num_mels, frames)."""
    basis = torch.from_numpy(mel_filterbank(sampling_rate, n_fft, num_mels, fmin, fmax).copy()).float().to(y.device)
    window = torch.hann_window(win_size).to(y.device)
    padding = (n_fft - hop_size) // 2
    y = torch.nn.functional.pad(y.unsqueeze(1), (padding, padding), mode="reflect").squeeze(1)
    spec = torch.stft(y, n_fft, hop_length=hop_size, win_length=win_size, window=window, center=False,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)
    return torch.log(torch.clamp(torch.matmul(basis, spec), min=1e-5))


__all__ = ["mel_filterbank", "mel_spectrogram"]
