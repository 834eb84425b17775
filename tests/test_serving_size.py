"""Weights held at their serving size (issue 19): the checkpoint's bf16 text embedding is not
widened to fp32 on CPU, and int8 serving replaces the fp32 linears instead of sitting beside
them. Values stay exactly qwen-tts's."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from qwen3ttsd.engine.backend import BackendOptions
from qwen3ttsd.engine.batched import BatchedBackend
from qwen3ttsd.engine.engine import Engine
from qwen3ttsd.engine.request import SynthesisRequest
from qwen3ttsd.errors import TTSError

from .test_engine_batched import Run


def test_text_embedding_stays_at_the_checkpoints_precision(custom_engine, tiny_models):
    emb = custom_engine.tts.model.talker.get_text_embeddings()
    assert emb.weight.dtype == torch.bfloat16
    with safe_open(str(tiny_models["custom_voice"] / "model.safetensors"), "pt") as f:
        stored = f.get_tensor("talker.model.text_embedding.weight")
    ids = torch.tensor([[0, 5, 17, stored.shape[0] - 1]])
    out = emb(ids)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.nn.functional.embedding(ids, stored.float()))


def test_int8_serving_frees_the_fp32_linears(tiny_models):
    engine = Engine(str(tiny_models["custom_voice"]))
    engine.load()
    talker = engine.tts.model.talker
    linears = [m for layers in (talker.model.layers, talker.code_predictor.model.layers)
               for m in layers.modules() if type(m) is torch.nn.Linear]
    linears += [talker.codec_head, *talker.code_predictor.lm_head]
    assert all(m.weight.numel() > 0 for m in linears)
    req = SynthesisRequest(text="Quantized.", speaker="ryan", seed=3, max_frames=5)
    codes = []
    for _ in range(2):  # a second int8 backend on the same model reuses the copies
        b = BatchedBackend(engine, BackendOptions(max_batch=2, quant="int8"))
        assert all(m.weight.numel() == 0 for m in linears)
        run = Run(req)
        b.admit(run.stream)
        while b.active:
            b.step()
        assert run.result[0] == "done" and run.all_codes.shape == (5, 16)
        codes.append(run.all_codes)
    assert torch.equal(codes[0], codes[1])
    with pytest.raises(TTSError, match="int8"):
        BatchedBackend(engine, BackendOptions(max_batch=2))


def test_only_base_models_keep_the_codec_encoder(custom_engine, design_engine, base_engine):
    for engine in (custom_engine, design_engine):
        assert isinstance(engine.tts.model.speech_tokenizer.model.encoder, torch.nn.Identity)
    assert not isinstance(base_engine.tts.model.speech_tokenizer.model.encoder, torch.nn.Identity)


def test_status_reports_memory_by_part(custom_engine, base_engine):
    mem = custom_engine.info["memory_bytes"]
    assert set(mem) == {"text_embedding", "talker", "code_predictor", "codec"}
    emb = custom_engine.tts.model.talker.get_text_embeddings().weight
    assert mem["text_embedding"] == emb.numel() * emb.element_size()
    assert all(v > 0 for v in mem.values())
    assert base_engine.info["memory_bytes"]["speaker_encoder"] > 0
