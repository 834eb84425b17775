"""The client library against a stand-in daemon: typed notifications and typed results."""

from __future__ import annotations

import asyncio

import pytest

from qwen3ttsd import messages as M
from qwen3ttsd.client import AsyncClient, Client
from qwen3ttsd.errors import TTSError

from .fakedaemon import FakeDaemon


@pytest.fixture()
def daemon(tmp_path):
    d = FakeDaemon(tmp_path / "tts.sock")
    yield d
    d.close()


def test_sync_synthesize_yields_typed_notifications_then_the_result(daemon):
    with Client(str(daemon.path)) as c:
        items = list(c.synthesize(M.Synthesize(text="Hi.", voice="ryan")))
    assert [type(i) for i in items] == [M.Progress, M.Start, M.Progress, M.Chunk, M.Chunk, M.Caption,
                                        M.SynthesizeResult]
    assert [i.kind for i in items] == ["progress", "start", "progress", "chunk", "chunk", "segment", "result"]
    assert items[1].sample_rate == 24000 and items[2].stage == "generating"
    assert b"".join(i.audio for i in items if isinstance(i, M.Chunk)) == b"Hi.|0;Hi.|1;"
    assert items[5].span == {"index": 0, "text": "Hi.", "start": 0.0, "end": 0.1}
    result = items[-1]
    assert result.frames == 3 and result.language == "english" and result.extra == {"future_key": "x"}


def test_typed_requests_return_typed_results(daemon):
    with Client(str(daemon.path)) as c:
        hello = c.hello()
        assert isinstance(hello, M.HelloResult) and hello.server == "fake" and hello.extra == {"new_field": True}
        models = c.request(M.Models())
        assert [m.name for m in models.models] == ["custom_voice", "base"] and models.models[1].loaded is True
        assert models.models[0].extra == {"future_key": 1}
        assert c.request(M.Languages()).languages == ["auto", "english"]
        voices = c.request(M.VoicesList())
        assert voices.speakers == ["ryan"] and voices.clones[0].duration_s == 2.5
        assert c.request(M.Warmup(voice="ryan")).model == "custom_voice"
        assert c.call("tts.models") == models.to_wire()  # the untyped escape hatch: the raw answer


def test_async_client_is_typed_too(daemon):
    async def run():
        async with AsyncClient(str(daemon.path)) as c:
            items = [i async for i in c.synthesize(text="Yo.")]
            voices = await c.request(M.VoicesList())
            with pytest.raises(TTSError) as e:
                await c.call("no.such")
            return items, voices, e.value

    items, voices, err = asyncio.run(run())
    assert isinstance(items[-1], M.SynthesizeResult) and isinstance(items[3], M.Chunk)
    assert voices.clones[0].name == "narrator" and err.code == "no_such_method"


def _refusing_server(path, error: TTSError):
    """A listener that answers every connection with one ``$/error`` and closes it (what
    the daemon's connection cap, a daemon that cannot start and a backing-off activator do)."""
    import socket
    import threading

    from qwen3ttsd import protocol as P
    from qwen3ttsd.sockets import refuse

    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.recv(65536)   # the request is read (or not): the answer is the same
            refuse(c, error)

    threading.Thread(target=serve, daemon=True).start()
    assert P.N_ERROR == "$/error"
    return srv


def test_a_refusal_reaches_the_caller_not_closed_the_connection(tmp_path):
    why = TTSError("unavailable", "the daemon cannot start: bad configuration: upstream cap=N (N >= 1)",
                   retryable=False)
    srv = _refusing_server(tmp_path / "r.sock", why)
    try:
        with Client(str(tmp_path / "r.sock")) as c, pytest.raises(TTSError) as e:
            list(c.synthesize(M.Synthesize(text="Hi.")))
        assert "cap=N" in e.value.message and e.value.retryable is False

        async def run():
            async with AsyncClient(str(tmp_path / "r.sock")) as c:
                return [i async for i in c.synthesize(text="Yo.")]

        with pytest.raises(TTSError) as e:
            asyncio.run(run())
        assert "cap=N" in e.value.message and e.value.code == "unavailable"
    finally:
        srv.close()
