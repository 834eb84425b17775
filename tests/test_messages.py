"""Typed wire messages: docs/protocol.md is the contract, messages.py declares it once -
the two must agree; and every layer's validation rules (NaN, whole numbers, types) hold."""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from qwen3ttsd import messages as M
from qwen3ttsd.errors import TTSError

PROTOCOL = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
LITERAL_NONE = {"-", "random", "routed", "model's", "scaled to text"}   # decided by the daemon


def synthesize_table() -> dict[str, tuple[str, str, str]]:
    """name -> (type, default, notes) from the synthesize parameters table."""
    start = PROTOCOL.index("| name | type | default | notes |")
    rows = {}
    for line in PROTOCOL[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        names, types, default, notes = (c.strip() for c in line.strip("|").split(" | "))
        names_list = re.findall(r"`([a-z_]+)`", names)
        types_list = [t.strip() for t in types.split(",")]
        for i, n in enumerate(names_list):
            rows[n] = (types_list[min(i, len(types_list) - 1)], default.strip("`"), notes)
    return rows


TABLE = synthesize_table()


def _field(name: str):
    target = M.Synthesize.wire_names()[name]
    return next(f for f in fields(M.Synthesize) if f.name == target)


def test_every_documented_parameter_is_declared_and_vice_versa():
    assert set(TABLE) == set(M.Synthesize.wire_names())


@pytest.mark.parametrize("name", sorted(TABLE))
def test_documented_type_default_and_bounds_match(name):
    doc_type, doc_default, notes = TABLE[name]
    f = _field(name)
    kind = f.metadata["kind"]
    assert kind.doc == doc_type, name
    if f.metadata["doc_default"] is not None:
        assert doc_default == f.metadata["doc_default"]
    elif doc_default in LITERAL_NONE:
        assert f.default is None or f.default is MISSING, name
    else:
        assert str(f.default).lower() == doc_default.lower(), name
    if isinstance(kind, M.Num):
        lo, hi = re.search(r"(\d[\d.]*)-(\d[\d.]*)", notes).groups()
        assert (float(lo), float(hi)) == (kind.lo, kind.hi), name
    if isinstance(kind, M.Str) and kind.choices:
        assert set(re.findall(r"`([a-z]+)`", notes)) >= set(kind.choices)
    if name == "text":
        assert f"({kind.max_len:,})" in notes
    if name == "session":
        assert f"up to {kind.max_len} characters" in notes


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 16000.5, 1e300, 10 ** 400, True, "16000"])
def test_bad_numbers_are_bad_request_naming_the_field(value):
    with pytest.raises(TTSError) as ei:
        M.Synthesize.from_wire({"text": "x", "sample_rate": value})
    assert ei.value.code == "bad_request" and ei.value.data == {"param": "sample_rate"}


def test_daemon_takes_whole_floats_json_front_ends_do_not():
    assert M.Synthesize.from_wire({"text": "x", "seed": 3.0}).seed == 3
    with pytest.raises(TTSError, match="integer"):
        M.Synthesize.from_wire({"text": "x", "seed": 3.0}, strict=True)
    with pytest.raises(TTSError, match="true or false"):
        M.Synthesize.from_wire({"text": "x", "normalize": 1}, strict=True)


def test_defaults_aliases_and_round_trip():
    m = M.Synthesize.from_wire({"text": "Hi.", "speaker": "ryan", "instructions": "calm", "speed": None})
    assert (m.voice, m.instruct, m.speed, m.sample_rate, m.format) == ("ryan", "calm", 1.0, 24000, "pcm16")
    assert M.Synthesize.from_wire(m.to_wire()) == m
    assert M.Synthesize.from_wire({"text": "x", "voice": "", "speaker": "eric"}).voice == "eric"


@pytest.mark.parametrize("params, code, param", [
    ({}, "bad_request", "text"), ({"text": "  "}, "bad_request", "text"),
    ({"text": "x" * 20_001}, "payload_too_large", "text"), ({"text": "x", "format": "wma"}, "bad_request", "format"),
    ({"text": "x", "format": "mp3", "sample_rate": 7000}, "bad_request", "sample_rate"),
    ({"text": "x", "priority": "urgent"}, "bad_request", "priority"),
    ({"text": "x", "temperature": 0.0}, "bad_request", "temperature"),
    ({"text": "x", "ref_audio": "https://example.com/a.wav"}, "bad_request", "ref_audio"),
])
def test_refusals(params, code, param):
    with pytest.raises(TTSError) as ei:
        M.Synthesize.from_wire(params)
    assert (ei.value.code, ei.value.data) == (code, {"param": param})


def test_limits_override_configured_bounds():
    assert M.Synthesize.from_wire({"text": "x" * 30_000}, limits={"text": 40_000}).text
    with pytest.raises(TTSError):
        M.AdminKeepalive.from_wire({"seconds": 100}, limits={"seconds": 60})


