"""The engine on tiny random-weight checkpoints, through the real qwen-tts loading code."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from qwen3ttsd.engine import SynthesisRequest, frame_budget, sequential
from qwen3ttsd.engine.streaming_decoder import StreamingDecoder
from qwen3ttsd.errors import Cancelled, TTSError
from qwen3ttsd.testing import tinymodel


def _stream(engine, req, codes=None):
    chunks: list[np.ndarray] = []
    stats = sequential.generate(engine, req, chunks.append, on_codes=codes.append if codes is not None else None)
    return np.concatenate(chunks), chunks, stats


# --- the checkpoint builder ------------------------------------------------------------


def test_tiny_checkpoint_has_the_real_layout_and_ids(tiny_models):
    d = tiny_models["custom_voice"]
    for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
              "vocab.json", "merges.txt", "tokenizer_config.json",
              "speech_tokenizer/config.json", "speech_tokenizer/preprocessor_config.json",
              "speech_tokenizer/model.safetensors"):
        assert (d / f).is_file(), f
    cfg = json.loads((d / "config.json").read_text())
    t = cfg["talker_config"]
    assert cfg["tokenizer_type"] == "qwen3_tts_tokenizer_12hz"
    assert (cfg["tts_pad_token_id"], cfg["tts_bos_token_id"], cfg["tts_eos_token_id"]) == (151671, 151672, 151673)
    assert (t["codec_pad_id"], t["codec_bos_id"], t["codec_eos_token_id"]) == (2148, 2149, 2150)
    assert t["spk_id"]["vivian"] == 3065 and t["spk_is_dialect"]["eric"] == "sichuan_dialect"
    assert t["codec_language_id"]["english"] == 2050
    vocab = json.loads((d / "vocab.json").read_text())
    assert len(vocab) == 151_643


def test_builder_is_deterministic(tmp_path):
    a = tinymodel.build(tmp_path / "a", variant="custom_voice")
    b = tinymodel.build(tmp_path / "b", variant="custom_voice")
    for f in ("model.safetensors", "speech_tokenizer/model.safetensors", "config.json", "tokenizer.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_real_loader_offline_with_no_network(tiny_models):
    """Load + generate in a fresh interpreter with sockets forbidden: proves no hub access."""
    code = f"""
import socket, os
os.environ['HF_HUB_OFFLINE'] = '1'
def deny(*a, **k): raise RuntimeError('network access attempted')
socket.socket.connect = deny
socket.create_connection = deny
import torch
from qwen_tts import Qwen3TTSModel
tts = Qwen3TTSModel.from_pretrained({str(tiny_models['custom_voice'])!r}, device_map='cpu', dtype=torch.float32)
wavs, sr = tts.generate_custom_voice(text='Hello.', speaker='ryan', language='English', max_new_tokens=6)
print('OK', sr, wavs[0].shape[0])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OK 24000 9600" in r.stdout


# --- streaming == offline ---------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 4, 12])
def test_stream_equals_generate_custom_voice(custom_engine, chunk):
    req = SynthesisRequest(text="Hello world.", speaker="vivian", language="english", seed=1234,
                           max_frames=39, chunk_frames=chunk)
    audio, chunks, stats = _stream(custom_engine, req)
    torch.manual_seed(1234)
    wavs, sr = custom_engine.tts.generate_custom_voice(text="Hello world.", speaker="vivian",
                                                       language="English", max_new_tokens=40)
    assert sr == 24000 and stats.frames == 39
    assert audio.shape == wavs[0].shape
    assert np.abs(audio - wavs[0]).max() <= 1e-4
    assert chunks[0].shape[0] == 1920  # first chunk after one frame
    assert all(c.shape[0] == 1920 * chunk for c in chunks[1:-1])


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [1, 4, 12])
def test_streaming_decoder_exact_over_long_codes(custom_engine, chunk):
    """Past the decoder's receptive field (154 frames here) and past qwen-tts's own
    300-frame chunked decode: streamed == one full forward, at constant state size."""
    dec = custom_engine.tts.model.speech_tokenizer.model.decoder
    g = torch.Generator().manual_seed(chunk)
    codes = torch.randint(0, 2048, (330, 16), generator=g)
    with torch.inference_mode():
        ref = dec(codes.T.unsqueeze(0)).squeeze(1)[0]
    sd = StreamingDecoder(dec)
    out = torch.cat([sd.push(codes[i:i + chunk])[0] for i in range(0, 330, chunk)])
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) <= 1e-4
    assert all(kv[0].shape[2] <= dec.config.sliding_window - 1 for kv in sd._kv)


