"""The on-disk cache of quantized weights (issue 19, engine/weight_cache.py).

* a second load takes the int8 weights from the cache, never reads the fp32 linears they
  replace, and serves the same codes;
* a truncated, bit-flipped or mismatched (other key) file is detected, removed and rebuilt;
* two daemons writing at once leave one whole, valid file;
* an unwritable state directory still serves (without a cache);
* the pickle inside resolves only torch / engine classes.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import pickle
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import pytest
import torch

from qwen3ttsd.engine import Engine, LoadOptions, SynthesisRequest, weight_cache as wc
from tests.test_engine_batched import Run, backend

ROOT = Path(__file__).resolve().parents[1]


def _serve(model: Path, cache_dir: Path, quant: str = "int8") -> tuple[Engine, torch.Tensor]:
    """Load with the cache, serve one seeded request, wait for the cache writer."""
    e = Engine(str(model), LoadOptions(weights="own", quant=quant, cache_dir=str(cache_dir)))
    e.load()
    b = backend(e, quant=quant)
    run = Run(SynthesisRequest(text="Hello world.", speaker="vivian", language="english", max_frames=5, seed=3))
    b.admit(run.stream)
    while b.active:
        b.step()
    assert run.result[0] == "done"
    if b.cache_writer is not None:
        b.cache_writer.join(60)
    return e, run.all_codes


def _files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.safetensors"))


@pytest.fixture()
def cached(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr(wc, "IDLE_GRACE_S", 0.0)
    cache_dir = tmp_path / "state" / "weight-cache"
    e, codes = _serve(tiny_models["custom_voice"], cache_dir)
    assert e.weight_cache.status["state"] == "written"
    return cache_dir, codes


def test_a_second_load_serves_from_the_cache_without_reading_fp32_linears(cached, tiny_models):
    cache_dir, codes = cached
    [path] = _files(cache_dir)
    e, again = _serve(tiny_models["custom_voice"], cache_dir)
    assert e.weight_cache.hit and e.info["weight_cache"]["state"] == "hit"
    assert torch.equal(again, codes)
    talker = e.own[0].talker
    q = talker.model.layers[0].self_attn.q_proj.weight
    assert q.device.type == "meta"                      # never read from the checkpoint
    assert talker.codec_head.weight.device.type == "meta"
    assert talker.model.norm.weight.device.type == "cpu"
    assert _files(cache_dir) == [path]


@pytest.mark.parametrize("damage", ["truncate", "flip", "other_key"])
def test_a_damaged_or_mismatched_cache_is_rebuilt_never_used(cached, tiny_models, damage):
    cache_dir, codes = cached
    [path] = _files(cache_dir)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 1000]
    elif damage == "flip":
        data[-10] ^= 0xFF   # inside the last tensor's bytes
    else:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        key = json.loads(header["__metadata__"]["key"])
        key["torch"] = "0.0"
        header["__metadata__"]["key"] = json.dumps(key, sort_keys=True)
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        data = bytearray(len(raw).to_bytes(8, "little") + raw + data[8 + n:])
    path.write_bytes(bytes(data))
    e, again = _serve(tiny_models["custom_voice"], cache_dir)
    assert not e.weight_cache.hit and e.weight_cache.status["state"] == "written"
    assert torch.equal(again, codes)
    assert e.own[0].talker.codec_head.weight.numel() == 0   # quantized from the fp32 weights
    e2, _ = _serve(tiny_models["custom_voice"], cache_dir)
    assert e2.weight_cache.hit


def test_a_changed_checkpoint_or_mode_gets_its_own_file_and_the_old_one_goes(cached, tiny_models, tmp_path):
    cache_dir, _ = cached
    [old] = _files(cache_dir)
    model = tmp_path / "model"
    model.symlink_to(tiny_models["custom_voice"])   # the key is the content, not the path
    c = wc.WeightCache(cache_dir, tiny_models["custom_voice"], ["config.json", "model.safetensors"], "int8", "cpu",
                       torch.float32)
    assert c.path == old
    other = wc.WeightCache(cache_dir, tiny_models["custom_voice"], ["config.json", "model.safetensors"], "int4",
                           "cpu", torch.float32)
    assert other.path != old and not other.load()
    weights = tiny_models["custom_voice"] / "model.safetensors"
    st = weights.stat()
    try:
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        touched = wc.WeightCache(cache_dir, tiny_models["custom_voice"], ["config.json", "model.safetensors"],
                                 "int8", "cpu", torch.float32)
        assert touched.path != old
        assert touched.store({"w": torch.ones(3)}, [])
        assert _files(cache_dir) == [touched.path]       # the stale one removed
    finally:
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))


def _quantized() -> torch.nn.Module:
    from qwen3ttsd.engine.lean import quantize_int8

    torch.manual_seed(0)
    return quantize_int8(torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 8)))


def test_quantized_modules_round_trip_exactly(tmp_path, tiny_models):
    c = wc.WeightCache(tmp_path, tiny_models["custom_voice"], ["config.json"], "int8", "cpu", torch.float32)
    m = _quantized()
    assert c.store({"m": m, "plain": torch.arange(5.0)}, ["a.weight"])
    c2 = wc.WeightCache(tmp_path, tiny_models["custom_voice"], ["config.json"], "int8", "cpu", torch.float32)
    assert c2.load() and c2.released == ["a.weight"]
    x = torch.randn(4, 64)
    assert torch.equal(c2.value["m"](x), m(x)) and torch.equal(c2.value["plain"], torch.arange(5.0))


def test_int8_weights_are_repacked_on_a_pool_off_the_unpickling_thread(tmp_path, tiny_models, monkeypatch):
    """Reading the 0.6B cache took 3.7 s, 3.2 of them in the unpickler repacking the int8
    linears (fbgemm's prepack) one by one, holding the GIL (ScriptObject.__setstate__): the
    load beside it (the codec, the rest of the talker) waited too. Each is now packed by
    ``torch.ops.quantized.linear_prepack`` (it lets go of the GIL) on a pool of
    REPACK_THREADS, while the unpickling goes on; the result is the same."""
    c = wc.WeightCache(tmp_path, tiny_models["custom_voice"], ["config.json"], "int8", "cpu", torch.float32)
    torch.manual_seed(0)
    from qwen3ttsd.engine.lean import quantize_int8

    m = quantize_int8(torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(6)]))
    assert c.store({"m": m, "heads": [m[0], m[1]]}, [])
    threads: list[str] = []
    real = wc._prepack

    def prepack(w: torch.Tensor, b: torch.Tensor | None) -> object:
        threads.append(threading.current_thread().name)
        return real(w, b)

    monkeypatch.setattr(wc, "_prepack", prepack)
    monkeypatch.setattr(wc, "REPACK_THREADS", 2)
    c2 = wc.WeightCache(tmp_path, tiny_models["custom_voice"], ["config.json"], "int8", "cpu", torch.float32)
    assert c2.load()
    c2.packed()   # the packing goes on after load() returns (the backend is built meanwhile)
    assert len(threads) == 6 and threading.current_thread().name not in threads
    x = torch.randn(3, 64)
    assert torch.equal(c2.value["m"](x), m(x))
    assert c2.value["heads"][0] is c2.value["m"][0]   # shared modules stay shared
    assert not any(isinstance(v, wc._Pending) for mod in c2.value["m"].modules() for v in vars(mod).values())


def test_the_backend_is_built_while_the_cached_int8_weights_pack(cached, tiny_models, monkeypatch):
    """A cold start from the cache spent ~1.5 s (0.6B, 2 cores) packing the int8 weights
    for fbgemm before the backend's own set-up (the text tokenizer, the codec's first
    push: ~0.4 s on one core) could begin. The packing now goes on while the backend is
    built; it is waited for before the backend's first step, and the codes are the same."""
    cache_dir, codes = cached
    from qwen3ttsd.engine import batched

    built = threading.Event()
    packed_after_build: list[bool] = []
    real_prepack, real_builder = wc._prepack, batched.prompt_builder

    def prepack(w: torch.Tensor, b: torch.Tensor | None) -> object:
        packed_after_build.append(built.wait(0 if packed_after_build else 10))   # held until the set-up ran
        return real_prepack(w, b)

    def prompt_builder(engine: object) -> object:   # the backend's set-up, as it calls it
        built.set()
        return real_builder(engine)

    monkeypatch.setattr(wc, "_prepack", prepack)
    monkeypatch.setattr(batched, "prompt_builder", prompt_builder)
    e, again = _serve(tiny_models["custom_voice"], cache_dir)
    assert e.weight_cache.hit and packed_after_build and all(packed_after_build)
    assert torch.equal(again, codes)


