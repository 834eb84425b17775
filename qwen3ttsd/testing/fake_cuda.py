"""The default engine on ``cuda`` without a GPU: PyTorch's ``FakeTensorMode``.

Why: no machine that builds or tests this project has a GPU, and most of what breaks the
first time code meets one shows without it. Under ``FakeTensorMode`` tensors created on
``cuda`` (in bf16) carry shapes, dtypes and devices through the real model code and no
data: a CPU tensor mixed into CUDA math raises ("found two different devices"), so does a
dtype mismatch in a matrix product, and so does any read of a value on the host
(``.item()``, ``.tolist()``, ``bool(t)``, a boolean-mask index) - each of them a GPU -> host
synchronisation on a real device. Fake tensors cost no memory, so the 0.6B/1.7B-shaped
configs load as cheaply as the tiny one.

:func:`fake_cuda_engine` loads a checkpoint through the default path (the own loader,
``weights="own"``, bf16 on ``cuda``; a directory without weight files gets fake weights of
the checkpoint's shapes) and builds the batched backend on it. What fakes cannot do is
stood in for at the engine's seams, each checked:

* the step's one host read (:class:`.host_sync.HostRead`) returns ids from ``ids_for``
  (default: codebook id 0, never EOS) and is counted; every other device -> host copy is
  counted by :class:`SyncCounter`, and a value read raises;
* decoded audio leaves the device through :func:`.host_sync.pcm` (counted apart: audio must
  reach the host);
* per-row generators are stand-ins that remember their device; a draw checks it matches
  the tensor's (fake tensors take no generator);
* prompts are built inline (the fake mode is per thread);
* CPU-only paths (the GEMM-conv codec, dynamic int8) raise when reached with CUDA tensors.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch._subclasses import fake_tensor
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


class SyncCounter(TorchDispatchMode):
    """Counts the ops that are GPU -> host synchronisations: device -> host copies and
    scalar reads (``FakeTensorMode`` then raises on the latter)."""

    def __init__(self) -> None:
        super().__init__()
        self.d2h = 0
        self.scalar_reads = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            self.scalar_reads += 1
        elif func is aten._to_copy.default and _dev(args[0]) == "cuda" and _dev(kwargs.get("device")) == "cpu":
            self.d2h += 1
        elif func is aten.copy_.default and _dev(args[0]) == "cpu" and _dev(args[1]) == "cuda":
            self.d2h += 1
        return func(*args, **kwargs)


def _dev(x: Any) -> str | None:
    if isinstance(x, torch.Tensor):
        return x.device.type
    if isinstance(x, (torch.device, str)):
        return torch.device(x).type
    return None


class FakeGenerator:
    """A row's generator under fake tensors: its device, its seed calls."""

    def __init__(self, device: Any) -> None:
        self.device = torch.device(device)
        self.seeded: int | None = None

    def manual_seed(self, seed: int) -> "FakeGenerator":
        self.seeded = int(seed)
        return self

    def seed(self) -> int:
        return 0


class _Inline:
    """An executor that runs a job at submission (prompt builds stay in the fake mode)."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to the caller, as a pool would
            f.set_exception(e)
        return f

    def shutdown(self, wait: bool = True) -> None:
        pass


class _ShapeFile:
    """A safetensors file stand-in: every tensor the module expects, fake, in bf16 (the
    stored dtype of the real checkpoints)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self.shapes = shapes

    def __enter__(self) -> "_ShapeFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def keys(self) -> list[str]:
        return list(self.shapes)

    def get_tensor(self, name: str) -> torch.Tensor:
        return torch.empty(self.shapes[name], dtype=torch.bfloat16)


class _RealFile:
    """A real safetensors file read outside the fake mode (its tensors are made from mapped
    storage); the loader's ``.to("cuda", bf16)`` then makes them fake."""

    def __init__(self, f: Any) -> None:
        self.f = f

    def __enter__(self) -> "_RealFile":
        with fake_tensor.unset_fake_temporarily():
            self.f.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        with fake_tensor.unset_fake_temporarily():
            self.f.__exit__(*exc)

    def keys(self) -> list[str]:
        return list(self.f.keys())

    def get_tensor(self, name: str) -> torch.Tensor:
        with fake_tensor.unset_fake_temporarily():
            return self.f.get_tensor(name)


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes a checkpoint's weight file would hold (built on meta)."""
    from ..engine.checkpoint import CODEC_DIR, read_codec_config, read_config
    from ..engine.codec_model import CodecDecoder
    from ..engine.talker_model import Talker

    with torch.device("meta"):
        if path.parent.name == CODEC_DIR:
            module: torch.nn.Module = CodecDecoder(read_codec_config(path.parent.parent))
            prefix = "decoder."
        else:
            module = Talker(read_config(path.parent).talker_config, torch.bfloat16, "meta")
            prefix = "talker."
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def write_shapes_checkpoint(out: str | Path, size: str, variant: str = "custom_voice") -> Path:
    """A checkpoint directory of ``size``'s configs and tokenizer, without weight files:
    :func:`fake_cuda_engine` loads it with fake weights (a 1.7B-shaped model in no memory)."""
    from . import tinymodel

    out = Path(out)
    (out / "speech_tokenizer").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(tinymodel.build_config(variant, size)))
    (out / "generation_config.json").write_text(json.dumps(tinymodel.GENERATION_CONFIG))
    (out / "speech_tokenizer" / "config.json").write_text(json.dumps(tinymodel.build_codec_config(size)))
    tinymodel._write_tokenizer(out)
    return out


