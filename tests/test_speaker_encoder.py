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


BASE_SERVES = """
import sys, numpy as np, torch
from qwen3ttsd.engine import Engine, LoadOptions, SynthesisRequest
from qwen3ttsd.engine.backend import BackendOptions, Stream, Done, Failed
from qwen3ttsd.engine.batched import BatchedBackend
e = Engine(sys.argv[1], LoadOptions(weights="own"))
e.load()
t = np.arange(24000) / 24000
e.add_voice("v", (0.3 * np.sin(2 * np.pi * 190 * t)).astype(np.float32), 24000)
t16 = np.arange(16000) / 16000
assert e.add_voice("icl", (0.3 * np.sin(2 * np.pi * 190 * t16)).astype(np.float32), 16000,
                   ref_text="A reference.").item.icl_mode
b = BatchedBackend(e, BackendOptions(batch_decode=False))
events = []
for voice in ("v", "icl"):
    b.admit(Stream(SynthesisRequest(text="Hello.", voice=voice, language="english", max_frames=3, seed=1),
                   sink=events.append))
while b.active:
    b.step()
assert sum(isinstance(ev, Done) for ev in events) == 2, events
print(sorted(k for k in sys.modules if k.split('.')[0] in ('transformers', 'qwen_tts', 'librosa')))
"""


def test_a_base_checkpoint_serves_x_vector_and_icl_clones_without_qwen_tts(tiny_models):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", BASE_SERVES, str(tiny_models["base"])], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_own_base_clone_prompts_equal_qwen_tts_s_and_icl_loads_the_codec_encoder_on_demand(tiny_models,
                                                                                         base_engine):
    from qwen3ttsd.engine import Engine, LoadOptions, SynthesisRequest
    from qwen3ttsd.engine.prompt import build_prompt, own_prompt

    e = Engine(str(tiny_models["base"]), LoadOptions(weights="own"))
    e.load()
    assert e.tts is None and e.speaker_encoder is not None
    t = np.arange(24000) / 24000
    wav = (0.3 * np.sin(2 * np.pi * 190 * t)).astype(np.float32)
    e.add_voice("x", wav, 24000)
    base_engine.add_voice("x", wav, 24000)
    req = SynthesisRequest(text="Hello there.", voice="x", language="english", max_frames=4)
    with torch.inference_mode():
        got, want = own_prompt(e, req), build_prompt(base_engine, req)
    assert torch.equal(got.embeds, want.embeds) and torch.equal(got.trailing, want.trailing)
    assert e.tts is None and e.codec_encoder is None
    e.add_voice("icl", wav, 24000, ref_text="A reference.")   # needs the codec encoder: the own one
    assert e.tts is None and e.codec_encoder is not None and e.prompt_count == 2