def test_a_cache_whose_packing_fails_serves_unpacked_and_is_removed(cached, tiny_models, monkeypatch):
    """A file that passes its checks but whose weights fbgemm refuses to pack: those
    weights go on serving from their plain integers (the request is served), the file is
    removed, and the next load quantizes again and writes a good one."""
    cache_dir, codes = cached

    def refuse(w: torch.Tensor, b: torch.Tensor | None) -> object:
        raise RuntimeError("fbgemm refuses")

    with monkeypatch.context() as m:
        m.setattr(wc, "_prepack", refuse)
        e, served = _serve(tiny_models["custom_voice"], cache_dir)
    assert e.weight_cache.hit and served.numel() > 0
    assert e.weight_cache.status["state"] == "rebuilt" and _files(cache_dir) == []
    e, again = _serve(tiny_models["custom_voice"], cache_dir)
    assert not e.weight_cache.hit and torch.equal(again, codes) and len(_files(cache_dir)) == 1


def test_the_first_request_is_served_while_the_int8_weights_pack(cached, tiny_models, monkeypatch):
    """Issue 19: a cold start from the cache waited for fbgemm to pack every int8 weight
    (~3.6 s of CPU at 0.6B) before its first step. An unseeded request is now served from
    the plain weights while the packing goes on (here: held until the request is done);
    once packed, the packed objects serve and a seeded request gets the warm codes."""
    cache_dir, codes = cached
    from qwen3ttsd.engine.lean import unpacked_int8_runs

    release = threading.Event()
    if not unpacked_int8_runs():   # a CPU without torch._int_mm: the request waits for the packing
        release.set()
    real = wc._prepack

    def held(w: torch.Tensor, b: torch.Tensor | None) -> object:
        release.wait(30)
        return real(w, b)

    monkeypatch.setattr(wc, "_prepack", held)
    e = Engine(str(tiny_models["custom_voice"]), LoadOptions(weights="own", quant="int8", cache_dir=str(cache_dir)))
    e.load()
    b = backend(e, quant="int8")
    run = Run(SynthesisRequest(text="Hello world.", speaker="vivian", language="english", max_frames=5))
    b.admit(run.stream)
    while b.active:
        b.step()
    assert run.result[0] == "done" and run.all_codes.shape[0] == 5
    int8_bytes = e.info["memory_bytes"]["int8"]   # admin.status while packing (it unpacked every weight)
    pending = lambda: None  # noqa: E731 - replaced where the plain weights serve
    if not release.is_set():
        assert e.weight_cache.hit and e.weight_cache.status["packed"] is False
        first_qkv = e.serving_model.__dict__["_qwen3ttsd_int8"][0][0].qkv
        pending = weakref.ref(first_qkv._packed_params._packed_params)   # a _Pending (with the plain weight)
        assert isinstance(pending(), wc._Pending)
    release.set()
    seeded = Run(SynthesisRequest(text="Hello world.", speaker="vivian", language="english", max_frames=5, seed=3))
    b.admit(seeded.stream)
    while b.active:
        b.step()
    assert e.weight_cache.status["packed"] is True and torch.equal(seeded.all_codes, codes)
    assert e.info["memory_bytes"]["int8"] == int8_bytes > 0
    gc.collect()   # the plain weights are not held beside the packed ones once packed
    assert pending() is None


