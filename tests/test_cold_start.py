"""What a socket-activated start costs before the first audio: the daemon starts on a
request, so imports and the model load are on that request's clock."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from pathlib import Path

from qwen3ttsd.daemon.models import ModelRegistry


def test_a_load_runs_no_collections_and_freezes_the_model(tiny_models):
    """Importing torch / transformers / qwen-tts and building the model ran 7 full garbage
    collections in a tiny-model cold start (~0.6 s of ~6 s to first audio); a later full
    collection would scan the whole model again, stalling every stream."""
    registry = ModelRegistry(model=str(tiny_models["custom_voice"]))
    entry = registry.pick()
    collections = gc.get_stats()[2]["collections"]
    frozen = gc.get_freeze_count()
    engine = weakref.ref(registry.load(entry).model)
    assert gc.get_stats()[2]["collections"] == collections
    assert gc.isenabled() and gc.get_freeze_count() > frozen + 10_000
    registry.unload()
    assert engine() is None  # unfrozen and collected at unload


def test_the_engine_import_leaves_scikit_learn_out():
    """transformers imports scikit-learn whenever it is installed (1.1 s), for a helper
    qwen-tts never calls."""
    code = ("import sys; from qwen3ttsd.engine.loader import import_qwen_tts; import_qwen_tts(); "
            "print('sklearn' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
