"""Counting the aten ops a piece of model code runs, and how many of them allocate.

Why: the predictor loop's cost on CPU is mostly per-op overhead and allocation, so "fewer
ops, fewer allocations per frame" is what its tests assert and its benchmark prints
(issue 25). One counter for both, beside :class:`.fake_cuda.SyncCounter`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """Counts aten ops by name, and those that allocate their output (not a view, not
    in-place, no ``out=``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.allocs = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        if not func.is_view and not name.endswith("_") and "out" not in kwargs:
            self.allocs += 1
        return func(*args, **kwargs)


__all__ = ["OpCounter"]
