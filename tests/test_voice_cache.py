"""A saved clone voice's registration kept beside it between daemon starts (engine/voice_cache.py).

After an idle exit the first call to a saved clone voice used to register it again (codec
encoder loaded, reference encoded, x-vector, codec primed: 1.2-1.5 s at 0.6B). Kept, a start
reads it back - bitwise what registering gives, so the same seed speaks the same - and a
damaged or foreign file is never used.
"""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from qwen3ttsd.engine import Engine, LoadOptions, SynthesisRequest, voice_cache


def _clip(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    t = np.arange(int(24000 * seconds)) / 24000
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * 190 * t) + 0.05 * noise).astype(np.float32)


def _own(tiny_models) -> Engine:
    """A fresh engine: what the next daemon start has."""
    e = Engine(str(tiny_models["base"]), LoadOptions(weights="own"))
    e.load()
    return e


def _kept(d: Path) -> list[Path]:
    return sorted(d.glob(f"{voice_cache.PREFIX}*.safetensors"))


def _same_registration(a, b) -> None:
    assert (a.item.x_vector_only_mode, a.item.icl_mode, a.item.ref_text) == \
        (b.item.x_vector_only_mode, b.item.icl_mode, b.item.ref_text)
    assert torch.equal(a.item.ref_spk_embedding, b.item.ref_spk_embedding)
    assert (a.item.ref_code is None) == (b.item.ref_code is None)
    if a.item.ref_code is not None:
        assert torch.equal(a.item.ref_code, b.item.ref_code)
    assert (a.decoder_state is None) == (b.decoder_state is None)
    if a.decoder_state is not None:
        sa, sb = a.decoder_state, b.decoder_state
        assert sa["frames"] == sb["frames"]
        for part in ("conv", "trans"):   # keyed by each engine's own codec modules, in stream order
            assert len(sa[part]) == len(sb[part])
            assert all(torch.equal(x, y) for x, y in zip(sa[part].values(), sb[part].values()))
        assert [kv is None for kv in sa["kv"]] == [kv is None for kv in sb["kv"]]
        assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
                   for x, y in zip(sa["kv"], sb["kv"]) if x is not None)


@pytest.mark.parametrize("ref_text", ["A reference.", None], ids=["icl", "x-vector"])
def test_a_kept_registration_reads_back_bitwise_and_speaks_the_same(tiny_models, tmp_path, ref_text):
    from tests.test_engine_batched import run_batched

    wav = _clip()
    first = _own(tiny_models)
    registered = first.add_voice("v", wav, 24000, ref_text, keep_dir=str(tmp_path))
    [kept] = _kept(tmp_path)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600   # beside the recording, as private
    again = _own(tiny_models)
    read = again.add_voice("v", wav, 24000, ref_text, keep_dir=str(tmp_path))
    assert again.codec_encoder is None   # nothing encoded: the ICL codes were read back
    _same_registration(registered, read)
    req = SynthesisRequest(text="Hello there.", voice="v", language="english", max_frames=6, seed=7)
    [a], [b] = run_batched(first, [req]), run_batched(again, [req])
    assert a.result[0] == b.result[0] == "done" and torch.equal(a.all_codes, b.all_codes)
    assert np.array_equal(np.concatenate(a.audio), np.concatenate(b.audio))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "foreign"])
def test_a_damaged_or_foreign_file_is_removed_and_the_voice_registered_again(tiny_models, tmp_path, damage):
    wav, text = _clip(), "A reference."
    registered = _own(tiny_models).add_voice("v", wav, 24000, text, keep_dir=str(tmp_path))
    [kept] = _kept(tmp_path)
    if damage == "garbage":
        kept.write_bytes(b"\x00" * 64)
    elif damage == "truncated":
        kept.write_bytes(kept.read_bytes()[:-100])
    elif damage == "flipped":   # one bit of the last tensor's data: safetensors reads it fine
        data = bytearray(kept.read_bytes())
        data[-3] ^= 0x10
        kept.write_bytes(bytes(data))
    else:  # another voice's file under this one's name
        other = tmp_path / "other"
        other.mkdir()
        _own(tiny_models).add_voice("w", _clip(seed=5), 24000, text, keep_dir=str(other))
        _kept(other)[0].replace(kept)
    again = _own(tiny_models)
    read = again.add_voice("v", wav, 24000, text, keep_dir=str(tmp_path))
    assert again.codec_encoder is not None   # registered anew
    _same_registration(registered, read)
    [rewritten] = _kept(tmp_path)
    tag = rewritten.name[len(voice_cache.PREFIX):-len(".safetensors")]
    assert voice_cache.load(tmp_path, tag, again._codec_decoder, torch.device("cpu")) is not None


def test_other_audio_or_checkpoint_is_another_file_and_few_are_kept(tiny_models, tmp_path, monkeypatch):
    e = _own(tiny_models)
    for seed in range(voice_cache.KEEP + 2):   # the voice replaced by other audio, again and again
        e.add_voice("v", _clip(seed=seed), 24000, "A reference.", keep_dir=str(tmp_path))
    assert len(_kept(tmp_path)) == voice_cache.KEEP
    other = _own(tiny_models)
    other._kept_key = "another checkpoint"
    other.add_voice("v", _clip(seed=0), 24000, "A reference.", keep_dir=str(tmp_path))
    assert other.codec_encoder is not None   # not the first checkpoint's registration


