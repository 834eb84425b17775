"""The quantized weights of a checkpoint, kept on disk between daemon starts (issue 19).

Why: the daemon exits on idle, and every start used to quantize again - read the fp32
linears (2.2 GB at 0.6B, converted from the stored bf16), quantize them (seconds on a
NAS-class CPU), free them. With the cache a start reads the int8 weights (a quarter of the
bytes) and never touches the fp32 linears they replace.

What is stored is generic: whatever the quantization built (any picklable structure of
modules, layers and tensors, quantized tensors included - :mod:`.lean`'s int8 layers today,
another scheme tomorrow), pickled with every tensor kept out of the pickle, as a tensor of
a safetensors file (quantized ones as their integers plus scale/zero point), and the names
of the checkpoint's tensors the quantized form replaced (``released``: a cached start does
not load them). The pickle names only classes of torch and of this package, and is read
back by an unpickler that resolves nothing else. Reading repacks the int8 linears for
fbgemm (most of a start's CPU: ~3.6 s at 0.6B) on a small pool while the unpickling goes on
(:class:`_Pending`) and after it: the first requests are served from the plain int8 weights
meanwhile (``lean.unpacked_int8``), and a thread puts each packed weight in place.

The key (all of it must match, or the file is not used):

* the checkpoint: each weight file's size and mtime, a hash of its safetensors header and
  of 16 64-KiB blocks spread over it (a few ms; a full content hash would read 1.8 GB at
  0.6B - more than the quantization it saves. A file replaced by another checkpoint of the
  same architecture has another mtime and other sampled blocks; one edited in place keeping
  size and mtime is the case this does not catch);
* torch's version, Python's, the quantization mode, device and dtype;
* this package's engine sources (a change in how layers or the quantization are built, a
  renamed class, invalidates every cache: it is rebuilt once);
* :data:`FORMAT`, this module's layout.

A file is written once, complete, to a temporary name, synced, then renamed over the final
name: a reader never sees a partial file, and two daemons building at once both write whole
files, the last rename wins (identical content), and neither reads the other's temporary.
Loading checks the key and a CRC-32 of every tensor (a truncated file already fails in
safetensors' own size checks): any failure is logged, the file removed, the weights
quantized again. An unwritable state directory (read-only, full) costs only the cache.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import inspect
import io
import json
import logging
import os
import pickle
import re
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait as wait_all
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .thread_priority import IDLE_NICE, PACK_NICE, background_thread

log = logging.getLogger("qwen3ttsd.engine")

FORMAT = 1
SAMPLE_BLOCKS = 16
SAMPLE_BYTES = 64 * 1024
_META = "qwen3ttsd.weight_cache"
IDLE_POLL_S = 0.05   # how often a waiting writer looks whether the streams are done
IDLE_GRACE_S = 1.0   # quiet before a writer starts (a first request may be just being admitted)
REPACK_THREADS = max(1, min(4, os.cpu_count() or 1))   # int8 linears packed at once on a read
_PACKED_LINEAR = "__torch__.torch.classes.quantized.LinearPackedParamsBase"

_DTYPES = {torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32", torch.int64: "I64",
           torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
           torch.bool: "BOOL"}


class Uncacheable(Exception):
    """The built structure holds something the cache cannot store (a GPU tensor, ...)."""


# --- the key --------------------------------------------------------------------------


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Size, mtime, and a hash of the safetensors header plus sampled blocks (see the module
    docstring for why not a full content hash)."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if path.suffix == ".safetensors":
            head = f.read(8)
            h.update(head)
            if len(head) == 8:
                h.update(f.read(min(int.from_bytes(head, "little"), 100 * 2**20)))
        step = max(1, st.st_size // SAMPLE_BLOCKS)
        for i in range(SAMPLE_BLOCKS):
            f.seek(i * step)
            h.update(f.read(SAMPLE_BYTES))
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sample": h.hexdigest()}


def code_version() -> str:
    """A hash of this package's engine sources: what builds the cached structure."""
    h = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        h.update(source.name.encode())
        h.update(source.read_bytes())
    return h.hexdigest()[:16]


def cache_key(files: Iterable[Path], mode: str, device: str, dtype: torch.dtype) -> dict[str, Any]:
    return {"format": FORMAT, "mode": mode, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
            "torch": torch.__version__, "python": "%d.%d" % sys.version_info[:2], "code": code_version(),
            "checkpoint": [file_fingerprint(p) for p in files]}


