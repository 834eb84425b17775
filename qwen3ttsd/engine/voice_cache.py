"""A saved clone voice's registration kept beside it on disk, between daemon starts.

Why: the daemon exits on idle, and the first call to a saved clone voice after every start
registered it again - the reference resampled, the codec encoder loaded, the reference
encoded to codes, the x-vector computed, and the codec primed with the codes: 1.2-1.5 s at
0.6B for a 10 s ICL reference (plus the encoder's load), all before that caller's first
audio. Here a start reads one small file instead.

What: ``<voice dir>/prompt-<tag>.safetensors``, written after a voice's first registration
with the project's own weights: the reference codes, the x-vector and the primed codec
state as tensors, the item's flags and reference text in its metadata. ``tag`` hashes all
that the registration depends on - the voice key (its id and a hash of its audio and text)
and x-vector flag, the weight cache's key for the checkpoint (its weight files' sizes, mtimes
and sampled blocks, torch, Python, the engine's code; :func:`.weight_cache.cache_key`) at the
codec's dtype and device, and the codec's precision plan - so another checkpoint, setting or
engine finds no file and registers anew; a hash of the tensors guards against damage
safetensors' own checks pass. Living in the voice's own directory, the file is 0600 in a
0700 directory like the recording it comes from, and goes when the voice is deleted or
replaced. Written whole or not at all (:mod:`qwen3ttsd.atomic_file`); a file that does not
read back as expected is removed and the voice registered again. Safetensors only: nothing
here is unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..atomic_file import replace_file

log = logging.getLogger("qwen3ttsd.engine")

PREFIX = "prompt-"
KEEP = 4               # registrations kept per voice (one per checkpoint serving it), newest first
PRIVATE_FILE = 0o600


def checkpoint_key(checkpoint_files: list[Path], codec: torch.nn.Module) -> str:
    """What a registration depends on besides the voice and the codec's precision plan: the
    weight cache's key (the checkpoint's weight files, torch, Python, the engine's code) for
    ``codec``'s device and dtype (computed once per loaded model: a few ms of reads)."""
    from .weight_cache import cache_key

    p = next(codec.parameters())
    return json.dumps(cache_key([f for f in checkpoint_files if f.is_file()], "clone", p.device, p.dtype),
                      sort_keys=True)


def registration_tag(voice_key: str, x_vector_only: bool, checkpoint: str, codec: torch.nn.Module) -> str:
    """What a kept registration is valid for, as a file-name-safe hash: the voice, the
    checkpoint (:func:`checkpoint_key`: with the codec's dtype and device) and ``codec``'s
    precision plan now (``QWEN3TTSD_DTYPE``, the device and ``CODEC_QUANT`` change the primed
    state, and the codes' and x-vector's dtype)."""
    from .codec_quant import plan_of

    key = json.dumps({"voice": voice_key, "xvec": x_vector_only, "checkpoint": checkpoint,
                      "codec_plan": plan_of(codec)}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def load(voice_dir: Path, tag: str, codec: torch.nn.Module,
         device: torch.device) -> tuple[dict[str, Any], dict | None] | None:
    """(the clone item's fields - :class:`.engine.CloneItem` s -, the primed state of a stream
    of ``codec`` or None) kept for ``tag``; None where none is (or it is damaged: then it is
    removed)."""
    from safetensors import safe_open

    path = voice_dir / f"{PREFIX}{tag}.safetensors"
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {})["qwen3ttsd"])
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        if meta.get("tag") != tag:
            raise ValueError("another registration's file")
        if meta.get("sha256") != _digest(tensors):
            raise ValueError("its tensors are not the ones written")
        tensors = {name: t.to(device) for name, t in tensors.items()}
        return _item_fields(meta, tensors), _state(meta, tensors, {name: id(m) for name, m in codec.named_modules()})
    except Exception as e:  # noqa: BLE001 - any damage: registered again
        log.warning("kept registration %s unusable (%s: %s): registering the voice again", path.name,
                    type(e).__name__, e)
        with contextlib.suppress(OSError):   # (a read-only voice directory: it stays, unused)
            path.unlink(missing_ok=True)
        return None


def store(voice_dir: Path, tag: str, item: Any, state: dict | None, codec: torch.nn.Module) -> None:
    """Keep a registration for ``tag`` (best effort: a voice directory that is gone or
    unwritable costs only the next start's registration). ``state`` is a stream of
    ``codec``'s: its parts are keyed by the ids of ``codec``'s modules, kept by their names."""
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {"spk": item.ref_spk_embedding}
    if item.ref_code is not None:
        tensors["code"] = item.ref_code
    meta = {"tag": tag, "x_vector_only_mode": bool(item.x_vector_only_mode), "icl_mode": bool(item.icl_mode),
            "ref_text": item.ref_text, "state": None}
    if state is not None:
        names = {id(m): name for name, m in codec.named_modules()}
        conv = {names[k]: v for k, v in state["conv"].items()}   # (in the stream's order)
        trans = {names[k]: v for k, v in state["trans"].items()}
        meta["state"] = {"frames": state["frames"], "kv": [kv is not None for kv in state["kv"]],
                         "conv": list(conv), "trans": list(trans)}
        tensors.update({f"conv/{k}": v for k, v in conv.items()})
        tensors.update({f"trans/{k}": v for k, v in trans.items()})
        for i, kv in enumerate(state["kv"]):
            if kv is not None:
                tensors[f"kv/{i}/k"], tensors[f"kv/{i}/v"] = kv
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta["sha256"] = _digest(plain)
    data = save(plain, metadata={"qwen3ttsd": json.dumps(meta)})
    try:
        replace_file(voice_dir / f"{PREFIX}{tag}.safetensors", data, PRIVATE_FILE)
        _keep_newest(voice_dir)
    except OSError as e:
        log.warning("clone registration not kept in %s: %s", voice_dir, e)


def _digest(tensors: dict[str, Tensor]) -> str:
    """A hash of the tensors' names, dtypes, shapes and bytes (CPU tensors): a file damaged
    in a way safetensors' own checks pass (a flipped bit) is not used."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _keep_newest(voice_dir: Path) -> None:
    kept = sorted(voice_dir.glob(f"{PREFIX}*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in kept[KEEP:]:
        old.unlink(missing_ok=True)


def _item_fields(meta: dict, tensors: dict[str, Tensor]) -> dict[str, Any]:
    if meta["icl_mode"] != ("code" in tensors):
        raise ValueError("reference codes and ICL mode disagree")
    return dict(ref_code=tensors.get("code"), ref_spk_embedding=tensors["spk"],
                x_vector_only_mode=bool(meta["x_vector_only_mode"]), icl_mode=bool(meta["icl_mode"]),
                ref_text=meta.get("ref_text"))


def _state(meta: dict, tensors: dict[str, Tensor], ids: dict[str, int]) -> dict | None:
    """The stream state as :meth:`.streaming_decoder.StreamingDecoder.set_state` takes it: its
    parts keyed by the ids of this process's codec modules (a name it lacks: KeyError)."""
    s = meta.get("state")
    if s is None:
        return None
    return {"conv": {ids[k]: tensors[f"conv/{k}"] for k in s["conv"]},
            "trans": {ids[k]: tensors[f"trans/{k}"] for k in s["trans"]},
            "kv": [(tensors[f"kv/{i}/k"], tensors[f"kv/{i}/v"]) if has else None for i, has in enumerate(s["kv"])],
            "frames": int(s["frames"])}


__all__ = ["checkpoint_key", "load", "registration_tag", "store"]
