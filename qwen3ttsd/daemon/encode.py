"""``audio.encode``: audio a client already has, as a complete file of another format.

The page plays pcm16 as it streams; its Download in mp3/opus/flac/aac must be that same
audio, not a second synthesis (which, sampled afresh, would differ). Encoding happens here
because the bridge stays numpy- and libsndfile-free, and so that there is one encoder path:
the same :class:`~qwen3ttsd.audio.AudioPipeline` as synthesis, and since the file is whole,
its exact final header (mp3: LAME's Info frame with frame count and padding, so every
decoder reports the exact duration). The file goes back as ``tts.chunk`` notifications of at
most ``MAX_CHUNK_BYTES``, then an :class:`~qwen3ttsd.messages.EncodeResult`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from .. import messages as M, protocol as P
from ..audio import AudioFormatError, AudioPipeline
from ..errors import TTSError
from ..formats import MODEL_RATE
from .server import Connection
from .state import DaemonState
from .synthesis import MAX_CHUNK_BYTES


def encode_file(pcm16: bytes, fmt: str, sample_rate: int) -> tuple[bytes, AudioPipeline]:
    """pcm16 mono at the model rate -> a whole file (with its final header patched in)."""
    x = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], "<i2").astype(np.float32) / 32768.0
    pipeline = AudioPipeline(fmt, sample_rate)
    try:
        data = pipeline.header() + pipeline.feed(x) + pipeline.finish()
        final = pipeline.final_header()
        return (final + data[len(final):] if final else data), pipeline
    finally:
        pipeline.close()


class Encoding:
    """``audio.encode``; a client that stops reading is cut off after ``stall_timeout``."""

    def __init__(self, svc: DaemonState) -> None:
        self.stall = svc.cfg.stall_timeout

    async def encode(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.EncodeResult:
        msg = M.AudioEncode.from_wire(params)
        try:
            data, pipeline = await asyncio.to_thread(encode_file, msg.audio, msg.format, msg.sample_rate)
        except AudioFormatError as e:
            raise TTSError("bad_request", str(e), data={"param": "format"}) from e
        for seq, at in enumerate(range(0, len(data), MAX_CHUNK_BYTES)):
            chunk = M.Chunk(msgid, seq, data[at:at + MAX_CHUNK_BYTES])
            await conn.send(P.notification(chunk.method, chunk.to_wire()), self.stall)
        return M.EncodeResult(format=pipeline.format, mime=pipeline.mime, sample_rate=pipeline.sample_rate,
                              bytes=len(data), duration_s=round(len(msg.audio) // 2 / MODEL_RATE, 4))
