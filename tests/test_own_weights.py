"""The project's own checkpoint loader (engine/checkpoint.py, talker_model.py, codec_model.py)
against qwen-tts's ``from_pretrained`` (fp32, CPU, tiny random checkpoints):

* the config dataclasses read what qwen-tts's config classes read;
* every tensor the batched engine and the prompts read is equal (bf16 file -> fp32), and so
  are the rotary tables;
* the batched engine on the own weights: teacher-forced talker / predictor logits within
  1e-4 of qwen-tts's modules, for every variant;
* the streaming decoder on the own codec decoder equals qwen-tts's one-shot decode;
* loading and running them imports neither transformers, qwen_tts nor librosa.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qwen3ttsd.engine.checkpoint import read_codec_config, read_config
from qwen3ttsd.engine.codec_model import load_codec_decoder
from qwen3ttsd.engine.prompt import build_prompt
from qwen3ttsd.engine.streaming_decoder import StreamingDecoder
from qwen3ttsd.engine.talker_model import load_talker
from qwen3ttsd.errors import TTSError
from tests.test_engine_batched import VARIANTS, engine_logits, reference_logits, variants  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def own(tiny_models):
    """variant -> (talker weights, codec decoder), loaded by the project's own loader."""
    return {v: (load_talker(p), load_codec_decoder(p)) for v, p in tiny_models.items()}


def _engine_of(variant: str, custom_engine, base_engine, design_engine):
    return {"custom_voice": custom_engine, "base": base_engine, "voice_design": design_engine}[variant]


# --- config --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["custom_voice", "base", "voice_design"])
def test_config_reads_what_qwen_tts_reads(tiny_models, variant, custom_engine, base_engine, design_engine):
    ref = _engine_of(variant, custom_engine, base_engine, design_engine).tts.model
    cfg = read_config(tiny_models[variant])
    rt, t = ref.config.talker_config, cfg.talker_config
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "rms_norm_eps", "vocab_size", "text_vocab_size",
                 "text_hidden_size", "num_code_groups", "codec_eos_token_id", "codec_think_id", "codec_nothink_id",
                 "codec_think_bos_id", "codec_think_eos_id", "codec_pad_id", "codec_bos_id", "spk_id",
                 "spk_is_dialect", "codec_language_id"):
        assert getattr(t, name) == getattr(rt, name), name
    assert t.rope.theta == rt.rope_theta and list(t.rope.mrope_section) == rt.rope_scaling["mrope_section"]
    assert t.rope.interleaved == rt.rope_scaling["interleaved"]
    rp, p = rt.code_predictor_config, t.code_predictor_config
    for name in ("hidden_size", "num_hidden_layers", "num_key_value_heads", "head_dim", "vocab_size",
                 "num_code_groups"):
        assert getattr(p, name) == getattr(rp, name), name
    for name in ("tts_model_type", "tts_model_size", "im_start_token_id", "im_end_token_id", "tts_pad_token_id",
                 "tts_bos_token_id", "tts_eos_token_id"):
        assert getattr(cfg, name) == getattr(ref.config, name), name
    assert cfg.speakers == list(ref.get_supported_speakers())
    assert cfg.languages == list(ref.get_supported_languages())
    rd, d = ref.speech_tokenizer.model.decoder.config, read_codec_config(tiny_models[variant])
    for name in ("codebook_size", "codebook_dim", "hidden_size", "latent_dim", "num_hidden_layers",
                 "sliding_window", "num_quantizers", "decoder_dim", "rms_norm_eps"):
        assert getattr(d, name) == getattr(rd, name), name
    assert list(d.upsample_rates) == list(rd.upsample_rates) and d.rope.theta == rd.rope_theta