def test_without_a_directory_or_with_qwen_tts_nothing_is_kept(tiny_models, tmp_path, base_engine):
    _own(tiny_models).add_voice("v", _clip(), 24000, "A reference.")
    base_engine.add_voice("v-kept", _clip(), 24000, "A reference.", keep_dir=str(tmp_path))   # qwen-tts's items
    assert _kept(tmp_path) == []


def test_an_unwritable_voice_directory_costs_only_the_next_registration(tiny_models, tmp_path):
    gone = tmp_path / "deleted-meanwhile"
    p = _own(tiny_models).add_voice("v", _clip(), 24000, "A reference.", keep_dir=str(gone))
    assert p.item.ref_code is not None and not gone.exists()


def test_a_daemon_reads_a_saved_voices_registration_after_an_idle_exit(tiny_models, tmp_path):
    """As a user meets it: a saved ICL voice, a seeded call, an idle exit, the next start's
    first call to the voice - the same audio, and no codec encoder loaded to get there."""
    import io

    import soundfile as sf

    from qwen3ttsd.client import Client
    from tests.helpers import daemon_env, start_daemon, synth

    state = tmp_path / "state"
    buf = io.BytesIO()
    sf.write(buf, _clip(2.0), 24000, format="WAV")
    audio = []
    logs = []
    for start in range(2):
        rt = tmp_path / f"rt{start}"
        p = start_daemon(rt, daemon_env(tiny_models["base"], state, idle_timeout=0.5, prewarm=0))
        try:
            if start == 0:
                with Client(str(rt / "tts.sock")) as c:
                    c.call("voices.add", {"name": "brand", "audio": buf.getvalue(), "ref_text": "A reference.",
                                          "consent": "recorded 2026-12-07"})
            result, pcm, _ = synth(rt / "tts.sock", text="Thanks for calling.", voice="brand", language="english",
                                   max_frames=5, seed=11, format="pcm16")
            assert result["frames"] == 5 and pcm
            audio.append(pcm)
            assert p.wait(60) == 0   # the idle exit
        finally:
            if p.poll() is None:
                p.kill()
        logs.append(p.stderr.read().decode())
        if start == 0:
            assert len(_kept(state / "voices" / "brand")) == 1
    assert audio[0] == audio[1]
    assert "codec encoder loaded" in logs[0] and "codec encoder loaded" not in logs[1]


def test_deleting_a_voice_takes_its_kept_registration_and_a_late_write_is_harmless(tiny_models, tmp_path):
    from qwen3ttsd.daemon.voices import VoiceStore

    store = VoiceStore(tmp_path)
    store.add("brand", _clip(), "A reference.")
    d = store.directory("brand")
    e = _own(tiny_models)
    e.add_voice("brand", _clip(), 24000, "A reference.", keep_dir=str(d))
    assert len(_kept(d)) == 1
    assert store.remove("brand") and not d.exists()
    assert [p.name for p in (tmp_path / "voices").iterdir()] == []   # nothing half-deleted left
    e.drop_voice("brand")
    e.add_voice("brand", _clip(), 24000, "A reference.", keep_dir=str(d))   # a registration racing the delete
    assert not d.exists()


def test_a_registration_kept_under_another_dtype_or_codec_plan_is_not_used(tiny_models, tmp_path):
    """QWEN3TTSD_DTYPE, the device and CODEC_QUANT change the codes' dtype and the primed state:
    a registration kept under one is another file under the other (a bf16 start reading an
    fp32 file failed every call to the voice)."""
    from qwen3ttsd.engine import codec_quant

    wav, text = _clip(), "A reference."
    _own(tiny_models).add_voice("v", wav, 24000, text, keep_dir=str(tmp_path))
    bf16 = Engine(str(tiny_models["base"]), LoadOptions(weights="own", dtype="bfloat16"))
    bf16.load()
    p = bf16.add_voice("v", wav, 24000, text, keep_dir=str(tmp_path))
    assert bf16.codec_encoder is not None and len(_kept(tmp_path)) == 2   # registered anew, kept beside
    assert p.item.ref_spk_embedding.dtype == torch.bfloat16
    e = _own(tiny_models)
    key, ckpt, codec = e.voice_key("v", wav, text), e._checkpoint_key(), e._codec_decoder
    plain = voice_cache.registration_tag(key, False, ckpt, codec)
    codec.__dict__[codec_quant.PLAN] = ("int8", {"decoder.7.conv": "bf16"})
    assert voice_cache.registration_tag(key, False, ckpt, codec) != plain


def test_a_damaged_file_that_cannot_be_removed_is_left_unused(tiny_models, tmp_path, monkeypatch):
    """A read-only voice directory: the bad file stays, the voice is registered in memory
    and speaks (it was an error on every call)."""
    wav, text = _clip(), "A reference."
    _own(tiny_models).add_voice("v", wav, 24000, text, keep_dir=str(tmp_path))
    [kept] = _kept(tmp_path)
    kept.write_bytes(b"\x00" * 64)

    def refuse(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    e = _own(tiny_models)
    p = e.add_voice("v", wav, 24000, text, keep_dir=str(tmp_path))
    assert p.item.ref_code is not None and e.codec_encoder is not None