# --- pickling with the tensors outside ---------------------------------------------------


@dataclass
class _Entry:
    name: str
    dtype: str
    shape: list[int]
    nbytes: int
    crc: int


class _Pickler(pickle.Pickler):
    """Pickles a structure with every tensor replaced by a reference: the tensors go to
    ``emit(name, tensor)`` in the order met (the caller writes or sizes them)."""

    def __init__(self, f: io.BytesIO, emit: Callable[[str, torch.Tensor], None]) -> None:
        super().__init__(f, protocol=4)
        self.emit = emit
        self.count = 0
        self.plain: dict[int, tuple[torch.Tensor, tuple]] = {}   # id -> (tensor, pid): shared once

    def _name(self) -> str:
        self.count += 1
        return f"t{self.count - 1}"

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, torch.Tensor):
            return None
        if obj.device.type != "cpu":
            raise Uncacheable(f"a {obj.device} tensor")
        if obj.is_quantized:
            return self._quantized(obj)
        seen = self.plain.get(id(obj))
        if seen is not None:
            return seen[1]
        name = self._name()
        self.emit(name, obj.detach())
        pid = ("param" if isinstance(obj, torch.nn.Parameter) else "t", name)
        self.plain[id(obj)] = (obj, pid)   # held: an id is unique only while its object lives
        return pid

    def _quantized(self, q: torch.Tensor) -> tuple:
        """Integers plus quantization parameters; never shared (unpacked weights are fresh)."""
        name = self._name()
        self.emit(name, q.int_repr())
        dtype = str(q.dtype).removeprefix("torch.")
        if q.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            return ("q", name, dtype, float(q.q_scale()), int(q.q_zero_point()))
        if q.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scales, zeros = self._name(), self._name()
            self.emit(scales, q.q_per_channel_scales())
            self.emit(zeros, q.q_per_channel_zero_points())
            return ("qc", name, dtype, scales, zeros, int(q.q_per_channel_axis()))
        raise Uncacheable(f"quantization scheme {q.qscheme()}")


def _bytes(t: torch.Tensor) -> memoryview:
    t = t.contiguous()
    return memoryview(t.view(torch.uint8).reshape(-1).numpy()) if t.numel() else memoryview(b"")


def _crc(t: torch.Tensor) -> int:
    return zlib.crc32(_bytes(t))


_ALLOWED_PREFIXES = ("torch.nn.", "torch.ao.", "qwen3ttsd.engine.")
_ALLOWED = {("collections", "OrderedDict"), ("functools", "partial"), ("builtins", "set"),
            ("builtins", "frozenset"), ("builtins", "slice"), ("torch", "ScriptObject"), ("torch", "Size")}


def _defined_in_allowed_module(obj: Any) -> bool:
    """A class or Python function whose own module is an allowed one (``torch.nn.functional.silu``
    yes; ``torch.nn.functional.torch``, a module it imported, no)."""
    return (isinstance(obj, type) or inspect.isfunction(obj)) and \
        str(getattr(obj, "__module__", "")).startswith(_ALLOWED_PREFIXES)


class _Unpickler(pickle.Unpickler):
    """Resolves only torch's module classes and dtypes and this package's engine classes;
    tensors come from ``tensor(pid)``."""

    def __init__(self, data: bytes, tensor: Callable[[tuple], torch.Tensor]) -> None:
        super().__init__(io.BytesIO(data))
        self.tensor = tensor

    def find_class(self, module: str, name: str) -> Any:
        # A dotted name would walk attributes out of an allowed module (protocol 4:
        # torch.nn.functional -> torch.serialization.os.system); a prefix gives only the
        # classes and functions defined there, not what those modules imported.
        if "." not in name:
            if (module, name) in _ALLOWED:
                return super().find_class(module, name)
            if module.startswith(_ALLOWED_PREFIXES):
                found = super().find_class(module, name)
                if _defined_in_allowed_module(found):
                    return found
            if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
                return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weight cache")

    def persistent_load(self, pid: Any) -> Any:
        return self.tensor(pid)