def test_unpacked_int8_is_close_to_fp32_and_each_row_is_its_own():
    """lean.unpacked_int8 (a cold start's int8 Linear before fbgemm has packed it): within
    int8 rounding of the fp32 Linear, and a row's result does not depend on its batch."""
    from qwen3ttsd.engine.lean import quantize_int8, unpacked_int8

    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 96)
    q = quantize_int8(lin)
    w = q.weight()
    x = torch.randn(5, 256) * torch.logspace(-2, 1, 5).unsqueeze(1)   # rows of very different sizes
    out = unpacked_int8(x, w.int_repr(), w.q_per_channel_scales().float(), q.bias())
    ref = lin(x).detach()
    rel = ((out - ref).norm(dim=1) / ref.norm(dim=1)).max().item()
    assert rel < 0.02
    for i in range(5):
        alone = unpacked_int8(x[i:i + 1], w.int_repr(), w.q_per_channel_scales().float(), q.bias())
        assert torch.equal(alone, out[i:i + 1])


@pytest.mark.parametrize("int_mm", [True, False])
def test_a_still_packing_int8_linear_serves_unpacked_or_waits_where_int_mm_does_not_run(monkeypatch, int_mm):
    """Where torch._int_mm does not run (checked once), a weight still being packed waits
    for fbgemm instead of serving unpacked; either way the call gives its Linear's result."""
    from qwen3ttsd.engine import lean

    torch.manual_seed(0)
    q = lean.quantize_int8(torch.nn.Linear(64, 48))
    packed = q._packed_params._packed_params
    w = q.weight()

    class StillPacking:
        int8, scales, bias = w.int_repr(), w.q_per_channel_scales().float(), q.bias()

        def ready(self) -> object:
            return None

        def packed(self) -> object:
            return packed

    monkeypatch.setattr(lean, "unpacked_int8_runs", lambda: int_mm)
    q._packed_params._packed_params = StillPacking()
    x = torch.randn(3, 64)
    got = lean._int8(q, x)
    if int_mm:
        assert torch.equal(got, lean.unpacked_int8(x, StillPacking.int8, StillPacking.scales, StillPacking.bias))
        assert isinstance(q._packed_params._packed_params, StillPacking)
    else:
        assert q._packed_params._packed_params is packed and torch.equal(got, q(x))


