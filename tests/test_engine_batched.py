"""The batched step engine against qwen-tts itself (fp32, CPU, tiny random checkpoints).

* teacher-forced: fed the same codes, its talker and code-predictor logits equal the
  qwen-tts modules' own forward passes (within 1e-4) at every step, for every variant;
* greedy solo output equals qwen-tts ``generate`` greedy output;
* seeded: solo output equals qwen-tts's seeded output (the sequential backend), and a
  request's codes are the same solo and inside a batch of 8 mixed requests;
* join/leave: rows admitted, cancelled or capped mid-flight leave the others unchanged;
* every row's streamed audio equals the one-shot decode of its codes.
"""

from __future__ import annotations

import threading
import time
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from qwen3ttsd.engine import SynthesisRequest, prewarm, sequential
from qwen3ttsd.engine.backend import Audio, BackendOptions, Done, Stream
from qwen3ttsd.engine.batched import BatchedBackend
from qwen3ttsd.engine.codec_lane import decode_many
from qwen3ttsd.engine.prewarm import codec_shapes
from qwen3ttsd.engine.prompt import build_prompt, own_prompt
from qwen3ttsd.engine.streaming_decoder import StreamingDecoder


def backend(engine, max_batch: int = 16, **options) -> BatchedBackend:
    """A batched backend; batch_decode off unless asked (single decodes round like the
    sequential engine's, so audio compares exactly), and the codec in the step unless asked
    (the default follows the host's cores: tests step the same way on any host)."""
    return BatchedBackend(engine, BackendOptions(max_batch=max_batch, **{"batch_decode": False,
                                                                         "overlap_decode": False, **options}))


class Run:
    """One stream's sink: collects its codes, audio and outcome."""

    def __init__(self, req: SynthesisRequest, continues=None) -> None:
        self.codes: list[torch.Tensor] = []
        self.audio: list[np.ndarray] = []
        self.result = None
        self.cancel = threading.Event()
        self.stream = Stream(req, sink=self.sink, cancel=self.cancel, continues=continues,
                             on_codes=self.codes.append)

    def sink(self, event) -> None:
        if isinstance(event, Audio):
            self.audio.append(event.pcm)
            return
        assert self.result is None, "finished twice"
        self.result = ("done", event.stats) if isinstance(event, Done) else ("error", event.error)
        self.codec = event.codec if isinstance(event, Done) else None

    @property
    def all_codes(self) -> torch.Tensor:
        return torch.cat(self.codes) if self.codes else torch.zeros(0, 16, dtype=torch.long)


def run_batched(engine, reqs, admit_at=None, max_batch=16, on_step=None, **options) -> list[Run]:
    """Admit ``reqs[i]`` before step ``admit_at[i]`` (default 0), step until all finish."""
    b = backend(engine, max_batch, **options)
    runs = [Run(r) for r in reqs]
    admit_at = admit_at or [0] * len(reqs)
    step = 0
    while True:
        for i, run in enumerate(runs):
            if admit_at[i] == step:
                b.admit(run.stream)
        if on_step:
            on_step(step, runs)
        if not b.active and all(a <= step for a in admit_at):
            break
        b.step()
        step += 1
    return runs


def sequential_codes(engine, req) -> torch.Tensor:
    codes: list[torch.Tensor] = []
    sequential.generate(engine, req, lambda pcm: None, on_codes=codes.append)
    return torch.cat(codes)


