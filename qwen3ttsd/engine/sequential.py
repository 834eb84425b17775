"""The sequential backend: qwen-tts's own ``generate``, one whole stream per ``step``.

Why keep it: it is the reference the batched engine is tested against, and the fallback
for a checkpoint the batched engine cannot run. Frames are taken out of qwen-tts as the
talker produces them (:mod:`.frame_tap`), so audio still streams. ``capacity`` is 1: the
scheduler admits the next stream only when this one has finished.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable

import numpy as np
import torch

from ..errors import Cancelled, TTSError
from .backend import Audio, BackendOptions, Done, Failed, Stream, internal_error, streamed_text_unsupported
from .engine import AudioOut, Engine, warmup_request
from .frame_tap import frame_tap
from .request import SynthesisRequest, SynthesisStats
from .streaming_decoder import StreamingDecoder


def generate(engine: Engine, req: SynthesisRequest, on_audio: Callable[[np.ndarray], None],
             cancel: threading.Event | None = None, on_codes: Callable[[Any], None] | None = None,
             decoder: StreamingDecoder | None = None) -> SynthesisStats:
    """Generate ``req`` with qwen-tts and call ``on_audio(float32 mono 24 kHz chunk)`` as
    audio exists.

    Raises TTSError('bad_request', ...) for invalid input before any audio, and Cancelled
    when ``cancel`` is set (generation stops within one frame). ``on_codes`` (diagnostics,
    benchmarks) sees each decoded chunk's (T, 16) codes. Pass the previous segment's
    ``decoder`` to continue one utterance across several generations: the codec state
    carries over, so segment joins are sample-continuous.
    """
    if engine.tts is None:
        raise TTSError("unavailable", "model not loaded")
    kwargs, prompt = engine.prepare(req)
    out = AudioOut(engine.start_decoder(decoder, prompt), req, on_audio, on_codes)
    stats = out.stats
    eos = engine.tts.model.config.talker_config.codec_eos_token_id

    def on_frame(codes: Any) -> None:
        frame = codes[0:1]
        if int(frame[0, 0]) == eos:
            return
        if out.add(frame):
            out.flush()
        if cancel is not None and cancel.is_set():
            raise Cancelled()

    with engine.lock:
        if req.seed is not None:
            torch.manual_seed(int(req.seed))
        else:
            torch.seed()
        try:
            with frame_tap(engine.tts.model.talker, on_frame, cancel), torch.inference_mode():
                engine.tts.model.generate(**kwargs)
            out.flush()
        except TTSError:
            raise
        except Exception as e:
            # A client callback that raises is the client's problem, but it must never
            # leave the model in a bad state: the tap is removed by the context manager.
            raise TTSError("internal", f"generation failed: {type(e).__name__}: {e}") from e
    stats.hit_frame_cap = stats.frames >= kwargs["max_new_tokens"] - 1
    out.finish()
    return stats


class SequentialBackend:
    """One whole generation per ``step``, through qwen-tts's ``generate``."""

    capacity = 1

    def __init__(self, engine: Engine, options: BackendOptions = BackendOptions()) -> None:
        self.engine = engine
        self._waiting: deque[Stream] = deque()

    @property
    def active(self) -> int:
        return len(self._waiting)

    @property
    def status(self) -> dict[str, Any]:
        return {"kind": "sequential", "capacity": self.capacity}

    def admit(self, stream: Stream) -> None:
        if stream.text is not None:  # front ends fall back to their clause path
            stream.sink(streamed_text_unsupported("the sequential engine (the batched one serves it)"))
            return
        self._waiting.append(stream)

    def step(self) -> None:
        if not self._waiting:
            return
        s = self._waiting.popleft()
        try:
            self.engine.use_voice(s.voice)
            decoder = self.engine.continuable(s.continues)
            stats = generate(self.engine, s.request, lambda pcm: s.sink(Audio(pcm)), s.cancel,
                             on_codes=s.on_codes, decoder=decoder)
        except BaseException as e:  # noqa: BLE001 - reported to the stream, never kills the thread
            s.sink(Failed(internal_error(e)))
        else:
            s.sink(Done(stats, decoder))

    def warmup(self) -> None:
        req = warmup_request(self.engine)
        if req is not None:
            generate(self.engine, req, lambda _pcm: None)

    def abort_all(self, err: TTSError) -> None:
        while self._waiting:
            self._waiting.popleft().sink(Failed(err))


__all__ = ["SequentialBackend", "generate"]