def test_a_bad_checkpoint_is_a_load_error(tmp_path, tiny_models):
    with pytest.raises(TTSError) as e:
        load_talker(tmp_path)
    assert e.value.code == "model_load_failed"
    (tmp_path / "config.json").write_text((tiny_models["custom_voice"] / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(TTSError) as e:
        load_talker(tmp_path)
    assert e.value.code == "model_load_failed"


def test_a_missing_or_misshapen_tensor_is_a_load_error(tmp_path, tiny_models):
    from safetensors.torch import load_file, save_file

    src = tiny_models["custom_voice"]
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    weights = load_file(src / "model.safetensors")
    save_file({k: v for k, v in weights.items() if k != "talker.codec_head.weight"}, tmp_path / "model.safetensors")
    with pytest.raises(TTSError, match="missing"):
        load_talker(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["talker_config"]["intermediate_size"] += 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(TTSError, match="shape"):
        load_talker(tmp_path)


# --- weights ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["custom_voice", "base", "voice_design"])
def test_every_tensor_equals_qwen_tts(own, variant, custom_engine, base_engine, design_engine):
    ref = _engine_of(variant, custom_engine, base_engine, design_engine).tts.model
    weights, codec = own[variant]
    for mine, theirs in ((weights.talker, ref.talker), (codec, ref.speech_tokenizer.model.decoder)):
        a, b = mine.state_dict(), theirs.state_dict()
        assert set(a) == set(b)
        for name, t in b.items():
            assert torch.equal(a[name].to(t.dtype), t), name
            if name != "model.text_embedding.weight":   # kept in the file's dtype (bf16)
                assert a[name].dtype == t.dtype == torch.float32, name
    ropes = [(weights.talker.model.rotary_emb, ref.talker.model.rotary_emb),
             (weights.talker.code_predictor.model.rotary_emb, ref.talker.code_predictor.model.rotary_emb),
             (codec.pre_transformer.rotary_emb, ref.speech_tokenizer.model.decoder.pre_transformer.rotary_emb)]
    for mine, theirs in ropes:
        assert torch.equal(mine.inv_freq, theirs.inv_freq) and mine.attention_scaling == theirs.attention_scaling
    x = torch.zeros(1, 1, 8)
    pos3 = torch.arange(50).view(1, 1, -1).expand(3, 2, -1)
    for got, want in zip(ropes[0][0](x, pos3), ropes[0][1](x, pos3)):
        assert torch.equal(got, want)
    for mine, theirs in ropes[1:]:
        for got, want in zip(mine(x, pos3[0]), theirs(x, pos3[0])):
            assert torch.equal(got, want)
    for mine, theirs in ((weights.talker.model.layers, ref.talker.model.layers),
                         (codec.pre_transformer.layers, ref.speech_tokenizer.model.decoder.pre_transformer.layers)):
        for lm, lt in zip(mine, theirs):
            for attr in ("layer_idx", "head_dim", "scaling", "sliding_window"):
                assert getattr(lm.self_attn, attr) == getattr(lt.self_attn, attr), attr
            assert lm.input_layernorm.variance_epsilon == lt.input_layernorm.variance_epsilon
    assert weights.talker.code_predictor.vocab_size == ref.talker.code_predictor.vocab_size


def test_prompt_side_modules_equal_qwen_tts(own, custom_engine):
    """What a prompt builder calls: the text table (mmap'd bf16, rows converted), the text
    projection, the codec embeddings."""
    weights, _ = own["custom_voice"]
    mine, ref = weights.talker, custom_engine.tts.model.talker
    ids = torch.tensor([[151644, 356, 198, 151671, 151672, 151673, 5]])
    with torch.inference_mode():
        text = mine.get_text_embeddings()(ids)
        assert text.dtype == torch.float32 and torch.equal(text, ref.get_text_embeddings()(ids))
        assert torch.equal(mine.text_projection(text), ref.text_projection(text))
        codes = torch.tensor([[2148, 2149, 2150, 3065]])
        assert torch.equal(mine.get_input_embeddings()(codes), ref.get_input_embeddings()(codes))
    assert mine.get_text_embeddings().weight.dtype == torch.bfloat16   # used where it lies
    assert weights.get_supported_speakers() == list(custom_engine.tts.model.get_supported_speakers())


def test_weights_in_the_serving_dtype_are_used_in_place(tmp_path, tiny_models):
    """A tensor stored in the serving dtype is the file's mapped pages, not a copy; one that
    is converted is a copy, and its file pages are unmapped once loading is done."""
    from safetensors.torch import load_file, save_file

    src = tiny_models["custom_voice"]
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    path = tmp_path / "model.safetensors"
    save_file({k: v.float() for k, v in load_file(src / "model.safetensors").items()}, path)
    attn = load_talker(tmp_path, dtype=torch.float32).talker.model.layers[0].self_attn
    assert attn.o_proj.weight.dtype == torch.float32 and _mapped_from(attn.o_proj.weight, path)
    assert not _mapped_from(attn.q_proj.weight, path)   # q/k/v: one fused buffer (lean.py runs them fused)
    before = len(_mappings_of(src / "model.safetensors"))
    w = load_talker(src, dtype=torch.float32).talker   # bf16 file: converted to fp32
    assert not _mapped_from(w.codec_head.weight, src / "model.safetensors")
    assert _mapped_from(w.get_text_embeddings().weight, src / "model.safetensors")   # the text table stays
    assert len(_mappings_of(src / "model.safetensors")) == before + 1   # the converting pass is unmapped


def _mappings_of(path: Path) -> list[tuple[int, int]]:
    spans = []
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith(str(path)):
                lo, hi = line.split()[0].split("-")
                spans.append((int(lo, 16), int(hi, 16)))
    return spans


def _mapped_from(t: torch.Tensor, path: Path) -> bool:
    return any(lo <= t.data_ptr() < hi for lo, hi in _mappings_of(path))


# --- the batched engine and the streaming decoder on the own weights ----------------------


def own_backend_engine(own, tiny_models, variant: str):
    """A lean engine (weights="own", no qwen-tts) around the weights this module loaded once."""
    from qwen3ttsd.engine import Engine, LoadOptions

    engine = Engine(str(tiny_models[variant]), LoadOptions(weights="own"))
    engine.own = own[variant]
    return engine


@pytest.mark.parametrize("variant", VARIANTS)
def test_teacher_forced_logits_on_own_weights_match_qwen_tts(variants, own, tiny_models, variant):  # noqa: F811
    engine, req = variants[variant]
    with torch.inference_mode():
        prompt = build_prompt(engine, req)
        frames = torch.randint(0, 2048, (12, 16), generator=torch.Generator().manual_seed(3))
        ref_t, ref_p = reference_logits(engine, prompt, frames)
        got_t, got_p = engine_logits(own_backend_engine(own, tiny_models, engine.model_type), prompt, frames)
    assert got_t.shape == ref_t.shape == (13, 3072) and got_p.shape == ref_p.shape == (12, 15, 2048)
    assert float((got_t - ref_t).abs().max()) <= 1e-4
    assert float((got_p - ref_p).abs().max()) <= 1e-4


def test_lean_layers_use_the_loaded_fused_buffers(own, tiny_models):
    """The loader writes q/k/v and gate/up into one buffer each, so the batched engine's
    fused projections are the loaded weights themselves, not another copy."""
    from qwen3ttsd.engine.backend import BackendOptions
    from qwen3ttsd.engine.batched import BatchedBackend

    weights, codec = own["voice_design"]
    b = BatchedBackend(own_backend_engine(own, tiny_models, "voice_design"), BackendOptions(batch_decode=False))
    for lean, layer in zip(b.talker_layers + b.predictor_layers,
                           list(weights.talker.model.layers) + list(weights.talker.code_predictor.model.layers)):
        assert lean.qkv.weight.data_ptr() == layer.self_attn.q_proj.weight.data_ptr()
        assert lean.gate_up.weight.data_ptr() == layer.mlp.gate_proj.weight.data_ptr()
        assert torch.equal(lean.qkv.weight[-layer.self_attn.v_proj.weight.shape[0]:], layer.self_attn.v_proj.weight)


@pytest.mark.parametrize("chunk", [1, 7])
def test_streaming_decode_on_own_codec_equals_qwen_tts_decode(own, custom_engine, chunk):
    _, codec = own["custom_voice"]
    ref_dec = custom_engine.tts.model.speech_tokenizer.model.decoder
    codes = torch.randint(0, 2048, (90, 16), generator=torch.Generator().manual_seed(11))
    with torch.inference_mode():
        ref = ref_dec(codes.T.unsqueeze(0))[0, 0]
    dec = StreamingDecoder(codec)
    got = torch.cat([dec.push(codes[i:i + chunk])[0] for i in range(0, codes.shape[0], chunk)])
    assert got.shape == ref.shape and dec.samples_per_frame == ref_dec.total_upsample
    assert float((got - ref).abs().max()) <= 1e-4
    # several streams in one call (rows at different positions), as the codec lane decodes
    a, b = StreamingDecoder(codec), StreamingDecoder(codec)
    a.push(codes[:5])
    both = StreamingDecoder.push_many([a, b], torch.stack([codes[5:8], codes[:3]]))
    want_b = StreamingDecoder(codec).push(codes[:3])[0]
    assert float((both[1] - want_b).abs().max()) <= 1e-4 * float(want_b.abs().max())


def test_loading_and_running_imports_no_transformers(tiny_models):
    """The own weights through the batched engine's hot path and the streaming decoder, in a
    fresh interpreter: transformers, qwen_tts, librosa and torch._dynamo (3 s of imports) stay
    out of sys.modules."""
    code = f"""
import sys, torch
from qwen3ttsd.engine import Engine, LoadOptions
from qwen3ttsd.engine.streaming_decoder import StreamingDecoder
from qwen3ttsd.engine.batched import BatchedBackend
from qwen3ttsd.engine.backend import BackendOptions
e = Engine({str(tiny_models["custom_voice"])!r}, LoadOptions(weights="own"))
e.load()
w, codec = e.own
b = BatchedBackend(e, BackendOptions(batch_decode=False))
with torch.inference_mode():
    text = w.talker.text_projection(w.talker.get_text_embeddings()(torch.tensor([[151644, 356, 198]])))
    b.kv.reserve(1, 8)
    logits, hidden = b.prefill(0, [text])
    codes = b.predict(hidden, logits.argmax(-1), lambda j, lg: lg.argmax(-1))
    audio = StreamingDecoder(codec).push(codes.new_zeros(2, 16))
assert codes.shape == (1, 15) and audio.shape == (1, 3840)
print(sorted(k for k in sys.modules if k.split('.')[0] in ('transformers', 'qwen_tts', 'librosa')
             or k.startswith('torch._dynamo')))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# --- the Engine switch -----------------------------------------------------------------


@pytest.fixture(scope="module")
def own_engine(tiny_models):
    from qwen3ttsd.engine import Engine, LoadOptions

    e = Engine(str(tiny_models["custom_voice"]), LoadOptions(weights="own"))
    e.load()
    return e


def test_engine_switch_serves_greedy_codes_and_audio_equal_to_qwen_tts(own_engine, custom_engine, monkeypatch):
    """``LoadOptions(weights="own")``: the batched engine and the codec run on the own
    modules; greedy codes equal qwen-tts's ``generate``, the audio its one-shot decode."""
    from qwen3ttsd.engine import SynthesisRequest, batched
    from tests.test_engine_batched import Run, backend

    assert own_engine.serving_model is own_engine.own[0] and own_engine.new_decoder().decoder is own_engine.own[1]
    req = SynthesisRequest(text="Hello world.", speaker="vivian", language="english", max_frames=12)
    kwargs, _ = custom_engine.prepare(req)
    kwargs.update(do_sample=False, subtalker_dosample=False)
    with torch.inference_mode():
        ref = custom_engine.tts.model.generate(**kwargs)[0][0]
        prompt = build_prompt(custom_engine, req)  # the oracle's prompt (the own engine has no qwen-tts)
    prompt.settings.update(do_sample=False, subtalker_dosample=False)
    run = Run(req)
    b = backend(own_engine)
    assert b.talker is own_engine.own[0].talker
    with monkeypatch.context() as m:
        m.setattr(batched, "own_prompt", lambda engine, req: prompt)
        b.admit(run.stream)
    while b.active:
        b.step()
    assert run.result[0] == "done"
    assert torch.equal(run.all_codes, ref[:12]) and run.all_codes.shape[0] == 12
    with torch.inference_mode():
        want = custom_engine.tts.model.speech_tokenizer.model.decoder(run.all_codes.T.unsqueeze(0))[0, 0].numpy()
    got = np.concatenate(run.audio)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4


def test_an_unknown_weights_loader_is_refused(tiny_models):
    from qwen3ttsd.engine import Engine, LoadOptions

    with pytest.raises(TTSError) as e:
        Engine(str(tiny_models["custom_voice"]), LoadOptions(weights="nope")).load()
    assert e.value.code == "bad_request"
