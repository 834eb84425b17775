"""The own speaker encoder (engine/speaker_encoder.py, with engine/mel.py) gives qwen-tts's
x-vectors: the same network and weights, the same ops."""

from __future__ import annotations

import numpy as np
import torch

from qwen3ttsd.engine.speaker_encoder import load_speaker_encoder


def test_x_vectors_equal_qwen_tts(tiny_models, base_engine):
    own = load_speaker_encoder(tiny_models["base"])
    rng = np.random.default_rng(0)
    for seconds in (0.5, 1.7, 3.0):
        t = np.arange(int(24000 * seconds)) / 24000
        wav = (0.3 * np.sin(2 * np.pi * 190 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)
        with torch.inference_mode():
            want = base_engine.tts.model.extract_speaker_embedding(wav, 24000)
        got = own.embed(wav)
        assert got.shape == want.shape
        assert torch.equal(got, want), float((got - want).abs().max())
    item = base_engine.tts.create_voice_clone_prompt(ref_audio=(wav, 24000), x_vector_only_mode=True)[0]
    assert torch.equal(own.embed(wav), item.ref_spk_embedding.to(torch.float32))


def test_an_x_vector_imports_no_transformers_qwen_tts_or_librosa(tiny_models):
    import subprocess
    import sys

    code = ("import sys, numpy as np; from qwen3ttsd.engine.speaker_encoder import load_speaker_encoder; "
            f"e = load_speaker_encoder({str(tiny_models['base'])!r}); "
            "v = e.embed(np.zeros(24000, dtype=np.float32) + 0.1); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('transformers', 'qwen_tts', 'librosa')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "[]", r.stderr
