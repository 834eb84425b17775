"""What the scheduler hands an engine backend, and what it gets back: plain dataclasses,
torch-free, so scheduling code and its tests never import the model stack."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SynthesisRequest:
    """One utterance. Which fields matter depends on the model type:
    custom_voice needs ``speaker``; voice_design needs ``instruct``; base needs ``voice``."""

    text: str
    language: str = "auto"
    speaker: str | None = None
    instruct: str | None = None
    voice: str | None = None              # id of a voice registered with add_voice()
    seed: int | None = None
    first_chunk_frames: int = 1
    chunk_frames: int = 4
    max_frames: int | None = None         # runaway cap; default scales with the text
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None


@dataclass
class SynthesisStats:
    frames: int = 0
    samples: int = 0
    chunks: int = 0
    first_audio_s: float | None = None
    total_s: float = 0.0
    hit_frame_cap: bool = False