class _Pending:
    """Stands in for a ``torch.ScriptObject`` while a cache is unpickled: its state (an int8
    Linear's weight and bias) is packed on a pool (:func:`_prepack`) meanwhile and after,
    while the int8 call serves from the plain weight (:meth:`ready`), and
    :meth:`WeightCache.packed` puts the packed object in its place once all are packed.

    Why: unpickled as it is, a ScriptObject packs in ``__setstate__`` - fbgemm's prepack,
    3.2 s of the 0.6B cache's 3.7 s read, one linear after another, holding the GIL (the
    load running beside the read waited too). ``torch.ops.quantized.linear_prepack`` does
    the same packing (the same engine) and lets go of the GIL."""

    # set per read by _DeferringUnpickler: its pool, the int8 integers (mapped) of each
    # quantized weight by id, and every _Pending made
    pool: Any = None
    plain: dict[int, torch.Tensor] = {}
    made: list["_Pending"] = []
    # Until packed, an int8 Linear can be computed from its plain weight (lean.unpacked_int8):
    int8: torch.Tensor | None = None      # (out, in) int8, symmetric (zero points 0); None: wait
    scales: torch.Tensor | None = None    # (out,) float32
    bias: torch.Tensor | None = None

    def __setstate__(self, state: Any) -> None:
        if (isinstance(state, tuple) and len(state) == 2 and state[1] == _PACKED_LINEAR
                and isinstance(state[0], tuple) and len(state[0]) == 2):
            weight, self.bias = state[0]
            self._plain(weight)
            self.future = self.pool.submit(lambda: _prepack(*state[0]))
            self.made.append(self)
        else:   # another TorchScript class: built as the plain unpickler builds it
            obj = torch.ScriptObject.__new__(torch.ScriptObject)
            obj.__setstate__(state)
            self.future = _done(obj)

    def _plain(self, weight: torch.Tensor) -> None:
        """The weight's integers and per-row scales, where its quantization is symmetric."""
        t = self.plain.pop(id(weight), None)
        if t is None or weight.dtype != torch.qint8:
            return
        if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            if not bool((weight.q_per_channel_zero_points() == 0).all()) or weight.q_per_channel_axis() != 0:
                return
            self.scales = weight.q_per_channel_scales().to(torch.float32)
        elif weight.q_zero_point() == 0:
            self.scales = torch.full((weight.shape[0],), weight.q_scale(), dtype=torch.float32)
        else:
            return
        self.int8 = t

    def ready(self) -> Any:
        """The packed object once packed, else None (meanwhile: :attr:`int8`, or wait with
        :meth:`packed`). A packing that failed stays None: the plain weight serves."""
        if self.int8 is None:
            return self.packed()
        f = self.future
        return f.result() if f.done() and f.exception() is None else None

    def packed(self) -> Any:
        """The packed object, waiting for it."""
        return self.future.result()


def _prepack(weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
    """An int8 Linear's packed parameters (what ``LinearPackedParamsBase.__setstate__``
    builds), with the GIL released while fbgemm packs. Inference mode: the per-channel
    scales it reads one by one are not tracked as autograd views (5 % of the packing)."""
    with torch.inference_mode():
        return torch.ops.quantized.linear_prepack(weight, bias)


def _done(value: Any) -> Any:
    from concurrent.futures import Future

    f: Future = Future()
    f.set_result(value)
    return f


class _DeferringUnpickler(_Unpickler):
    """:class:`_Unpickler` with each ScriptObject a :class:`_Pending` packed on ``pool``."""

    def __init__(self, data: bytes, tensor: Callable[[tuple], torch.Tensor], pool: Any,
                 plain: dict[int, torch.Tensor]) -> None:
        super().__init__(data, tensor)
        self.made: list[_Pending] = []
        self.pending = type("_PendingOnPool", (_Pending,), {"pool": pool, "plain": plain, "made": self.made})

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)   # the allow-list decides, as for any name
        return self.pending if found is torch.ScriptObject else found