@pytest.mark.slow
def test_long_generated_utterance_streams_exactly(custom_engine):
    """A real 300+ frame generation streamed in chunks of 12 == one-shot decode of its codes."""
    codes: list[torch.Tensor] = []
    req = SynthesisRequest(text="A long narration " * 4, speaker="ryan", seed=7, max_frames=310,
                           chunk_frames=12)
    audio, _, stats = _stream(custom_engine, req, codes)
    assert stats.frames == 310
    all_codes = torch.cat(codes)
    dec = custom_engine.tts.model.speech_tokenizer.model.decoder
    with torch.inference_mode():
        ref = dec(all_codes.T.unsqueeze(0)).squeeze(1)[0].numpy()
    assert audio.shape == ref.shape == (310 * 1920,)
    assert np.abs(audio - ref).max() <= 1e-4


def test_clone_stream_equals_generate_voice_clone(base_engine):
    """ICL cloning primes the decoder with the reference codes (cached state) - exact."""
    sr = 24000
    t = np.arange(int(sr * 2.5)) / sr
    wav = (0.3 * np.sin(2 * np.pi * 200 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    base_engine.add_voice("alice", wav, sr, ref_text="Hello there, friend.")
    req = SynthesisRequest(text="Nice to meet you.", voice="alice", language="english", seed=99,
                           max_frames=20, chunk_frames=4)
    audio, _, stats = _stream(base_engine, req)
    item = base_engine._voices["alice"].item
    torch.manual_seed(99)
    wavs, _ = base_engine.tts.generate_voice_clone(text="Nice to meet you.", language="English",
                                                   voice_clone_prompt=[item], max_new_tokens=21)
    assert stats.frames == 20
    assert audio.shape == wavs[0].shape
    assert np.abs(audio - wavs[0]).max() <= 1e-4


def test_clone_prompt_cache_hits(base_engine):
    sr = 24000
    wav = (0.2 * np.sin(2 * np.pi * 150 * np.arange(sr * 2) / sr)).astype(np.float32)
    h0, m0 = base_engine.cache_hits, base_engine.cache_misses
    p1 = base_engine.add_voice("bob", wav, sr, ref_text="One two three.")
    p2 = base_engine.add_voice("bob", wav, sr, ref_text="One two three.")
    assert p1 is p2
    assert (base_engine.cache_hits - h0, base_engine.cache_misses - m0) == (1, 1)
    p3 = base_engine.add_voice("bob", wav, sr, ref_text="Different words.")
    assert p3 is not p1 and base_engine.cache_misses - m0 == 2
    xv = base_engine.add_voice("carol", wav, sr)  # no transcript -> x-vector only
    assert xv.item.x_vector_only_mode and xv.decoder_state is None
    _, _, st = _stream(base_engine, SynthesisRequest(text="Hi.", voice="carol", max_frames=3))
    assert st.frames == 3


def test_voice_design(design_engine):
    audio, _, st = _stream(design_engine, SynthesisRequest(text="Hi.", instruct="a calm narrator",
                                                           max_frames=6, seed=1))
    assert st.frames == 6 and audio.shape == (6 * 1920,)


# --- determinism, cancellation, guards -------------------------------------------------


def test_seed_determinism(custom_engine):
    req = dict(text="Determinism.", speaker="aiden", max_frames=8)
    a, _, _ = _stream(custom_engine, SynthesisRequest(seed=5, **req))
    b, _, _ = _stream(custom_engine, SynthesisRequest(seed=5, **req))
    c, _, _ = _stream(custom_engine, SynthesisRequest(seed=6, **req))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_cancel_stops_within_one_frame(custom_engine):
    cancel = threading.Event()
    seen: list[int] = []
    frames_at_cancel: list[int] = []

    def on_audio(pcm):
        seen.append(pcm.shape[0])
        if len(seen) == 3:
            cancel.set()
            frames_at_cancel.append(sum(seen) // 1920)

    with pytest.raises(Cancelled):
        sequential.generate(custom_engine, SynthesisRequest(text="Cancel me please.", speaker="ryan",
                                                  max_frames=200, chunk_frames=1), on_audio, cancel)
    assert len(seen) == 3 and frames_at_cancel == [3]
    # the model is intact afterwards (tap removed)
    assert "forward" not in vars(custom_engine.tts.model.talker)
    _, _, st = _stream(custom_engine, SynthesisRequest(text="Still fine.", speaker="ryan", max_frames=4))
    assert st.frames == 4


def test_runaway_guard_scales_with_text(custom_engine):
    assert frame_budget("Hi.") < frame_budget("Hi. " * 50) <= 8000
    assert frame_budget("你好世界") > frame_budget("abcd")
    _, _, st = _stream(custom_engine, SynthesisRequest(text="Hi.", speaker="ryan"))
    assert st.frames == frame_budget("Hi.") and st.hit_frame_cap


@pytest.mark.parametrize("req, code", [
    (dict(text="", speaker="ryan"), "bad_request"),
    (dict(text="x", speaker="nobody"), "bad_request"),
    (dict(text="x", speaker="ryan", language="klingon"), "bad_request"),
    (dict(text="x", speaker="ryan", temperature=-1), "bad_request"),
])
def test_bad_requests_are_clear_errors(custom_engine, req, code):
    with pytest.raises(TTSError) as ei:
        sequential.generate(custom_engine, SynthesisRequest(max_frames=2, **req), lambda p: None)
    assert ei.value.code == code


def test_clone_needs_registered_voice(base_engine, custom_engine):
    with pytest.raises(TTSError) as ei:
        sequential.generate(base_engine, SynthesisRequest(text="x", voice="ghost", max_frames=2), lambda p: None)
    assert ei.value.code == "not_found"
    with pytest.raises(TTSError) as ei:
        custom_engine.add_voice("x", np.zeros(24000, np.float32), 24000, "hi")
    assert ei.value.code == "unsupported"


@pytest.mark.parametrize("size, params_b, talker_hidden", [("0.6b", (0.8, 1.0), 1024), ("1.7b", (1.8, 2.1), 2048)])
def test_real_size_configs_have_the_real_architecture(size, params_b, talker_hidden):
    """The benchmark sizes instantiate the real architecture (counted on the meta device)."""
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model

    with torch.device("meta"):
        m = Qwen3TTSForConditionalGeneration(Qwen3TTSConfig(**tinymodel.build_config("custom_voice", size)))
        codec = Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(**tinymodel.build_codec_config(size)))
    n = sum(p.numel() for p in m.parameters()) / 1e9
    assert params_b[0] <= n <= params_b[1], n
    assert m.config.talker_config.hidden_size == talker_hidden
    assert len(m.talker.model.layers) == 28 and len(m.talker.code_predictor.model.layers) == 5
    dec = codec.decoder
    assert len(dec.pre_transformer.layers) == 8 and dec.config.sliding_window == 72
    assert int(dec.total_upsample) == 1920


def test_consecutive_generations_continue_one_codec_stream(custom_engine):
    """Segments of one request (or one call's session) share the decoder: their joined audio
    is exactly the one-shot decode of all their codes - no seam between sentences."""
    dec = custom_engine.new_decoder()
    codes: list[torch.Tensor] = []
    audio: list[np.ndarray] = []
    for i, text in enumerate(["First sentence.", "Second one.", "Third."]):
        req = SynthesisRequest(text=text, speaker="serena", seed=i, max_frames=7, chunk_frames=3)
        sequential.generate(custom_engine, req, audio.append, on_codes=codes.append, decoder=dec)
    joined = np.concatenate(audio)
    with torch.inference_mode():
        ref = custom_engine._codec_decoder(torch.cat(codes).T.unsqueeze(0)).squeeze(1)[0].numpy()
    assert joined.shape == ref.shape == (21 * 1920,)
    assert np.abs(joined - ref).max() <= 1e-4