WRITER = """
import sys, torch
from qwen3ttsd.engine import weight_cache as wc
from qwen3ttsd.engine.lean import quantize_int8
torch.manual_seed(0)
m = quantize_int8(torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(8)]))
c = wc.WeightCache(sys.argv[1], sys.argv[2], ["config.json"], "int8", "cpu", torch.float32)
for _ in range(5):
    assert c.store(m, [])
print("ok")
"""


def test_two_writers_at_once_leave_one_valid_file(tmp_path, tiny_models):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-c", WRITER, str(tmp_path), str(tiny_models["custom_voice"])]
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    assert [p.communicate(timeout=120)[0].strip() for p in procs] == ["ok", "ok"]
    assert len(_files(tmp_path)) == 1 and not list(tmp_path.glob(".*.tmp"))
    c = wc.WeightCache(tmp_path, tiny_models["custom_voice"], ["config.json"], "int8", "cpu", torch.float32)
    assert c.load() and len(c.value) == 8


def test_an_unwritable_state_directory_still_serves(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr(wc, "IDLE_GRACE_S", 0.0)
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")   # mkdir fails, even as root
    e, codes = _serve(tiny_models["custom_voice"], blocker / "weight-cache")
    assert e.weight_cache.status["state"] == "unwritable" and codes.shape[0] == 5
    if os.geteuid() != 0:   # a read-only directory (root writes anyway)
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        e, _ = _serve(tiny_models["custom_voice"], ro)
        assert e.weight_cache.status["state"] == "unwritable"


def test_the_pickle_resolves_nothing_outside_torch_and_the_engine(tmp_path, tiny_models):
    c = wc.WeightCache(tmp_path, tiny_models["custom_voice"], ["config.json"], "int8", "cpu", torch.float32)
    assert c.store({"x": torch.ones(2)}, [])
    data = bytearray(c.path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    evil = pickle.dumps(os.system)   # a global outside the allowed set
    header["__metadata__"]["pickle"] = base64.b64encode(evil).decode()
    header["__metadata__"]["pickle_crc"] = str(__import__("zlib").crc32(evil))
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    c.path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(data[8 + n:]))
    c2 = wc.WeightCache(tmp_path, tiny_models["custom_voice"], ["config.json"], "int8", "cpu", torch.float32)
    assert not c2.load() and not c2.path.exists()


def _daemon_serves(model: Path, rt: Path, state: Path, **settings: object) -> tuple[str | None, dict]:
    """A real daemon with its CPU defaults (plus ``settings``): one request, then its weight
    cache state (waiting for the write; None: no cache) and its backend's status."""
    from qwen3ttsd.client import Client
    from tests.helpers import daemon_env, start_daemon, wait_for

    p = start_daemon(rt, daemon_env(model, state, idle_timeout=-1, prewarm=0, **settings))
    try:
        with Client(str(rt / "tts.sock"), timeout=120) as c:
            chunks = [ev for ev in c.synthesize(text="Hello.", voice="vivian", language="english", max_frames=3,
                                                format="pcm16") if ev.kind == "chunk" and ev.audio]
        assert chunks

        def loaded() -> dict:
            with Client(str(rt / "admin.sock"), timeout=30) as c:
                return next(iter(c.call("admin.status", {})["loaded"].values()))

        def state_now() -> str | None:
            s = (loaded().get("weight_cache") or {"state": "none"})["state"]
            return s if s not in ("miss", "rebuilt") else None

        cache_state = wait_for(state_now, 60, what="weight cache written")
        return (None if cache_state == "none" else cache_state), loaded()["backend"]
    finally:
        p.terminate()
        p.wait(30)


def test_a_daemon_serves_int8_by_default_on_the_cpu_and_the_next_start_uses_the_cache(tiny_models, tmp_path):
    """Issue 25: no knobs - a CPU daemon's defaults serve the int8 linears, and the cache
    they are kept in (issue 19) makes the next start read them."""
    state = tmp_path / "state"
    cache_state, backend = _daemon_serves(tiny_models["custom_voice"], tmp_path / "rt1", state)
    assert (cache_state, backend["quant"]) == ("written", "int8")
    assert len(_files(state / "weight-cache")) == 1
    assert _daemon_serves(tiny_models["custom_voice"], tmp_path / "rt2", state)[0] == "hit"


def test_quant_none_serves_fp32_and_keeps_no_cache(tiny_models, tmp_path):
    state = tmp_path / "state"
    cache_state, backend = _daemon_serves(tiny_models["custom_voice"], tmp_path / "rt", state, quant="none")
    assert (cache_state, backend["quant"]) == (None, None)
    assert not (state / "weight-cache").exists()


def _with_pickle(c: wc.WeightCache, data: bytes) -> None:
    """Replace the pickle in ``c``'s file (its checksum made to match)."""
    raw_file = bytearray(c.path.read_bytes())
    n = int.from_bytes(raw_file[:8], "little")
    header = json.loads(raw_file[8:8 + n])
    header["__metadata__"]["pickle"] = base64.b64encode(data).decode()
    header["__metadata__"]["pickle_crc"] = str(__import__("zlib").crc32(data))
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    c.path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(raw_file[8 + n:]))


