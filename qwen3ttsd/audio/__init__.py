"""Audio back end (daemon side): streaming encoders, resampling, speed, reference audio.

Plain function/class interfaces over float32 mono numpy arrays; no torch.
"""

from ..formats import AudioFormatError
from .encoders import make_encoder
from .pipeline import AudioPipeline

__all__ = ["AudioFormatError", "make_encoder", "AudioPipeline"]
