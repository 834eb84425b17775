"""Taking codec frames out of qwen-tts as the talker generates them.

qwen-tts has no audio streaming: ``generate`` returns all codes at the end, and a
``streamer=`` argument is silently dropped. But every decode step of the talker returns,
in ``out.hidden_states[1]``, the complete 16-codebook frame of the previously sampled
token. Wrapping the talker's ``forward`` (with ``functools.wraps``, which HF's kwarg
validation needs) hands each frame over the moment it exists, and raising from the wrapper
stops generation within one frame.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable, Iterator

from ..errors import Cancelled


@contextlib.contextmanager
def frame_tap(talker, on_frame: Callable[[object], None],
              cancel: threading.Event | None = None) -> Iterator[None]:
    """Install the tap for one generation. ``on_frame`` gets a (B, 16) code tensor.

    Only one generation may run on a talker at a time (the tap and qwen-tts's own
    ``rope_deltas`` live on the shared module), which the engine's lock guarantees.
    """
    original = talker.forward

    @functools.wraps(original)
    def tapped(*args, **kwargs):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        out = original(*args, **kwargs)
        codes = out.hidden_states[1] if out.hidden_states is not None else None
        if codes is not None:
            on_frame(codes)
        return out

    talker.forward = tapped
    try:
        yield
    finally:
        try:
            del talker.forward  # back to the class method
        except AttributeError:
            pass