@dataclass
class FakeLane:
    """What :func:`fake_cuda_engine` yields: the engine, its backend and the counters."""

    engine: Any
    backend: Any
    counter: SyncCounter
    audio_reads: int = 0
    ids_for: Callable[[int], list[int]] = field(default=lambda n: [0] * n)

    @property
    def host_reads(self) -> int:
        """The step's sanctioned reads (:class:`.host_sync.HostRead`)."""
        return int(self.backend.host.reads)

    def syncs(self) -> int:
        """Every GPU -> host synchronisation so far except decoded audio's."""
        return self.counter.d2h + self.counter.scalar_reads


@contextlib.contextmanager
def fake_cuda_engine(model_dir: str | Path, max_batch: int = 64, quant: str = "auto", cache_dir: str = "",
                     **backend_options: Any) -> Iterator[FakeLane]:
    """The default engine loaded on fake ``cuda`` (bf16) and a batched backend on it, with the
    daemon's settings (``quant``: its QWEN3TTSD_QUANT, ``cache_dir``: its weight cache)."""
    from ..engine import batched, checkpoint as ckpt, cpu_conv, host_sync, lean, loader, sampling
    from ..engine.backend import BackendOptions
    from ..engine.engine import Engine
    from ..engine.loader import LoadOptions

    model_dir = Path(model_dir)
    real_open, real_gemm, real_resolve = ckpt._open, cpu_conv._use_gemm, loader.resolve
    lane: FakeLane | None = None

    def open_weights(path: Any) -> Any:
        path = Path(path)
        return _RealFile(real_open(path)) if path.is_file() else _ShapeFile(_shapes(path))

    def wait(self: Any, host: torch.Tensor, device: torch.device, shape: torch.Size) -> list:
        assert device.type == "cuda" and host.device.type == "cpu", (device, host.device)
        assert lane is not None and len(shape) == 1, shape
        return lane.ids_for(host.numel())

    def pcm(audio: torch.Tensor) -> np.ndarray:
        assert audio.device.type == "cuda" and audio.dtype.is_floating_point, (audio.device, audio.dtype)
        assert lane is not None
        lane.audio_reads += 1
        return np.zeros(audio.shape[-1], dtype=np.float32)

    def exponential(q: torch.Tensor, gen: Any) -> torch.Tensor:
        assert isinstance(gen, FakeGenerator) and gen.device.type == q.device.type, (gen, q.device)
        return q.exponential_(1)

    def gemm(x: torch.Tensor, conv: Any) -> bool:
        use = real_gemm(x, conv)
        if use and x.device.type != "cpu":
            raise AssertionError("the CPU GEMM-conv codec path taken on " + str(x.device))
        return use

    def no_int8(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("dynamic int8 (CPU only) reached on cuda")

    def resolve(opts: Any) -> Any:
        with mock.patch.object(torch.cuda, "is_available", lambda: True):  # only here: fake
            return real_resolve(opts)                                    # tensors ask it too

    def row_generator(device: Any, seed: int | None) -> FakeGenerator:
        gen = FakeGenerator(device)
        if seed is not None:
            gen.manual_seed(seed)
        return gen

    patches: list[Any] = [
        mock.patch.object(loader, "resolve", resolve),
        # no constant propagation: it runs small ops for real, on a device that is not there
        mock.patch.object(fake_tensor, "CONSTANT_NUMEL_LIMIT", -1),
        mock.patch.object(ckpt, "_open", open_weights),
        mock.patch.object(host_sync.HostRead, "_wait", wait),
        mock.patch.object(host_sync, "pcm", pcm),
        mock.patch.object(sampling, "exponential", exponential),
        mock.patch.object(batched, "row_generator", row_generator),
        mock.patch.object(batched.BatchedBackend, "_builder_pool", lambda self: _Inline()),
        mock.patch.object(cpu_conv, "_use_gemm", gemm),
        mock.patch.object(lean, "quantize_int8", no_int8),
    ]
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        counter = stack.enter_context(SyncCounter())
        engine = Engine(str(model_dir), LoadOptions(device="cuda", weights="own", quant=quant, cache_dir=cache_dir))
        engine.load()
        backend = batched.BatchedBackend(engine, BackendOptions(max_batch=max_batch, quant=quant, **backend_options))
        lane = FakeLane(engine, backend, counter)
        yield lane


__all__ = ["FakeGenerator", "FakeLane", "SyncCounter", "fake_cuda_engine", "write_shapes_checkpoint"]
