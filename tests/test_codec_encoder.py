"""ICL clones without qwen-tts (issue 19): the own resampler (engine/resample.py) is
librosa's, the own codec encoder (engine/codec_encoder.py) gives qwen-tts's codes, and a
clone registered on the own weights - x-vector or ICL, at any rate - is qwen-tts's
``create_voice_clone_prompt`` item, with no transformers, qwen_tts or librosa import."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qwen3ttsd.engine.codec_encoder import load_codec_encoder
from qwen3ttsd.engine.resample import resample
from qwen3ttsd.errors import TTSError


def _clip(n: int, sr: int = 24000, seed: int = 0) -> np.ndarray:
    t = np.arange(n) / sr
    noise = np.random.default_rng(seed).standard_normal(n)
    return (0.3 * np.sin(2 * np.pi * 190 * t) + 0.05 * noise).astype(np.float32)


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("n", [1, 999, 16000 * 3 + 7])
def test_resampling_is_librosas_bitwise(sr, n):
    import librosa

    wav = _clip(n, sr)
    want = librosa.resample(y=wav, orig_sr=sr, target_sr=24000)
    got = resample(wav, sr, 24000)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)


def test_resampling_at_the_same_rate_is_the_clip_and_bad_samples_are_refused():
    wav = _clip(100)
    assert resample(wav, 24000, 24000) is wav
    with pytest.raises(ValueError, match="invalid samples"):
        resample(np.array([0.0, np.nan], np.float32), 16000, 24000)


@pytest.fixture(scope="module")
def own_encoder(tiny_models):
    return load_codec_encoder(tiny_models["base"])


@pytest.mark.parametrize("n", [1000, 1920, 24000 * 3 + 17, 24000 * 12])   # 12 s: past the 250-frame window
def test_codes_and_latents_equal_qwen_tts_s(own_encoder, base_engine, n):
    tokenizer = base_engine.tts.model.speech_tokenizer
    seen = {}
    hook = tokenizer.model.encoder.downsample.register_forward_hook(lambda m, i, o: seen.update(latents=o))
    try:
        wav = _clip(n)
        want = tokenizer.encode(wav, sr=24000).audio_codes[0]
    finally:
        hook.remove()
    with torch.inference_mode():
        latents = own_encoder.latents(torch.from_numpy(wav).unsqueeze(0))
    assert float((latents - seen["latents"]).abs().max()) == 0.0
    got = own_encoder.encode(wav)
    assert got.dtype == torch.int64 and got.shape == want.shape == (-(-n // 1920), 16)
    assert torch.equal(got, want)


@pytest.mark.slow
def test_bf16_codes_equal_qwen_tts_s_in_bf16(tiny_models):
    """The dtype the daemon serves in on a GPU: qwen-tts loads its tokenizer in it too."""
    from qwen3ttsd.engine.loader import LoadOptions, load_model

    tokenizer = load_model(str(tiny_models["base"]), LoadOptions(dtype="bfloat16")).model.speech_tokenizer
    own = load_codec_encoder(tiny_models["base"], torch.bfloat16)
    wav = _clip(24000 * 3 + 17)
    assert torch.equal(own.encode(wav), tokenizer.encode(wav, sr=24000).audio_codes[0])


@pytest.mark.slow
def test_0_6b_shaped_encoder_codes_equal_transformers_mimi(tmp_path):
    """The real tokenizer's widths (hidden 512, 8 layers, a 256-wide quantizer behind an input
    projection), random weights, against the transformers module qwen-tts loads."""
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Encoder
    from safetensors.torch import save_file
    from transformers import MimiConfig

    from qwen3ttsd.testing import tinymodel

    cfg = tinymodel.build_codec_config("0.6b")
    ref = Qwen3TTSTokenizerV2Encoder._from_config(MimiConfig(**cfg["encoder_config"])).eval()
    tinymodel._reinit_(ref, 5)
    st = tmp_path / "speech_tokenizer"
    st.mkdir()
    save_file({"encoder." + k: v.contiguous() for k, v in ref.state_dict().items()}, str(st / "model.safetensors"))
    (st / "config.json").write_text(json.dumps(cfg))
    own = load_codec_encoder(tmp_path)
    assert own.quantizer.semantic_residual_vector_quantizer.input_proj is not None
    seen = {}
    ref.downsample.register_forward_hook(lambda m, i, o: seen.update(latents=o))
    wav = _clip(24000 + 5)
    with torch.inference_mode():
        want = ref.encode(torch.from_numpy(wav)[None, None], return_dict=True).audio_codes[0, :16, :13].T
        latents = own.latents(torch.from_numpy(wav).unsqueeze(0))
    assert float((latents - seen["latents"]).abs().max()) == 0.0
    assert torch.equal(own.encode(wav), want)


def test_an_unsupported_or_inconsistent_encoder_config_is_a_load_error(tmp_path, tiny_models):
    import shutil

    st = tmp_path / "speech_tokenizer"
    shutil.copytree(tiny_models["base"] / "speech_tokenizer", st)
    cfg = json.loads((st / "config.json").read_text())
    for change in ({"encoder_config": dict(cfg["encoder_config"], use_conv_shortcut=True)},
                   {"encoder_valid_num_quantizers": 40}):
        (st / "config.json").write_text(json.dumps(dict(cfg, **change)))
        with pytest.raises(TTSError) as ei:
            load_codec_encoder(tmp_path)
        assert ei.value.code == "model_load_failed"


# --- clone prompts on the own weights --------------------------------------------------------


@pytest.fixture(scope="module")
def own_base(tiny_models):
    from qwen3ttsd.engine import Engine, LoadOptions

    e = Engine(str(tiny_models["base"]), LoadOptions(weights="own"))
    e.load()
    return e


@pytest.mark.parametrize("sr", [24000, 16000, 44100])
@pytest.mark.parametrize("icl", [False, True])
def test_clone_items_equal_qwen_tts_s(own_base, base_engine, sr, icl):
    wav = _clip(int(1.3 * sr), sr, seed=sr)
    ref_text = "A reference." if icl else None
    got = own_base.add_voice(f"v{sr}{icl}", wav, sr, ref_text).item
    want = base_engine.tts.create_voice_clone_prompt(ref_audio=(wav, sr), ref_text=ref_text,
                                                     x_vector_only_mode=not icl)[0]
    assert (got.x_vector_only_mode, got.icl_mode, got.ref_text) == (want.x_vector_only_mode, want.icl_mode,
                                                                    want.ref_text)
    assert torch.equal(got.ref_spk_embedding, want.ref_spk_embedding)
    assert (got.ref_code is None) == (want.ref_code is None) == (not icl)
    if icl:
        assert torch.equal(got.ref_code, want.ref_code)
    assert own_base.tts is None and (own_base.codec_encoder is not None or not icl)


def test_an_icl_clone_without_text_is_a_bad_request(own_base):
    with pytest.raises(TTSError) as ei:
        own_base.add_voice("no-text", _clip(24000), 24000, None, x_vector_only=False)
    assert ei.value.code == "bad_request"


def test_seeded_speech_with_the_own_icl_clone_equals_the_qwen_tts_built_clone_s(own_base, base_engine,
                                                                                monkeypatch):
    from qwen3ttsd.engine import SynthesisRequest
    from tests.test_engine_batched import run_batched

    wav, text = _clip(int(1.5 * 16000), 16000, seed=3), "A reference."
    own_base.add_voice("own-icl", wav, 16000, text)
    with monkeypatch.context() as m:
        m.setattr(own_base, "_clone_item", lambda *a: base_engine.tts.create_voice_clone_prompt(
            ref_audio=(wav, 16000), ref_text=text)[0])
        own_base.add_voice("ref-icl", wav, 16000, text)
    reqs = [SynthesisRequest(text="Hello there.", voice=v, language="english", max_frames=6, seed=7)
            for v in ("own-icl", "ref-icl")]
    mine, ref = run_batched(own_base, reqs)
    assert mine.result[0] == ref.result[0] == "done"
    assert mine.all_codes.shape == (6, 16) and torch.equal(mine.all_codes, ref.all_codes)
    assert np.array_equal(np.concatenate(mine.audio), np.concatenate(ref.audio))
