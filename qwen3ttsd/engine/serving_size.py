"""Weights held at the size they serve at, not beside a wider copy (issue 19).

qwen-tts loads every tensor in the model's dtype, so on CPU (fp32) a checkpoint stored in
bf16 doubles: the 0.6B/1.7B text embedding alone (151,936 x 2,048) grows from 0.62 to
1.24 GB, though a prompt reads a few hundred of its rows. And int8 serving used to build its
int8 copies of the linears beside the fp32 ones, which nothing read any more.

* :func:`keep_stored_precision`: the text embedding stays at the checkpoint's dtype and its
  rows are widened on lookup - exactly the values a widened table holds (bf16 -> fp32 is
  exact), so prompts are bit-identical to qwen-tts's.
* :func:`drop_codec_encoder`: only Base checkpoints encode audio; the others drop the
  codec's encoder.
* :func:`release_linears`: once int8 copies serve, the fp32 weights they were made from are
  freed (the model's own modules then cannot run those layers; nothing runs them: a loaded
  model has one backend, :mod:`qwen3ttsd.daemon.models`).
* The codec's low-precision convolutions are :func:`.codec_quant.quantize_codec` (decoder,
  mode): its output (int8/bf16 weights and scales per conv, under ``codec_quant.ATTR``) lives
  on the conv modules, so a weight cache can store it. (It lives there, not here: it runs
  the streaming decoder, which imports this module through the loader.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .talker_model import MappedEmbedding

log = logging.getLogger("qwen3ttsd.engine")

TEXT_EMBEDDING = "talker.model.text_embedding.weight"


def drop_codec_encoder(model: Any) -> None:
    """Only a Base checkpoint encodes audio (a clone's reference codes; clones are refused on
    other models before any encode: ``Engine.add_voice``): elsewhere the codec's encoder,
    ~56M parameters (225 MB in fp32), is dropped."""
    codec: Any = getattr(getattr(model, "speech_tokenizer", None), "model", None)
    if model.tts_model_type != "base" and isinstance(getattr(codec, "encoder", None), torch.nn.Module):
        codec.encoder = torch.nn.Identity()


def stored_dtype(checkpoint: Path, name: str) -> torch.dtype | None:
    """The dtype ``name`` is stored in (from the safetensors header; nothing is read)."""
    from safetensors import safe_open

    dtypes = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
    for file in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            if name in f.keys():
                return dtypes.get(f.get_slice(name).get_dtype())
    return None


def keep_stored_precision(model: Any, checkpoint: Path) -> None:
    """Narrow the talker's text embedding back to the dtype it is stored in, where that is
    narrower than the model's (CPU fp32 of a bf16 checkpoint)."""
    talker = model.talker.model
    weight = talker.text_embedding.weight
    stored = stored_dtype(checkpoint, TEXT_EMBEDDING)
    if stored is None or stored.itemsize >= weight.dtype.itemsize or not weight.dtype.is_floating_point:
        return
    narrow = weight.detach().to(stored)
    with torch.device("meta"):  # no placeholder table: the weight is set right after
        rows, dim = narrow.shape
        table = MappedEmbedding(rows, dim, dtype=weight.dtype, device=weight.device)
    table.weight = torch.nn.Parameter(narrow, requires_grad=False)
    talker.text_embedding = table
    log.debug("text embedding kept in %s (%.0f MB saved)", stored,
              narrow.numel() * (weight.element_size() - narrow.element_size()) / 2**20)


def trim_heap() -> None:
    """Hand freed heap memory back to the OS: glibc keeps it otherwise (its mmap threshold
    grows with every large free, so freed weights land in the heap, not in unmapped pages)."""
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def _tensor_bytes(tensors: Iterable[Tensor], seen: set[int]) -> int:
    total = 0
    for t in tensors:
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or t.device.type == "meta":
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total


def _int8_bytes(modules: Iterable[Any]) -> int:
    """Bytes of dynamically quantized Linear weights (packed: not parameters), one per
    weight, from the module's shape: ``weight()`` would unpack each (a copy of all of them,
    seconds of CPU at 0.6B, on every admin.status), and fails while one is still packing."""
    return sum(m.in_features * m.out_features for m in modules
               if not isinstance(m, torch.nn.Linear) and hasattr(m, "in_features"))


def memory_by_part(model: Any, codec: Any = None) -> dict[str, int]:
    """Bytes of a loaded model's tensors, by part (each storage counted once; a table used
    where it lies in the file counts its mapped size): what ``admin.status`` shows under
    ``loaded.<model>.memory_bytes``. ``model``: qwen-tts's model or the own weights;
    ``codec``: the codec decoder where it is not the model's own ``speech_tokenizer``."""
    talker = model.talker
    speech = getattr(model, "speech_tokenizer", None)
    parts: dict[str, Any] = {
        "text_embedding": talker.model.text_embedding, "code_predictor": talker.code_predictor,
        "talker": talker, "codec": getattr(speech, "model", None) if speech is not None else codec,
        "speaker_encoder": getattr(model, "speaker_encoder", None),
    }
    seen: set[int] = set()
    out: dict[str, int] = {}
    for name, part in parts.items():  # the talker after its embedding and predictor
        if isinstance(part, torch.nn.Module):
            out[name] = _tensor_bytes([*part.parameters(), *part.buffers()], seen)
    int8 = model.__dict__.get("_qwen3ttsd_int8")
    if int8 is not None:
        talker_layers, predictor_layers, head, heads = int8
        layers = [*talker_layers, *predictor_layers]
        out["int8"] = _int8_bytes([m for layer in layers for m in (layer.qkv, layer.o_proj, layer.gate_up, layer.down)]
                                  + [head, *heads])
    return out


def release_linears(modules: Iterable[torch.nn.Module]) -> None:
    """Free the weights of these Linear modules (their int8 copies serve instead)."""
    for m in modules:
        for name in ("weight", "bias"):
            p = getattr(m, name, None)
            if p is not None:
                p.data = torch.empty(0, dtype=p.dtype, device=p.device)


__all__ = ["drop_codec_encoder", "keep_stored_precision", "memory_by_part", "release_linears",
           "stored_dtype", "trim_heap"]