def clone_voice(base_engine, name: str, icl: bool):
    sr = 24000
    t = np.arange(int(sr * 2.0)) / sr
    wav = (0.3 * np.sin(2 * np.pi * 190 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return base_engine.add_voice(name, wav, sr, ref_text="Hello there, friend." if icl else None)


@pytest.fixture(scope="module")
def variants(custom_engine, base_engine, design_engine):
    """(engine, request) for every variant and prompt kind."""
    clone_voice(base_engine, "icl-voice", icl=True)
    clone_voice(base_engine, "xvec-voice", icl=False)
    return {
        "custom_voice": (custom_engine, SynthesisRequest(text="Hello world.", speaker="vivian", language="english")),
        "custom_voice_dialect": (custom_engine,
                                 SynthesisRequest(text="你好世界。", speaker="eric", language="chinese")),
        "voice_design": (design_engine, SynthesisRequest(text="Good morning.", instruct="a calm old narrator")),
        "base_icl": (base_engine,
                     SynthesisRequest(text="Nice to meet you all.", voice="icl-voice", language="english")),
        "base_xvector": (base_engine, SynthesisRequest(text="Nice to meet you.", voice="xvec-voice")),
    }


VARIANTS = ["custom_voice", "custom_voice_dialect", "voice_design", "base_icl", "base_xvector"]


# --- teacher forcing -------------------------------------------------------------------


def reference_logits(engine, prompt, frames):
    """qwen-tts's own talker / code-predictor forward passes, fed ``frames``."""
    talker = engine.tts.model.talker
    cp = talker.code_predictor
    n_len = prompt.embeds.shape[1]
    extra = {"trailing_text_hidden": prompt.trailing.unsqueeze(0), "tts_pad_embed": prompt.pad.view(1, 1, -1)}
    out = talker(inputs_embeds=prompt.embeds, attention_mask=torch.ones(1, n_len, dtype=torch.long),
                 use_cache=True, **extra)
    talker_logits, pred_logits = [out.logits[0, -1]], []
    cache, past_hidden = out.past_key_values, out.past_hidden
    for k in range(frames.shape[0]):
        c0_embed = talker.get_input_embeddings()(frames[k:k + 1, :1])
        o = cp(inputs_embeds=torch.cat([past_hidden, c0_embed], dim=1), use_cache=True)
        step_logits, pkv = [o.logits[0, -1]], o.past_key_values
        for j in range(1, 15):
            o = cp(input_ids=frames[k:k + 1, j:j + 1], past_key_values=pkv, generation_steps=j, use_cache=True)
            step_logits.append(o.logits[0, -1])
        pred_logits.append(torch.stack(step_logits))
        cp.generate = lambda k=k, **kw: SimpleNamespace(sequences=frames[k:k + 1, 1:])  # teacher codes
        try:
            out = talker(input_ids=frames[k:k + 1, :1], past_key_values=cache, use_cache=True,
                         attention_mask=torch.ones(1, n_len + k + 1, dtype=torch.long),
                         cache_position=torch.tensor([n_len + k]), past_hidden=past_hidden,
                         generation_step=k, **extra)
        finally:
            del cp.generate
        talker_logits.append(out.logits[0, -1])
        cache, past_hidden = out.past_key_values, out.past_hidden
    return torch.stack(talker_logits), torch.stack(pred_logits)


def engine_logits(engine, prompt, frames):
    b = backend(engine)
    n_len = prompt.embeds.shape[1]
    b.kv.reserve(1, n_len + frames.shape[0] + 1)
    logits, hidden = b.prefill(0, [prompt.embeds])
    talker_logits, pred_logits = [logits[0]], []
    for k in range(frames.shape[0]):
        seen: list[torch.Tensor] = []

        def teacher(j, lg, k=k, seen=seen):
            seen.append(lg[0])
            return frames[k, j + 1:j + 2]

        b.predict(hidden, frames[k:k + 1, 0], teacher)
        pred_logits.append(torch.stack(seen))
        text = prompt.trailing[k] if k < prompt.trailing.shape[0] else prompt.pad
        logits, hidden = b.talker_step(frames[k:k + 1], text.unsqueeze(0), [n_len + k])
        talker_logits.append(logits[0])
    return torch.stack(talker_logits), torch.stack(pred_logits)


@pytest.mark.parametrize("variant", VARIANTS)
def test_teacher_forced_logits_match_qwen_tts(variants, variant):
    engine, req = variants[variant]
    with torch.inference_mode():
        prompt = build_prompt(engine, req)
        frames = torch.randint(0, 2048, (12, 16), generator=torch.Generator().manual_seed(3))
        ref_t, ref_p = reference_logits(engine, prompt, frames)
        got_t, got_p = engine_logits(engine, prompt, frames)
    assert got_t.shape == ref_t.shape == (13, 3072) and got_p.shape == ref_p.shape == (12, 15, 2048)
    assert float((got_t - ref_t).abs().max()) <= 1e-4
    assert float((got_p - ref_p).abs().max()) <= 1e-4


# --- whole generations ---------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_solo_equals_qwen_tts_greedy(variants, variant):
    engine, req = variants[variant]
    req = SynthesisRequest(**{**vars(req), "max_frames": 12})
    kwargs, _ = engine.prepare(req)
    kwargs.update(do_sample=False, subtalker_dosample=False)
    with torch.inference_mode():
        ref = engine.tts.model.generate(**kwargs)[0][0]
        prompt = own_prompt(engine, req)  # the project's prompt, as the backend builds it by default
    prompt.settings.update(do_sample=False, subtalker_dosample=False)
    run = Run(req)
    b = backend(engine)
    assert b.prompts == "own"
    b._prompt = lambda stream: prompt  # this request's prompt, with qwen-tts's greedy settings
    b.admit(run.stream)
    while b.active:
        b.step()
    assert run.result[0] == "done"
    assert torch.equal(run.all_codes, ref[: run.all_codes.shape[0]]) and run.all_codes.shape[0] == min(12, ref.shape[0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_seeded_solo_equals_qwen_tts_seeded(variants, variant):
    """Same random numbers in the same order as qwen-tts: identical codes (CPU fp32)."""
    engine, req = variants[variant]
    req = SynthesisRequest(**{**vars(req), "max_frames": 10, "seed": 77})
    (run,) = run_batched(engine, [req])
    assert torch.equal(run.all_codes, sequential_codes(engine, req))


def mixed_requests() -> list[SynthesisRequest]:
    speakers = ["vivian", "ryan", "serena", "aiden"]
    out = []
    for i in range(8):
        out.append(SynthesisRequest(
            text=f"Mixed batch request number {i}. " * (1 + i % 3), speaker=speakers[i % 4],
            language=["english", "auto", "chinese"][i % 3], seed=1000 + i, max_frames=4 + i,
            chunk_frames=[1, 4, 3][i % 3], temperature=[None, 0.7, 1.2, None][i % 4],
            top_k=[None, 10, None, 0][i % 4], top_p=[None, None, 0.8, 0.95][i % 4],
            repetition_penalty=[None, 1.3, None, 1.0][i % 4]))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [False, True])
def test_seeded_request_same_codes_solo_and_in_a_batch_of_8(custom_engine, overlap):
    reqs = mixed_requests()
    solo = [run_batched(custom_engine, [r], overlap_decode=overlap)[0] for r in reqs]
    batch = run_batched(custom_engine, reqs, overlap_decode=overlap)
    for s, b, r in zip(solo, batch, reqs):
        assert b.result[0] == "done"
        assert b.all_codes.shape[0] == r.max_frames
        assert torch.equal(s.all_codes, b.all_codes)
        assert np.array_equal(np.concatenate(s.audio), np.concatenate(b.audio))  # byte-identical audio


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [False, True])
def test_join_cancel_and_cap_leave_other_rows_unchanged(custom_engine, overlap):
    reqs = mixed_requests()[:5]
    solo = [run_batched(custom_engine, [r])[0].all_codes for r in reqs]

    def cancel_row_2(step, runs):
        if step == 4:
            runs[2].cancel.set()

    # row 3 joins at step 3, row 4 at step 7; row 2 is cancelled at step 4; rows 0/1 hit caps early
    runs = run_batched(custom_engine, reqs, admit_at=[0, 0, 0, 3, 7], on_step=cancel_row_2,
                       overlap_decode=overlap)
    for i in (0, 1, 3, 4):
        assert runs[i].result[0] == "done" and runs[i].result[1].hit_frame_cap
        assert torch.equal(runs[i].all_codes, solo[i]), i
    kind, err = runs[2].result
    assert kind == "error" and err.code == "cancelled"
    assert runs[2].all_codes.shape[0] <= 4  # stopped within one step of the cancel
    assert torch.equal(runs[2].all_codes, solo[2][: runs[2].all_codes.shape[0]])


@pytest.mark.slow
@pytest.mark.parametrize("batch_decode,overlap", [(False, False), (True, False), (True, True)])
def test_streamed_audio_equals_one_shot_decode_for_every_row(custom_engine, batch_decode, overlap):
    reqs = mixed_requests()
    runs = run_batched(custom_engine, reqs, admit_at=[0, 0, 1, 1, 2, 5, 5, 9], batch_decode=batch_decode,
                       overlap_decode=overlap)
    dec = custom_engine._codec_decoder
    for run in runs:
        with torch.inference_mode():
            ref = dec(run.all_codes.T.unsqueeze(0)).squeeze(1)[0].numpy()
        audio = np.concatenate(run.audio)
        assert audio.shape == ref.shape
        assert np.abs(audio - ref).max() <= 1e-4


def test_push_many_equals_single_pushes(custom_engine):
    """Batched codec decode: rows at different positions (and one fresh) match solo pushes."""
    dec = custom_engine._codec_decoder
    g = torch.Generator().manual_seed(5)
    history = [0, 3, 80, 100]
    singles, batch = [], []
    for h in history:
        a, b = StreamingDecoder(dec), StreamingDecoder(dec)
        if h:
            past = torch.randint(0, 2048, (h, 16), generator=g)
            a.push(past)
            b.push(past)
        singles.append(a)
        batch.append(b)
    for _ in range(3):
        codes = torch.randint(0, 2048, (len(history), 2, 16), generator=g)
        want = torch.cat([s.push(codes[i]) for i, s in enumerate(singles)])
        got = StreamingDecoder.push_many(batch, codes)
        # relative to the signal: batched kernels round differently (1.2e-5 seen on AMD EPYC)
        assert float((want - got).abs().max()) <= 1e-4 * float(want.abs().max())
    assert [d.frames_seen for d in batch] == [h + 6 for h in history]


def test_icl_clone_row_streams_exactly_inside_a_batch(base_engine, variants):
    """An ICL clone's decoder starts from the reference codes' state, batched or not."""
    req = SynthesisRequest(text="Nice to meet you all.", voice="icl-voice", language="english", seed=5,
                           max_frames=9, chunk_frames=2)
    other = SynthesisRequest(text="Another voice here.", voice="xvec-voice", seed=6, max_frames=7)
    solo_audio: list[np.ndarray] = []
    sequential.generate(base_engine, req, solo_audio.append)
    runs = run_batched(base_engine, [other, req], admit_at=[0, 2])
    assert np.abs(np.concatenate(runs[1].audio) - np.concatenate(solo_audio)).max() <= 1e-4


def test_prompts_are_built_off_the_engine_thread_and_never_stall_the_batch(custom_engine):
    """A newcomer's prompt is built on the builder pool: the batch steps on meanwhile, the
    stream joins once built, and its codes are its solo codes."""
    joining = SynthesisRequest(text="Joining late.", speaker="vivian", seed=2, max_frames=5)
    (solo,) = run_batched(custom_engine, [joining])
    b = backend(custom_engine)
    first = Run(SynthesisRequest(text="Running along.", speaker="ryan", seed=1, max_frames=40))
    b.admit(first.stream)
    b.step()
    release, built_on = threading.Event(), []
    build = b._prompt

    def slow(stream):
        built_on.append(threading.current_thread())
        assert release.wait(30)
        return build(stream)

    b._prompt = slow
    second = Run(joining)
    b.admit(second.stream)
    frames = b.rows[0].frames
    for _ in range(3):
        b.step()
    assert b.rows[0].frames == frames + 3 and len(b.rows) == 1 and b.active == 2
    assert built_on and built_on[0] is not threading.current_thread()
    release.set()
    while b.active:
        b.step()
    assert second.result[0] == "done" and torch.equal(second.all_codes, solo.all_codes)


def test_qwen_tts_prompt_source_gives_the_same_codes(variants):
    """prompts="qwen-tts": qwen-tts's generate captured inline, as before the own builder."""
    engine, req = variants["base_icl"]
    req = SynthesisRequest(**{**vars(req), "max_frames": 6, "seed": 9})
    (own,) = run_batched(engine, [req])
    b = backend(engine)
    b.prompts = "qwen-tts"
    run = Run(req)
    b.admit(run.stream)
    assert not b._building
    while b.active:
        b.step()
    assert torch.equal(run.all_codes, own.all_codes)


def test_bad_requests_are_reported_not_raised(custom_engine):
    runs = run_batched(custom_engine, [SynthesisRequest(text="x", speaker="nobody"),
                                       SynthesisRequest(text="Fine.", speaker="ryan", max_frames=2)])
    assert runs[0].result[0] == "error" and runs[0].result[1].code == "bad_request"
    assert runs[1].result[0] == "done" and runs[1].all_codes.shape[0] == 2


def test_codec_lane_decodes_on_its_own_thread_and_reports_on_the_stepping_one(custom_engine):
    """Overlap: chunks are decoded off the stepping thread; done/error reach the sink on it."""
    threads: dict[str, set] = {"audio": set(), "end": set()}

    class Probe(Run):
        def sink(self, event):
            threads["audio" if isinstance(event, Audio) else "end"].add(threading.current_thread().name)
            super().sink(event)

    reqs = mixed_requests()[:3]
    runs = [Probe(r) for r in reqs]
    b = backend(custom_engine, 4, overlap_decode=True)
    for run in runs:
        b.admit(run.stream)
    while b.active:
        b.step()
    assert all(r.result[0] == "done" for r in runs)
    assert threads["end"] == {threading.current_thread().name}
    assert any(name.startswith("qwen3ttsd-codec") for name in threads["audio"])


def test_a_failing_decode_fails_the_streams_not_the_backend(custom_engine, monkeypatch):
    reqs = mixed_requests()[:3]
    runs = [Run(r) for r in reqs]
    b = backend(custom_engine, 4, overlap_decode=True, batch_decode=True)
    for run in runs:
        b.admit(run.stream)
    import qwen3ttsd.engine.codec_lane as codec_lane

    def boom(outs):
        raise RuntimeError("codec exploded")

    monkeypatch.setattr(codec_lane, "decode_many", boom)
    for _ in range(50):
        if not b.active:
            break
        b.step()
    assert not b.active
    assert all(r.result[0] == "error" and r.result[1].code == "internal" for r in runs)
    monkeypatch.undo()
    again = run_batched(custom_engine, reqs[:1], overlap_decode=True)  # a fresh backend still works
    assert again[0].result[0] == "done"


def test_a_burst_of_newcomers_is_prefilled_in_one_forward(custom_engine, monkeypatch):
    """Calls arriving together pay for one prefill; one cancelled before it never runs."""
    reqs = mixed_requests()[:4]
    solo = [run_batched(custom_engine, [r])[0].all_codes for r in reqs]
    b = backend(custom_engine, 8)
    prefills: list[int] = []
    real = b.prefill
    monkeypatch.setattr(b, "prefill", lambda slot, prompts: prefills.append(len(prompts)) or real(slot, prompts))
    runs = [Run(r) for r in reqs]
    for run in runs:
        b.admit(run.stream)
    runs[1].cancel.set()
    while b.active:
        b.step()
    assert prefills == [3]
    assert runs[1].result[0] == "error" and runs[1].result[1].code == "cancelled" and not runs[1].codes
    for i in (0, 2, 3):
        assert runs[i].result[0] == "done" and torch.equal(runs[i].all_codes, solo[i]), i


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("per_head", [False, True])
def test_lean_norm_equals_hf_rmsnorm(dtype, per_head):
    """lean.Norm (one GEMV on CPU float32, F.rms_norm otherwise) against HF's Qwen3 RMSNorm,
    for one weight per channel and for one per head (the joint q/k norm)."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    from qwen3ttsd.engine.lean import Norm

    torch.manual_seed(0)
    hf = Qwen3RMSNorm(64, eps=1e-6).to(dtype)
    with torch.no_grad():
        hf.weight.copy_(torch.randn(64))
    x = (torch.randn(3, 5, 6, 64) * 4).to(dtype)
    weight = hf.weight.detach().expand(6, -1).clone() if per_head else hf.weight
    norm = Norm(weight, hf.variance_epsilon)
    assert norm.gemv == (dtype == torch.float32)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(norm(x), hf(x), rtol=tol, atol=tol)


def test_batched_decode_uses_power_of_two_batch_sizes(custom_engine, monkeypatch):
    """oneDNN builds its kernels per input shape: a codec call per power-of-two batch size
    (7 due streams: 4 + 2 + 1) keeps the shapes few, and every row's audio is unchanged."""

    sizes: list[int] = []
    push_many = StreamingDecoder.push_many.__func__

    def recording(cls, decoders, codes):
        sizes.append(len(decoders))
        return push_many(cls, decoders, codes)

    monkeypatch.setattr(StreamingDecoder, "push_many", classmethod(recording))
    reqs = [SynthesisRequest(text="Seven at once.", speaker="ryan", seed=i, max_frames=3, first_chunk_frames=1,
                             chunk_frames=2) for i in range(7)]
    runs = run_batched(custom_engine, reqs, batch_decode=True)
    assert sizes[:3] == [4, 2, 1] and set(sizes) <= {1, 2, 4}
    dec = custom_engine._codec_decoder
    for run in runs:
        with torch.inference_mode():
            ref = dec(run.all_codes.T.unsqueeze(0)).squeeze(1)[0].numpy()
        assert np.abs(np.concatenate(run.audio) - ref).max() <= 1e-4


def test_prewarm_decodes_every_shape_the_codec_lane_can_use(custom_engine, monkeypatch):
    """A fresh daemon's first burst paid oneDNN's kernel builds on its way to first audio
    (tiny model: 27 ms against 12 ms per new batch shape). Once the backend is idle, the
    prewarm decodes silence at each (batch, frames) shape the codec lane can call with and
    reports its progress in the engine's info (admin.status)."""
    shapes: list[tuple[int, int]] = []
    push_many = StreamingDecoder.push_many.__func__

    def recording(cls, decoders, codes):
        shapes.append(tuple(codes.shape[:2]))
        return push_many(cls, decoders, codes)

    monkeypatch.setattr(StreamingDecoder, "push_many", classmethod(recording))
    b = backend(custom_engine, max_batch=6, batch_decode=True, prewarm_frames=2)
    deadline = time.monotonic() + 60
    while not b.prewarm.status["done"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert shapes == codec_shapes(6, 2) == [(1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 2)]
    assert b.status["codec_prewarm"]["built"] == 6 and b.active == 0


def test_the_codec_lane_calls_only_prewarmed_shapes(monkeypatch):
    calls: list[tuple[int, int]] = []

    def recording(cls, decoders, codes):
        calls.append(tuple(codes.shape[:2]))
        return torch.zeros(len(decoders), 1)

    monkeypatch.setattr(StreamingDecoder, "push_many", classmethod(recording))
    for rows in range(1, 7):
        for frames in (1, 2):
            decode_many([SimpleNamespace(pending=[0] * frames, take=lambda f=frames: torch.zeros(f, 16), decoder=None,
                                         emit=lambda audio: None) for _ in range(rows)])
    assert set(calls) == set(codec_shapes(6, 2))


def test_prewarm_waits_while_streams_run_and_stops_with_the_backend():
    """On a 2-core box a 0.6B stream ran 35% slower beside a nice-19 prewarm: it decodes only
    while no stream is in flight, and gives up once the backend (the model) is gone."""

    class Backend:
        engine = SimpleNamespace(loaded=True)
        active = 1

    backend = Backend()
    ref = weakref.ref(backend)
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(prewarm._idle_engine(ref)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got  # a stream is running
    backend.active = 0
    waiter.join(5)
    assert got == [Backend.engine]
    del backend
    assert prewarm._idle_engine(ref) is None


def test_prewarm_starts_only_after_a_quiet_spell(monkeypatch):
    """The prewarm starts as the model loads, while the first caller's request is still being
    admitted (a cold start: the load it triggered just ended): its first decode competed
    with that request's first steps. It now starts after START_QUIET_S with no stream in
    flight, and a stream in that spell starts the wait again."""
    monkeypatch.setattr(prewarm, "START_QUIET_S", 0.4)
    decoded: list[float] = []
    monkeypatch.setattr(prewarm.StreamingDecoder, "push_many",
                        staticmethod(lambda *a: decoded.append(time.monotonic())))
    decoder = SimpleNamespace(config=SimpleNamespace(num_quantizers=2))

    class Backend:
        engine = SimpleNamespace(loaded=True, new_decoder=lambda: decoder)
        active = 0

    backend = Backend()
    t0 = time.monotonic()
    pw = prewarm.Prewarm(backend, [(1, 1), (1, 2)], threads=1)
    time.sleep(0.2)
    backend.active = 1   # the first request, admitted
    time.sleep(0.2)
    assert not decoded
    backend.active = 0
    t1 = time.monotonic()
    pw.thread.join(5)
    assert len(decoded) == 2 and decoded[0] - t1 >= 0.35 and decoded[0] - t0 >= 0.75


def test_a_failing_prefill_fails_its_streams_and_the_rows_already_running_go_on_or_fail_cleanly(custom_engine,
                                                                                            monkeypatch):
    """A prefill that raised (a bf16 start on int8 kernels did) used to drop its newcomers
    without a report: their callers waited forever and the daemon never idled out. Every
    stream must end - here with an internal error - and the backend must be idle after."""
    b = backend(custom_engine, 4)

    def broken(*args, **kwargs):
        raise RuntimeError("expected scalar type Float but found BFloat16")

    monkeypatch.setattr(b, "prefill", broken)
    runs = [Run(SynthesisRequest(text=f"Call {i}.", speaker="ryan", max_frames=4)) for i in range(2)]
    for run in runs:
        b.admit(run.stream)
    for _ in range(5):
        b.step()
    assert not b.active
    assert [run.result[0] for run in runs] == ["error", "error"]
    assert all(run.result[1].code == "internal" and "BFloat16" in run.result[1].message for run in runs)