def _resolve(value: Any, swap: Callable[[_Pending], Any] = lambda p: p.packed()) -> Any:
    """``value`` with every :class:`_Pending` in it replaced by ``swap(it)`` (by default its
    packed object, waiting for each), in place: in dicts (a module's attributes), lists, and
    the attributes of objects; one in a tuple (immutable) is an error (the file is rebuilt)."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (torch.Tensor, str, bytes, int, float, type(None))):
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            for k, v in obj.items():
                if isinstance(v, _Pending):
                    obj[k] = swap(v)
                else:
                    stack.append(v)
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                if isinstance(v, _Pending):
                    obj[i] = swap(v)
                else:
                    stack.append(v)
        elif isinstance(obj, (tuple, set, frozenset)):
            if any(isinstance(v, _Pending) for v in obj):
                raise ValueError("a packed object inside a tuple or set")
            stack.extend(obj)
        elif isinstance(obj, functools.partial):
            stack += [obj.func, obj.args, obj.keywords]
        elif isinstance(obj, _Pending):
            raise ValueError("a packed object at the top level")
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.append(vars(obj))
    return value


# --- the cache ----------------------------------------------------------------------------


class WeightCache:
    """One checkpoint's cache file for one quantization mode (see the module docstring).

    ``load()`` at model load: the cached structure (:attr:`value`) and the names of the
    checkpoint tensors it replaces (:attr:`released`: the loader skips them), or None.
    The int8 weights go on packing on a pool after ``load()`` returns: :meth:`take` hands
    the structure over as it is (each weight serves unpacked until packed: issue 19),
    :meth:`packed` waits for the packing, :attr:`value` too.
    ``store(value, released)`` after a quantization that missed."""

    def __init__(self, root: str | os.PathLike, checkpoint: str | os.PathLike, files: Iterable[str],
                 mode: str, device: str, dtype: torch.dtype) -> None:
        self.root = Path(root)
        ckpt = Path(checkpoint).resolve()
        self.key = cache_key([ckpt / f for f in files], mode, device, dtype)
        key_json = json.dumps(self.key, sort_keys=True)
        self.key_json = key_json
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", ckpt.name)[:40] or "model"
        self.slot = f"{slug}-{hashlib.sha256(str(ckpt).encode()).hexdigest()[:8]}-{re.sub(r'[^a-z0-9]+', '', mode)}"
        self.path = self.root / f"{self.slot}-{hashlib.sha256(key_json.encode()).hexdigest()[:20]}.safetensors"
        self._value: Any = None
        # (pool, structure, its _Pendings) while the int8 weights pack: until packed()
        self._packing: tuple[ThreadPoolExecutor, Any, list[_Pending]] | None = None
        self._settle_lock = threading.Lock()
        self.released: list[str] = []
        # what is wrong with a read structure for its user (None: usable); a file that fails
        # it is removed like a damaged one (another code version's layout, a hand-made file)
        self.check: Callable[[Any], str | None] = lambda value: None
        self.hit = False
        self.status: dict[str, Any] = {"path": str(self.path), "state": "unused"}

    # --- reading --------------------------------------------------------------------------

    def load(self) -> bool:
        """Read the cache file if there is a valid one (True: :attr:`value`, :attr:`released`
        set). A present but unusable file is removed (it is rebuilt by the next store)."""
        if not self.path.is_file():
            self.status["state"] = "miss"
            return False
        try:
            self._value, self.released = self._read()
            if (problem := self.check(self._value)) is not None:
                raise ValueError(f"not the structure this code builds: {problem}")
        except Exception as e:  # noqa: BLE001 - whatever is wrong with it, it is not used
            self._discard(e)
            return False
        self.hit = True
        self.status["state"] = "hit"
        return True

    @property
    def value(self) -> Any:
        """The structure read by :meth:`load`, every weight packed (None: none, or taken)."""
        self.packed()
        return self._value

    def take(self) -> Any:
        """The structure read by :meth:`load`, handed over (the model holds it from here).
        Its int8 Linears may still be packing: each serves from its plain weight until its
        packed object is ready (``lean``'s int8 call); :meth:`settled` / :meth:`packed` put
        the packed objects in place."""
        value, self._value = self._value, None
        return value

    def settled(self) -> bool:
        """Whether the packing is over and the packed objects are in place (never waits)."""
        return self._packing is None

    def packed(self) -> None:
        """Wait until every int8 weight of the read structure is packed, and put the packed
        objects in place (a thread started by the read does this as soon as they are, so the
        plain weights' pages go: the weights are not held twice). A weight whose packing
        failed (a file that passed its checks, but fbgemm refuses) goes on serving from its
        plain weight, and the file is removed (the next load quantizes again)."""
        job = self._packing
        if job is None:
            return
        pool, value, made = job
        wait_all([p.future for p in made])
        with self._settle_lock:
            if self._packing is None:   # settled meanwhile by the other caller
                return
            failed = [p for p in made if p.future.exception() is not None]
            try:
                _resolve(value, lambda p: p if p in failed and p.int8 is not None else p.packed())
            finally:
                pool.shutdown(wait=True)
                made.clear()   # the per-read _Pending class holds this list: no cycle left
                self._packing = None
                self.status["packed"] = True
        if failed:
            log.warning("weight cache %s: %d weights failed to pack (%s); serving them unpacked, "
                        "the file is removed", self.path, len(failed), failed[0].future.exception())
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.status["state"] = "rebuilt"

    def _discard(self, why: Exception) -> None:
        """The file is not used: said, removed (rebuilt by the next store), nothing kept."""
        log.warning("weight cache %s unusable (%s: %s): quantizing again", self.path, type(why).__name__, why)
        with self._settle_lock:
            if self._packing is not None:
                self._packing[0].shutdown(wait=True, cancel_futures=True)
                self._packing[2].clear()
            self._value, self._packing, self.hit = None, None, False
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.status["state"] = "rebuilt"

    def peek(self) -> list[str] | None:
        """The released names of a cache file whose header matches the key (nothing else is
        read or checked: :meth:`load` does), else None. Lets the loader skip those weights
        while :meth:`load` runs beside it."""
        try:
            return list(json.loads(self._meta()["released"])) if self.path.is_file() else None
        except Exception:  # noqa: BLE001 - load() reports and removes it
            return None

    def _meta(self) -> dict[str, str]:
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get(_META) != str(FORMAT):
            raise ValueError("not a weight cache of this format")
        if meta.get("key") != self.key_json:
            raise ValueError("written for another key")
        return meta

    def _read(self) -> tuple[Any, list[str]]:
        from safetensors import safe_open

        meta = self._meta()
        data = base64.b64decode(meta["pickle"])
        if zlib.crc32(data) != int(meta["pickle_crc"]):
            raise ValueError("pickle checksum mismatch")
        crcs: dict[str, int] = json.loads(meta["crc"])
        # Two mappings: quantized weights are repacked on load (their pages read once,
        # the mapping gone with them); plain tensors are used in place from the second.
        pool = ThreadPoolExecutor(REPACK_THREADS, thread_name_prefix="qwen3ttsd-repack",
                                  initializer=background_thread, initargs=(PACK_NICE,))
        plain: dict[int, torch.Tensor] = {}
        with safe_open(str(self.path), framework="pt") as packed, safe_open(str(self.path), framework="pt") as kept:
            def tensor(pid: tuple) -> torch.Tensor:
                kind, name = pid[0], pid[1]
                t = (packed if kind in ("q", "qc") else kept).get_tensor(name)
                if _crc(t) != crcs[name]:
                    raise ValueError(f"checksum mismatch in {name}")
                if kind == "t":
                    return t
                if kind == "param":
                    return torch.nn.Parameter(t, requires_grad=False)
                qdtype = getattr(torch, pid[2])
                if kind == "q":
                    q = torch._make_per_tensor_quantized_tensor(t, pid[3], pid[4])
                else:
                    scales, zeros = packed.get_tensor(pid[3]), packed.get_tensor(pid[4])
                    for n, part in ((pid[3], scales), (pid[4], zeros)):
                        if _crc(part) != crcs[n]:
                            raise ValueError(f"checksum mismatch in {n}")
                    q = torch._make_per_channel_quantized_tensor(t, scales, zeros, pid[5])
                if q.dtype != qdtype:
                    raise ValueError(f"{name}: {q.dtype}, expected {qdtype}")
                plain[id(q)] = t   # held with q until its _Pending takes it
                return q

            unpickler = _DeferringUnpickler(data, tensor, pool, plain)
            try:
                value = _resolve(unpickler.load(), swap=lambda p: p)   # (a _Pending in a tuple: an error)
            except BaseException:   # no packing left running after a failed read
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        self._packing = (pool, value, unpickler.made)   # the packing goes on: settled(), packed()
        self.status["packed"] = False
        plain.clear()   # (what no _Pending took: not symmetric int8)
        threading.Thread(target=self.packed, name="qwen3ttsd-weight-settle", daemon=True).start()
        return value, list(json.loads(meta["released"]))

    # --- writing --------------------------------------------------------------------------

    def store(self, value: Any, released: Iterable[str], pause: Callable[[], None] = lambda: None) -> bool:
        """Write ``value`` (see :class:`WeightCache`) to the cache, atomically; False (logged)
        where it cannot be (unwritable directory, uncacheable structure). Removes this
        checkpoint's older cache files (other keys) once the new one is in place. ``pause()``
        is called between tensors (a background writer waits there while streams run)."""
        tmp: Path | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            entries: list[_Entry] = []

            def size(name: str, t: torch.Tensor) -> None:
                pause()
                if t.dtype not in _DTYPES:
                    raise Uncacheable(f"dtype {t.dtype}")
                entries.append(_Entry(name, _DTYPES[t.dtype], list(t.shape), t.numel() * t.element_size(), _crc(t)))

            first = io.BytesIO()
            _Pickler(first, size).dump(value)  # pass 1: the header (sizes, checksums)
            data = first.getvalue()
            header = self._header(entries, data, released)
            tmp = self.root / f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(len(header).to_bytes(8, "little"))
                f.write(header)
                written = iter(entries)

                def write(name: str, t: torch.Tensor) -> None:  # pass 2: the same tensors, in order
                    pause()
                    e = next(written)
                    if e.name != name or e.nbytes != t.numel() * t.element_size():
                        raise Uncacheable("the structure changed while it was written")
                    f.write(_bytes(t))

                _Pickler(io.BytesIO(), write).dump(value)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
            _sync_dir(self.root)
        except (OSError, Uncacheable, pickle.PicklingError, TypeError, AttributeError) as e:
            log.warning("weight cache not written to %s (%s: %s); the next start quantizes again",
                        self.root, type(e).__name__, e)
            self.status["state"] = "unwritable"
            return False
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        self.status["state"] = "written"
        self._remove_others()
        return True

    def _header(self, entries: list[_Entry], data: bytes, released: Iterable[str]) -> bytes:
        header: dict[str, Any] = {"__metadata__": {
            _META: str(FORMAT), "key": self.key_json, "pickle": base64.b64encode(data).decode(),
            "pickle_crc": str(zlib.crc32(data)), "released": json.dumps(sorted(released)),
            "crc": json.dumps({e.name: e.crc for e in entries})}}
        offset = 0
        for e in entries:
            header[e.name] = {"dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, offset + e.nbytes]}
            offset += e.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        return raw + b" " * (-len(raw) % 8)   # tensors 8-byte aligned (safetensors allows the padding)

    def _remove_others(self) -> None:
        """This checkpoint and mode's files for other keys (an older torch, older code), and
        temporaries left by a process that died writing."""
        for p in self.root.glob(f"{self.slot}-*.safetensors"):
            if p != self.path:
                with contextlib.suppress(OSError):
                    p.unlink()
        for p in self.root.glob(f".{self.slot}-*.tmp"):
            pid = p.name.rsplit(".", 3)[-3]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    p.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _sync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def from_cache_or(cache: WeightCache | None, build: Callable[[], Any]) -> Any:
    """The cached structure where ``cache`` has one, else ``build()`` (the hook a quantizer
    goes through; it stays generic: the cache stores whatever ``build`` returns)."""
    if cache is not None and cache.hit:
        return cache.take()   # the model holds it from here; cache.packed() before using it
    return build()


def store_when_idle(cache: WeightCache, backend: Any, attr: str, module: torch.nn.Module) -> threading.Thread:
    """Write ``backend.model.<attr>`` (the built structure) to ``cache`` on a low-priority
    thread while ``backend`` has no stream in flight (it starts after a second of quiet and
    pauses between tensors whenever a stream runs): after a miss, off the first request's
    clock. ``module``'s emptied tensors are recorded as released. Holds the backend weakly:
    an unloaded model is not written."""
    released = released_names(module)
    ref = weakref.ref(backend)

    def wait_idle(quiet_s: float = 0.0) -> None:
        since = time.monotonic()
        while True:
            b = ref()
            if b is None or not b.engine.loaded:
                raise _Gone()
            if b.active:
                since = time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            del b
            time.sleep(IDLE_POLL_S)

    def run() -> None:
        background_thread(IDLE_NICE)
        try:
            wait_idle(IDLE_GRACE_S)
            b = ref()
            value = None if b is None else b.model.__dict__.get(attr)
            del b
            if value is not None:
                cache.store(value, released, pause=wait_idle)
        except _Gone:
            log.info("weight cache not written: the model was unloaded first")

    t = threading.Thread(target=run, name="qwen3ttsd-weight-cache", daemon=True)
    t.start()
    return t


class _Gone(Exception):
    """The model a writer waited for was unloaded."""


def released_names(module: torch.nn.Module) -> list[str]:
    """``module``'s state-dict keys whose tensors were freed (emptied) after quantization:
    what a cached start does not load."""
    return sorted(k for k, t in module.state_dict(keep_vars=True).items()
                  if t.numel() == 0 and t.device.type != "meta")


__all__ = ["FORMAT", "WeightCache", "cache_key", "from_cache_or", "released_names", "store_when_idle"]
