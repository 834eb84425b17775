"""The seam between the scheduler (policy) and an engine backend (mechanics).

The scheduler decides *which* streams run (priorities, sessions, queue limits); a backend
decides *how*: it admits a stream at a step boundary, advances every admitted stream with
``step()``, and reports through each stream's ``sink`` as things happen, with one of the
event types below:

* :class:`Audio`  float32 mono 24 kHz samples, in order;
* :class:`Done`   exactly once on success: the stats, and the codec stream a later segment
  of the same call continues;
* :class:`Failed` exactly once on failure (a :class:`TTSError`; ``Cancelled`` when the
  stream's ``cancel`` event was set).

A backend owns the model's state: on admission it registers the stream's clone voice with
its model and decides whether the call's codec stream (``Stream.continues``) can go on.
Backends are built from :class:`BackendOptions` by :func:`.factory.make_backend`; all
calls happen on the scheduler's engine thread. This module is the contract only: torch-free,
and it imports no implementation.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..errors import Cancelled, TTSError, text_stream_unsupported
from .request import SynthesisRequest, SynthesisStats

if TYPE_CHECKING:
    from .. import config

log = logging.getLogger("qwen3ttsd.engine")


@dataclass(frozen=True)
class Audio:
    """A piece of the stream's audio: float32 mono samples at the model's rate (numpy)."""

    pcm: Any


@dataclass(frozen=True)
class Done:
    """The stream finished. ``codec`` is the codec stream it ended with: the next segment of
    the same call passes it back as :attr:`Stream.continues` so the join is seamless."""

    stats: SynthesisStats
    codec: Any = None


@dataclass(frozen=True)
class Failed:
    """The stream ended with ``error`` (``Cancelled`` when it was cancelled)."""

    error: TTSError


StreamEvent = Audio | Done | Failed
Sink = Callable[[StreamEvent], None]


@dataclass(frozen=True)
class VoiceSource:
    """A clone voice's reference: registered with the model when a stream using it is
    admitted (cached by content there, so repeating it costs nothing)."""

    name: str
    wav: Any                       # float32 mono at the model's rate (numpy)
    ref_text: str | None = None
    keep_dir: str | None = None    # a saved voice's directory: its registration is kept there
                                   # between starts (engine/voice_cache.py); None: not kept


@dataclass(eq=False)
class Stream:
    """One generation in flight (one text segment of a request)."""

    request: SynthesisRequest
    sink: Sink
    cancel: threading.Event = field(default_factory=threading.Event)
    voice: VoiceSource | None = None   # the clone voice ``request.voice`` names, if any
    continues: Any = None              # the call's codec stream to continue (from a Done), if any
    on_codes: Callable[[Any], None] | None = None  # diagnostics: each decoded chunk's (T, 16) codes
    text: Any = None                   # a TextFeed (engine/text_feed.py): the text arrives while it runs


@dataclass(frozen=True)
class BackendOptions:
    """How a loaded model's backend runs: one default per knob, made once from the config."""

    kind: str = "batched"          # a key of factory.BACKENDS
    max_batch: int = 16            # streams stepped together (batched)
    quant: str = "none"            # none | int8 | auto: the talker's and predictor's linears (batched;
                                   # int8 is CPU-only; auto = int8 on the CPU: :func:`serving_quant`)
    codec_quant: str = "none"      # none | int8: the codec's convolutions, per layer (batched, CPU)
    batch_decode: bool = True      # one codec call for all due streams per step (batched)
    overlap_decode: bool | None = None  # codec on its own thread beside generation (batched, CPU);
                                   # None: chosen from the core count (codec_lane.overlap_by_default)
    prewarm_frames: int = 0        # build the codec's kernels for chunks of 1..N frames at every
                                   # batch size while idle (batched, CPU; engine/prewarm.py)
    prompts: str = "own"           # own | qwen-tts: who builds a stream's prompt (batched; own is
                                   # bitwise equal, off the engine thread: engine/prompts.py)
    cuda_graphs: bool = True       # replay the static decode step from a CUDA graph per bucket (CUDA)

    @classmethod
    def from_config(cls, cfg: config.DaemonConfig) -> BackendOptions:
        return cls(kind=cfg.engine, max_batch=max(1, int(cfg.max_batch)), quant=quant_setting(cfg.quant),
                   codec_quant=cfg.codec_quant,
                   batch_decode=cfg.batch_decode, overlap_decode=_auto_or_bool("overlap_decode", cfg.overlap_decode),
                   cuda_graphs=cfg.cuda_graphs,
                   prewarm_frames=max(cfg.first_chunk_frames, cfg.chunk_frames) if cfg.prewarm else 0)