def _global(module: str, name: str) -> bytes:
    """Protocol-4 STACK_GLOBAL of ``module``/``name`` (a dotted name walks attributes)."""
    def text(s: str) -> bytes:
        b = s.encode()
        return b"\x8c" + bytes([len(b)]) + b
    return text(module) + text(name) + b"\x93"


def test_weight_cache_unpickler_refuses_dotted_names_that_leave_the_allow_list(tmp_path, tiny_models):
    """An allowed module prefix must not be a way out: pickle protocol 4 resolves a dotted
    name attribute by attribute (``torch.nn.functional`` -> ``torch.serialization.os.system``)."""
    marker = tmp_path / "pwned"
    c = wc.WeightCache(tmp_path, tiny_models["custom_voice"], ["config.json"], "int8", "cpu", torch.float32)
    assert c.store({"x": torch.ones(2)}, [])
    evil = (b"\x80\x04" + _global("torch.nn.functional", "torch.serialization.os.system")
            + b"\x8c" + bytes([len(f"touch {marker}")]) + f"touch {marker}".encode() + b"\x85R.")
    _with_pickle(c, evil)
    c2 = wc.WeightCache(tmp_path, tiny_models["custom_voice"], ["config.json"], "int8", "cpu", torch.float32)
    assert not c2.load() and not c2.path.exists()
    assert not marker.exists()
    for module, name in [("torch.nn.functional", "torch"), ("torch.nn.modules.linear", "F")]:
        _ = c.store({"x": torch.ones(2)}, [])   # not-a-class attributes of allowed modules
        _with_pickle(c, b"\x80\x04" + _global(module, name) + b".")
        c3 = wc.WeightCache(tmp_path, tiny_models["custom_voice"], ["config.json"], "int8", "cpu", torch.float32)
        assert not c3.load(), (module, name)


