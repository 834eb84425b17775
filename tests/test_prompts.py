"""The project's prompt builder against qwen-tts's own prompt (fp32, CPU, tiny checkpoints).

For every variant - CustomVoice speakers (dialects, instruct on a 1.7B config), VoiceDesign,
Base x-vector and ICL clones, ``auto`` and explicit languages, sampling overrides - the
token ids equal those qwen-tts tokenizes, and the prompt equals the one captured from
qwen-tts's ``generate`` (:func:`.prompt.build_prompt`): embeddings bitwise, settings equal.
Bad requests fail with :meth:`.Engine.prepare`'s errors.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from qwen3ttsd.engine import Engine, SynthesisRequest
from qwen3ttsd.engine.model_spec import ModelSpec
from qwen3ttsd.engine.prompt import build_prompt, own_prompt, prompt_builder
from qwen3ttsd.engine.prompts import PromptWeights
from qwen3ttsd.errors import TTSError


def _voices(base_engine) -> None:
    sr = 24000
    t = np.arange(int(sr * 2.0)) / sr
    wav = (0.3 * np.sin(2 * np.pi * 190 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    base_engine.add_voice("icl", wav, sr, ref_text="Hello there, friend.")
    base_engine.add_voice("xvec", wav, sr)


@pytest.fixture(scope="module")
def custom_1b7(tiny_models, tmp_path_factory):
    """The tiny CustomVoice checkpoint, declared 1.7B: qwen-tts keeps its instruct."""
    src = tiny_models["custom_voice"]
    d = tmp_path_factory.mktemp("custom_1b7")
    for f in src.iterdir():
        if f.name != "config.json":
            os.symlink(f, d / f.name)
    config = json.loads((src / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(dict(config, tts_model_size="1b7")))
    e = Engine(str(d))
    e.load()
    return e


@pytest.fixture(scope="module")
def engines(custom_engine, base_engine, design_engine, custom_1b7):
    _voices(base_engine)
    return {"custom_voice": custom_engine, "base": base_engine, "voice_design": design_engine,
            "custom_1b7": custom_1b7}


LONG = ("This sentence is long enough that the reference text and it together outrun the "
        "reference codes, so the ICL prompt has text left to trail.")
CASES = {
    "custom": ("custom_voice", dict(text="Hello world.", speaker="vivian", language="english")),
    "custom_auto": ("custom_voice", dict(text="Hello world.", speaker="Ryan")),
    "custom_each_language": ("custom_voice", dict(text="Bonjour le monde !", speaker="serena", language="French")),
    "custom_dialect_chinese": ("custom_voice", dict(text="你好世界。", speaker="eric", language="chinese")),
    "custom_dialect_auto": ("custom_voice", dict(text="你好世界。", speaker="dylan")),
    "custom_dialect_english": ("custom_voice", dict(text="Hi.", speaker="eric", language="english")),
    "custom_instruct_0b6_dropped": ("custom_voice", dict(text="Hello.", speaker="aiden", instruct="whisper")),
    "custom_instruct_1b7": ("custom_1b7", dict(text="Hello.", speaker="aiden", instruct="speak slowly")),
    "custom_sampling": ("custom_voice", dict(text="Sampled.", speaker="ryan", temperature=0.5, top_k=7,
                                             top_p=0.8, repetition_penalty=1.2, max_frames=33)),
    "custom_one_token": ("custom_voice", dict(text="a", speaker="ryan")),
    "design": ("voice_design", dict(text="Good morning.", instruct="a calm old narrator")),
    "design_no_instruct": ("voice_design", dict(text="Good morning.", language="german")),
    "design_japanese": ("voice_design", dict(text="こんにちは、世界。", instruct="明るい声", language="japanese")),
    "base_icl": ("base", dict(text="Nice to meet you all.", voice="icl", language="english")),
    "base_icl_long_text": ("base", dict(text=LONG, voice="icl")),
    "base_xvector": ("base", dict(text="Nice to meet you.", voice="xvec")),
    "base_xvector_korean": ("base", dict(text="안녕하세요 세계.", voice="xvec", language="korean")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_prompt_equals_qwen_tts(engines, case):
    name, fields = CASES[case]
    engine = engines[name]
    req = SynthesisRequest(**fields)
    with torch.inference_mode():
        want = build_prompt(engine, req)
        got = own_prompt(engine, req)
    assert got.embeds.shape == want.embeds.shape and got.embeds.dtype == want.embeds.dtype
    assert torch.equal(got.embeds, want.embeds)
    assert torch.equal(got.trailing, want.trailing)
    assert torch.equal(got.pad, want.pad)
    assert got.settings == want.settings
    assert got.voice is want.voice


@pytest.mark.parametrize("case", list(CASES))
def test_token_ids_equal_qwen_tts(engines, case):
    name, fields = CASES[case]
    engine = engines[name]
    req = SynthesisRequest(**fields)
    kwargs, voice = engine.prepare(req)
    tok = prompt_builder(engine).tokenizer
    assert tok.assistant_ids(req.text.strip()) == kwargs["input_ids"][0][0].tolist()
    for instruct, ids in zip([req.instruct], kwargs.get("instruct_ids") or [None]):
        if ids is not None:
            assert tok.instruct_ids(instruct) == ids[0].tolist()
    for ids in kwargs.get("ref_ids") or []:
        if ids is not None:
            assert tok.ref_ids(voice.item.ref_text) == ids[0].tolist()


@pytest.mark.parametrize("fields", [
    dict(text="   "), dict(text="Hi.", language="klingon"), dict(text="Hi.", max_frames=0),
    dict(text="Hi.", temperature=-1), dict(text="Hi.", top_k="many"), dict(text="Hi.", speaker="nobody"),
    dict(text="Hi."),
])
def test_bad_requests_fail_as_engine_prepare_fails(custom_engine, fields):
    req = SynthesisRequest(**fields)
    with pytest.raises(TTSError) as want:
        custom_engine.prepare(req)
    with pytest.raises(TTSError) as got:
        own_prompt(custom_engine, req)
    assert (got.value.code, str(got.value)) == (want.value.code, str(want.value))


@pytest.mark.parametrize("fields", [dict(text="Hi."), dict(text="Hi.", voice="never-registered")])
def test_base_requests_without_a_registered_voice_fail_as_engine_prepare_fails(engines, fields):
    engine = engines["base"]
    req = SynthesisRequest(**fields)
    with pytest.raises(TTSError) as want:
        engine.prepare(req)
    with pytest.raises(TTSError) as got:
        own_prompt(engine, req)
    assert (got.value.code, str(got.value)) == (want.value.code, str(want.value))


def test_spec_matches_the_loaded_model(engines):
    for engine in engines.values():
        spec = prompt_builder(engine).spec
        assert spec.languages == engine.languages
        assert spec.speakers == engine.speakers
        assert spec.model_type == engine.model_type
        assert spec.num_code_groups == engine.tts.model.config.talker_config.num_code_groups


def test_weights_read_from_safetensors_by_checkpoint_name(tiny_models, custom_engine):
    """The builder's weights by their checkpoint names: what a loader without transformers
    reads (the tiny checkpoint is stored in bf16; the model was loaded in fp32)."""
    from safetensors import safe_open

    spec = ModelSpec.load(tiny_models["custom_voice"])
    with safe_open(str(tiny_models["custom_voice"] / "model.safetensors"), "pt") as f:
        stored = PromptWeights.from_tensors(lambda name: f.get_tensor(name).float(), spec.num_code_groups)
    loaded = PromptWeights.of_model(custom_engine.tts.model, spec.num_code_groups)
    for a, b in zip(torch.utils._pytree.tree_leaves(vars(stored)), torch.utils._pytree.tree_leaves(vars(loaded))):
        assert torch.equal(a, b)


def test_concurrent_builds_equal_serial_ones(engines):
    """The builder is shared by the builder pool's threads: no state between builds."""
    import threading

    jobs = [(engines[name], SynthesisRequest(**fields)) for name, fields in CASES.values()] * 3
    with torch.inference_mode():
        want = [own_prompt(e, r).embeds for e, r in jobs]
    got: list = [None] * len(jobs)

    def work(k: int) -> None:
        for i in range(k, len(jobs), 4):
            got[i] = own_prompt(*jobs[i]).embeds

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(g is not None and torch.equal(g, w) for g, w in zip(got, want))


def test_a_text_embedding_kept_in_bf16_gives_the_same_prompts(engines):
    """The text embedding may stay at the checkpoint's bf16 beside an fp32 model (serving
    size, issue 19): rows widened on lookup give bitwise the same prompts."""
    from qwen3ttsd.engine.prompts import PromptBuilder

    for name, fields in CASES.values():
        engine = engines[name]
        own = prompt_builder(engine)
        w = own.w
        narrow = PromptWeights(w.text_embedding.to(torch.bfloat16), w.fc1, w.fc2, w.codec_embedding,
                               w.code_embeddings)
        req = SynthesisRequest(**fields)
        voice = engine._voices.get(req.voice) if req.voice else None
        a, b = own.build(req, voice), PromptBuilder(own.spec, own.tokenizer, narrow).build(req, voice)
        assert torch.equal(a.embeds, b.embeds) and torch.equal(a.trailing, b.trailing) and torch.equal(a.pad, b.pad)