QUANT_SETTINGS = ("auto", "int8", "int4", "none")   # QWEN3TTSD_QUANT ("" reads as none)


def quant_setting(value: str) -> str:
    """``QWEN3TTSD_QUANT`` checked: one of :data:`QUANT_SETTINGS`; anything else is a
    ValueError (the daemon's start reports it as a bad configuration)."""
    v = str(value).strip().lower() or "none"
    if v not in QUANT_SETTINGS:
        raise ValueError(f"quant must be one of {', '.join(QUANT_SETTINGS)}, not {value!r}")
    return v


def serving_quant(setting: str, device_type: str) -> str:
    """The quantization the batched engine's linears serve with on ``device_type``: "int8"
    or "" (none). ``auto`` is int8 on the CPU, where the talker's and predictor's matrix-
    vector products are memory-bound and read 4x fewer bytes (issue 25: the 0.6B step
    0.57x realtime int8 vs 4x slower fp32), and none on a GPU (bf16 there; int8 is a CPU
    kernel). An explicit ``int8`` off the CPU also serves unquantized (the backend warns).
    ``int4`` is int8 too, with the predictor's int4 copies for small batches (:func:`int4_rows`)."""
    v = quant_setting(setting)
    return "int8" if device_type == "cpu" and v in ("auto", "int8", "int4") else ""


def int4_rows(setting: str) -> int | None:
    """Whether the code predictor's int8 linears also get int4 copies for small batches
    (:mod:`.int4`): with ``int4``, None (up to how many rows is measured on this CPU when the
    weights are built), else 0. Not part of ``auto``: int4's error is ~4x int8's (its
    figures in bench/RESULTS.md), faster on some CPUs only, so it is the user's call."""
    return None if quant_setting(setting) == "int4" else 0


def _auto_or_bool(name: str, value: str | bool) -> bool | None:
    """A setting that is ``auto`` (None: the backend chooses) or on/off; anything else is a
    ValueError (the daemon's start reports it as a bad configuration)."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v == "auto":
        return None
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name}: expected auto, 1 or 0, got {value!r}")


class Backend(Protocol):
    """What the scheduler needs of an engine backend."""

    engine: Any
    capacity: int            # streams it can hold at once; the scheduler admits no more

    @property
    def active(self) -> int:
        """Streams admitted and not yet reported (Done/Failed)."""

    @property
    def status(self) -> dict[str, Any]:
        """What admin.status shows of it (kind, capacity, background work)."""

    def admit(self, stream: Stream) -> None:
        """Take ``stream`` in. Never raises: bad input is reported through the sink."""

    def step(self) -> None:
        """Advance every admitted stream (a no-op when none is)."""

    def warmup(self) -> None:
        """Run what builds the kernels a first request needs (at load)."""

    def abort_all(self, err: TTSError) -> None:
        """Finish every admitted stream with ``err`` (model unloaded, daemon stopping)."""


def internal_error(e: BaseException) -> TTSError:
    if isinstance(e, TTSError):
        return e
    log.exception("generation failed")
    return TTSError("internal", f"generation failed: {type(e).__name__}: {e}")


def streamed_text_unsupported(where: str) -> Failed:
    """The end of a streamed-text request on a backend that cannot take one: ``unsupported``,
    which the front ends (bridge/turns.py) answer by falling back to their clause path."""
    return Failed(text_stream_unsupported(where))


__all__ = ["Audio", "Backend", "BackendOptions", "Cancelled", "Done", "Failed", "Sink", "Stream",
           "StreamEvent", "VoiceSource", "internal_error", "streamed_text_unsupported"]
