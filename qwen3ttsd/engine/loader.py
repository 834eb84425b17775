"""Loading a Qwen3-TTS checkpoint with the right device, dtype and attention kernel.

``import qwen_tts`` prints a flash-attn banner to stdout and probes for SoX; both are kept
off stdout at the file-descriptor level so nothing a parent reads from our stdout (or a
journal) is polluted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from ..errors import TTSError

log = logging.getLogger("qwen3ttsd.engine")

T = TypeVar("T")


def derived(owner: Any, name: str, build: Callable[[], T]) -> T:
    """State derived from a loaded model's modules (lean layers, int8 copies, constant
    factors), built on first use and kept on ``owner`` - so it lives and dies with the
    model, and a reloaded model gets its own. Stored in ``__dict__`` directly: torch's
    ``Module.__setattr__`` would register module values as submodules."""
    value = owner.__dict__.get(name)
    if value is None:
        value = owner.__dict__[name] = build()
    return value


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send fd 1 to fd 2 for the duration (catches prints from C code and subprocesses)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _skip_sklearn() -> None:
    """transformers imports scikit-learn whenever it is installed, only for assisted
    generation's ROC-curve helper, which qwen-tts never uses; the daemon starts on a request,
    so that import was on the first request's clock (bench/RESULTS.md (Design measurements)).
    librosa brings scikit-learn into the environment and imports it only where used."""
    from transformers.utils import import_utils

    import_utils._sklearn_available = False


def import_qwen_tts() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    _skip_sklearn()
    with stdout_to_stderr():
        import qwen_tts  # noqa: F401
        from qwen_tts import Qwen3TTSModel
    logging.getLogger("transformers.generation.utils").setLevel(logging.ERROR)
    logging.getLogger("qwen_tts").setLevel(logging.WARNING)
    return Qwen3TTSModel


@dataclass(frozen=True)
class LoadOptions:
    """How a checkpoint is loaded (how it is then run: :class:`.backend.BackendOptions`)."""

    device: str = "auto"        # auto | cpu | cuda | cuda:N
    dtype: str = "auto"         # auto | bfloat16 | float16 | float32
    attn: str = "auto"          # auto | flash_attention_2 | sdpa | eager: qwen-tts's modules, i.e. the
                                # sequential engine (the batched engine always uses SDPA)
    compile: bool = False       # torch.compile the talker's decoder stack (CUDA, sequential engine)
    threads: int = 0            # torch CPU threads (0: torch's default, one per core)
    weights: str = "qwen_tts"   # qwen_tts | own: the batched engine's talker / predictor and the codec
                                # decoder from the project's own loader (engine/talker_model.py,
                                # codec_model.py), prompts (prompts.py) and x-vector clones
                                # (speaker_encoder.py) and ICL clones' reference codes (codec_encoder.py)
    quant: str = "none"         # the backend's quantization setting (BackendOptions.quant): with
                                # weights="own" on the CPU, what the weight cache holds
    cache_dir: str = ""         # where quantized weights are cached between starts ("" = nowhere;
                                # the daemon: <state_dir>/weight-cache; engine/weight_cache.py)


def resolve(opts: LoadOptions) -> tuple[str, Any, str]:
    import torch

    device = opts.device
    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TTSError("model_load_failed", f"device {device} requested but CUDA is not available")
    dtype_name = opts.dtype
    if dtype_name == "auto":
        dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
    try:
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16,
                 "float32": torch.float32}[dtype_name]
    except KeyError:
        raise TTSError("bad_request", f"unknown dtype {dtype_name!r}") from None
    attn = opts.attn
    if attn == "auto":
        flash = importlib.util.find_spec("flash_attn") is not None
        attn = "flash_attention_2" if device.startswith("cuda") and flash and dtype != torch.float32 else "sdpa"
    return device, dtype, attn


def load_model(path: str | os.PathLike, opts: LoadOptions = LoadOptions()) -> Any:
    """Return a ``qwen_tts.Qwen3TTSModel`` on the chosen device, in eval/inference mode."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise TTSError("model_load_failed", f"no Qwen3-TTS checkpoint at {p} (config.json missing)")
    Qwen3TTSModel = import_qwen_tts()
    device, dtype, attn = resolve(opts)
    if opts.threads > 0:
        import torch

        torch.set_num_threads(opts.threads)
    log.info("loading %s on %s (%s, attn=%s)", p, device, dtype, attn)
    try:
        with stdout_to_stderr():
            tts = Qwen3TTSModel.from_pretrained(str(p), device_map=device, dtype=dtype,
                                                attn_implementation=attn)
    except TTSError:
        raise
    except Exception as e:
        raise TTSError("model_load_failed", f"loading {p} failed: {type(e).__name__}: {e}") from e
    tts.model.eval()
    if device == "cpu":
        from .serving_size import drop_codec_encoder, keep_stored_precision

        keep_stored_precision(tts.model, p)
    drop_codec_encoder(tts.model)
    if opts.compile and device.startswith("cuda"):
        import torch

        try:
            tts.model.talker.model.forward = torch.compile(
                tts.model.talker.model.forward, dynamic=True, mode="max-autotune-no-cudagraphs")
        except Exception as e:  # noqa: BLE001
            log.warning("torch.compile unavailable, running eager: %s", e)
    tts.load_info = {"path": str(p), "device": device, "dtype": str(dtype).removeprefix("torch."),
                     "attn": attn, "compiled": bool(opts.compile and device.startswith("cuda"))}
    return tts