def test_a_cache_with_valid_checksums_but_the_wrong_structure_is_rebuilt_and_serves(cached, tiny_models):
    """A file whose key and checksums match but whose structure is not what the int8 backend
    builds (another code version's layout, a hand-made file): never a failed load (a 500 at
    every request until someone deletes it), rebuilt from the checkpoint instead."""
    cache_dir, codes = cached
    [path] = _files(cache_dir)
    c = wc.WeightCache(cache_dir, tiny_models["custom_voice"], ["config.json", "model.safetensors"], "int8", "cpu",
                       torch.float32)
    assert c.load()
    released = c.released
    for bogus in ({"x": torch.ones(2)}, (c.value[0], c.value[1], c.value[2])):
        assert c.store(bogus, released)   # same key, the fp32 linears still skipped by the loader
        e, again = _serve(tiny_models["custom_voice"], cache_dir)
        assert e.weight_cache.status["state"] == "written" and torch.equal(again, codes)
        assert wc.WeightCache(cache_dir, tiny_models["custom_voice"], ["config.json", "model.safetensors"], "int8",
                              "cpu", torch.float32).load()


def test_an_idle_exit_waits_for_the_cache_write_so_the_next_start_hits(tiny_models, tmp_path):
    """The writer starts after a second of quiet; an idle timeout shorter than that (or than
    the write) used to end the daemon first - no cache, and every start quantized again."""
    from qwen3ttsd.client import Client
    from tests.helpers import daemon_env, start_daemon

    state, rt = tmp_path / "state", tmp_path / "rt"
    p = start_daemon(rt, daemon_env(tiny_models["custom_voice"], state, idle_timeout=0.3, prewarm=0))
    try:
        with Client(str(rt / "tts.sock"), timeout=120) as c:
            assert any(ev.kind == "chunk" for ev in c.synthesize(text="Hello.", voice="vivian", language="english",
                                                                max_frames=3, format="pcm16"))
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()
    assert len(_files(state / "weight-cache")) == 1 and not list((state / "weight-cache").glob(".*"))
    c = wc.WeightCache(state / "weight-cache", tiny_models["custom_voice"], ["config.json", "model.safetensors"],
                       "int8", "cpu", torch.float32)
    assert c.load()
