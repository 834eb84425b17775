"""The torch side: only the daemon (and tests/benchmarks) import this package."""

from .engine import SAMPLE_RATE, Engine, SynthesisRequest, SynthesisStats, frame_budget
from .loader import LoadOptions

__all__ = ["Engine", "LoadOptions", "SynthesisRequest", "SynthesisStats", "SAMPLE_RATE", "frame_budget"]
