"""The batched step's one device -> host read.

Why: on a GPU every ``.item()``, ``.tolist()`` or ``bool(tensor)`` stops the CPU until the
GPU has caught up, so a step with several of them pays the whole pipeline's latency
several times and cannot overlap launching the next step with running this one. The
step engine keeps sampled ids on the device and reads them here, once per talker
forward: one copy of all rows' codes into a pinned host buffer (``non_blocking``), one
wait, then plain Python ints from which EOS and frame caps are decided.

On the CPU the read is ``tolist()`` (no copy, no wait). The fake-CUDA test lane
(:mod:`qwen3ttsd.testing.fake_cuda`) replaces :meth:`HostRead._wait` to count reads and
supply ids, since fake tensors have no values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class HostRead:
    """Reads small integer tensors to the host through one reused pinned buffer."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.reads = 0                 # host syncs so far (a counter the tests and stats read)
        self._buf: Tensor | None = None

    def ints(self, t: Tensor) -> list:
        """``t.tolist()``, as one synchronisation: the copy is queued behind the work that
        produced ``t`` and waited for once."""
        self.reads += 1
        if t.device.type == "cpu":
            return t.tolist()
        flat = t.reshape(-1)
        n = flat.numel()
        if self._buf is None or self._buf.numel() < n or self._buf.dtype != flat.dtype:
            self._buf = torch.empty(max(n, 64), dtype=flat.dtype, pin_memory=True)
        host = self._buf[:n]
        host.copy_(flat, non_blocking=True)
        return self._wait(host, t.device, t.shape)

    def _wait(self, host: Tensor, device: torch.device, shape: torch.Size) -> list:
        """Wait for the queued copy into ``host`` (the one synchronisation); its values."""
        torch.cuda.current_stream(device).synchronize()
        return host.view(shape).tolist()


def pcm(audio: Tensor) -> np.ndarray:
    """A decoded chunk's samples on the host, float32 (the codec's own device -> host
    read: audio has to leave the device once, whatever the step does)."""
    return audio.float().cpu().numpy()


__all__ = ["HostRead", "pcm"]