def test_notifications_round_trip():
    for n in (M.Progress(7, {"stage": "queued", "position": 1}), M.Chunk(7, 3, b"\x00\x01"),
              M.Start(7, 8000, "mulaw", "audio/basic", "custom_voice", 2)):
        assert type(n).from_wire(n.to_wire()) == n
    assert M.Cancel.from_wire(M.Cancel(9).to_wire()) == M.Cancel(9)
    assert M.Chunk.from_wire([1]) is None and M.Cancel.from_wire("x") is None


def test_scheduler_priorities_are_the_declared_ones():
    from qwen3ttsd.daemon.scheduler import PRIORITIES

    assert tuple(PRIORITIES) == M.PRIORITIES


def test_documented_stream_shapes_are_the_dataclasses():
    start = re.search(r'"tts.start",\s+\[7, \{([^}]*)\}', PROTOCOL).group(1)
    assert [kv.split(":")[0].strip() for kv in start.split(",")] == \
        list(M.Start(7, 24000, "pcm16", "audio/pcm").to_wire()[1])
    result = re.search(r"<- \[1, 7, nil, \{([^}]*)\}\]", PROTOCOL).group(1)
    assert [k.strip() for k in result.split(",")] == M.SynthesizeResult.wire_fields()
    chunk = re.search(r'"tts.chunk",\s+\[7, 0, \{([^}]*)\}', PROTOCOL).group(1)
    assert chunk.split(":")[0] == "audio"


# --- typed results (issue 18 item 4) ---------------------------------------------------------


def test_every_daemon_method_has_a_typed_result():
    """Read from the daemon's dispatch table as written (importing it would load numpy)."""
    service = (Path(__file__).parent.parent / "qwen3ttsd" / "daemon" / "service.py").read_text()
    owners = r"(?:self|synthesis|admin|Design\(state\)|Encoding\(state\))"
    methods = set(re.findall(r'"([a-z]+\.[a-z.]+)": ' + owners + r"\.", service))
    assert len(methods) == 18 and methods == set(M.RESULTS)
    for method, cls in M.RESULTS.items():
        assert issubclass(cls, M.Result), method
    requests = {m.method: m for m in M.REQUESTS.values()}
    assert set(requests) == set(M.RESULTS)


@pytest.mark.parametrize(("cls", "wire"), [
    (M.HelloResult, {"proto": 1, "server": "qwen3ttsd", "version": "1", "capabilities": ["stream"],
                     "max_frame": 9, "admin": False, "socket": "tts"}),
    (M.VoicesResult, {"speakers": ["ryan"], "voice_design": True,
                      "clones": [{"name": "n", "ref_text": "hi", "created": 1.5, "duration_s": 2.0, "consent": "yes",
                                  "added_by_uid": 1000}]}),
    (M.ModelsResult, [{"name": "b", "type": "base", "size": "0.6B", "loaded": True, "speakers": [],
                       "languages": ["auto"]}]),
    (M.LanguagesResult, ["auto", "english"]),
    (M.WarmupResult, {"model": "b", "was_loaded": False, "load_s": 1.5}),
    (M.VoicesRemoveResult, {"removed": "n"}),
    (M.AdminLoadResult, {"name": "b", "device": "cpu", "dtype": "float32"}),
    (M.AdminUnloadResult, {"unloaded": ["b"]}),
    (M.AdminUnloadResult, {"exiting": True}),
    (M.AdminKeepaliveResult, {"keepalive_s": 5.0, "idle_exit_in_s": 4.0}),
    (M.AdminSetResult, {"idle_timeout": 60.0, "queue_timeout": 30.0}),
    (M.AdminShutdownResult, {"stopping": True}),
    (M.AdminCacheListResult, {"models": [{"name": "b", "path": "/m/b", "bytes": 3, "loaded": False}],
                              "prompts": 1, "voices": 2}),
    (M.AdminCacheClearResult, {"cleared_prompts": 3}),
    (M.AdminCacheClearResult, {"removed": "b"}),
])
def test_results_round_trip_the_daemons_wire_shapes(cls, wire):
    r = cls.from_wire(wire)
    assert r.to_wire() == wire
    if isinstance(wire, dict):  # a newer daemon's extra keys are kept, never refused
        newer = cls.from_wire({**wire, "added_later": [1]})
        assert newer == r and newer.extra == {**r.extra, "added_later": [1]}
        assert newer.to_wire() == {**wire, "added_later": [1]}


def test_result_fields_are_typed_objects():
    v = M.VoicesResult.from_wire({"speakers": ["ryan"], "clones": [{"name": "n", "new": 1}]})
    assert v.clones[0].name == "n" and v.clones[0].extra == {"new": 1} and v.voice_design is False
    st = M.AdminStatusResult.from_wire({"state": "idle", "models": [{"name": "b", "type": "base"}]})
    assert st.models[0].type == "base" and st.loaded == {}
    assert M.AdminLoadResult.from_wire({"name": "b", "device": "cpu"}).extra == {"device": "cpu"}


@pytest.mark.parametrize("wire", [None, [1], {"no": "state"}])
def test_malformed_results_are_protocol_errors(wire):
    with pytest.raises(TTSError) as e:
        M.AdminStatusResult.from_wire(wire)
    assert e.value.code == "protocol_error"
