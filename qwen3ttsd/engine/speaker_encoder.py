"""The Base model's speaker encoder (ECAPA-TDNN) as the project's own modules, loaded
without transformers (issue 19: Base clone prompts without qwen-tts).

A clone's x-vector is this network over the reference clip's log-mel spectrogram
(:mod:`.mel`). qwen-tts's module is plain torch, but lives in a file that imports
transformers; this is the same network with the same parameter names
(``speaker_encoder.blocks.N...``), so it loads from ``model.safetensors`` as it is, and
computes the same ops in the same order (tests: ``tests/test_speaker_encoder.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import TTSError
from .checkpoint import WEIGHTS_FILE, _from_dict, load_weights, read_config
from .mel import mel_spectrogram

SAMPLE_RATE = 24000


@dataclass(frozen=True)
class SpeakerEncoderConfig:
    """config.json's ``speaker_encoder_config`` (qwen-tts's defaults)."""

    mel_dim: int = 128
    enc_dim: int = 1024
    enc_channels: list[int] = field(default_factory=lambda: [512, 512, 512, 512, 1536])
    enc_kernel_sizes: list[int] = field(default_factory=lambda: [5, 3, 3, 3, 1])
    enc_dilations: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 1])
    enc_attention_channels: int = 128
    enc_res2net_scale: int = 8
    enc_se_channels: int = 128
    sample_rate: int = SAMPLE_RATE


def _conv(c_in: int, c_out: int, kernel: int = 1, dilation: int = 1) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding="same", padding_mode="reflect")


class TimeDelayNetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = _conv(c_in, c_out, kernel, dilation)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x))


class Res2NetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, scale: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TimeDelayNetBlock(c_in // scale, c_out // scale, kernel, dilation)
                                    for _ in range(scale - 1))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        outputs: list[Tensor] = []
        for i, part in enumerate(torch.chunk(x, self.scale, dim=1)):
            if i == 0:
                out = part
            elif i == 1:
                out = self.blocks[0](part)
            else:
                out = self.blocks[i - 1](part + out)
            outputs.append(out)
        return torch.cat(outputs, dim=1)


class SqueezeExcitationBlock(nn.Module):
    def __init__(self, c_in: int, c_se: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = _conv(c_in, c_se)
        self.conv2 = _conv(c_se, c_out)

    def forward(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.conv2(F.relu(self.conv1(x.mean(dim=2, keepdim=True)))))
        return x * s


class SqueezeExcitationRes2NetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, scale: int, c_se: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.tdnn1 = TimeDelayNetBlock(c_in, c_out, 1, 1)
        self.res2net_block = Res2NetBlock(c_out, c_out, scale, kernel, dilation)
        self.tdnn2 = TimeDelayNetBlock(c_out, c_out, 1, 1)
        self.se_block = SqueezeExcitationBlock(c_out, c_se, c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x)))) + x


class AttentiveStatisticsPooling(nn.Module):
    def __init__(self, channels: int, attention_channels: int) -> None:
        super().__init__()
        self.eps = 1e-12
        self.tdnn = TimeDelayNetBlock(channels * 3, attention_channels, 1, 1)
        self.conv = _conv(attention_channels, channels)

    def _statistics(self, x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        mean = (m * x).sum(2)
        std = torch.sqrt((m * (x - mean.unsqueeze(2)).pow(2)).sum(2).clamp(self.eps))
        return mean, std

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[-1]
        # qwen-tts's all-ones mask, kept for its rounding: the weights are mask / total
        mask = torch.ones(x.shape[0], 1, n, dtype=x.dtype, device=x.device)
        mean, std = self._statistics(x, mask / mask.sum(dim=2, keepdim=True))
        attention = torch.cat([x, mean.unsqueeze(2).repeat(1, 1, n), std.unsqueeze(2).repeat(1, 1, n)], dim=1)
        attention = F.softmax(self.conv(torch.tanh(self.tdnn(attention))), dim=2)
        mean, std = self._statistics(x, attention)
        return torch.cat((mean, std), dim=1).unsqueeze(2)


class SpeakerEncoder(nn.Module):
    """log mel (B, frames, mel_dim) -> x-vector (B, enc_dim)."""

    def __init__(self, c: SpeakerEncoderConfig) -> None:
        super().__init__()
        if not len(c.enc_channels) == len(c.enc_kernel_sizes) == len(c.enc_dilations):
            raise TTSError("model_load_failed",
                           "speaker encoder: enc_channels, kernel sizes and dilations differ in length")
        ch = c.enc_channels
        blocks: list[nn.Module] = [TimeDelayNetBlock(c.mel_dim, ch[0], c.enc_kernel_sizes[0], c.enc_dilations[0])]
        blocks += [SqueezeExcitationRes2NetBlock(ch[i - 1], ch[i], c.enc_res2net_scale, c.enc_se_channels,
                                                 c.enc_kernel_sizes[i], c.enc_dilations[i])
                   for i in range(1, len(ch) - 1)]
        self.blocks = nn.ModuleList(blocks)
        self.mfa = TimeDelayNetBlock(ch[-1], ch[-1], c.enc_kernel_sizes[-1], c.enc_dilations[-1])
        self.asp = AttentiveStatisticsPooling(ch[-1], c.enc_attention_channels)
        self.fc = _conv(ch[-1] * 2, c.enc_dim)

    def forward(self, mels: Tensor) -> Tensor:
        x = mels.transpose(1, 2)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        x = self.asp(self.mfa(torch.cat(outs[1:], dim=1)))
        return self.fc(x).squeeze(-1)

    @torch.inference_mode()
    def embed(self, wav: np.ndarray) -> Tensor:
        """qwen-tts's ``extract_speaker_embedding``: a 24 kHz mono clip -> (enc_dim,)."""
        p = next(self.parameters())
        mels = mel_spectrogram(torch.from_numpy(np.asarray(wav, dtype=np.float32)).unsqueeze(0)).transpose(1, 2)
        return self(mels.to(p.device).to(p.dtype))[0]


def load_speaker_encoder(model_dir: str | os.PathLike, dtype: torch.dtype = torch.float32,
                         device: str | torch.device = "cpu") -> SpeakerEncoder:
    """The speaker encoder of the Base checkpoint at ``model_dir``. No transformers import."""
    config: Any = read_config(model_dir)
    try:
        c = _from_dict(SpeakerEncoderConfig, dict(config.speaker_encoder_config or {}))
    except TypeError as e:
        raise TTSError("model_load_failed", f"bad speaker_encoder_config in {model_dir}: {e}") from e
    with torch.device("meta"):
        encoder = SpeakerEncoder(c)
    load_weights(encoder, Path(model_dir) / WEIGHTS_FILE, "speaker_encoder.", dtype=dtype, device=device)
    return encoder


__all__ = ["SpeakerEncoder", "SpeakerEncoderConfig", "load_speaker_encoder"]
