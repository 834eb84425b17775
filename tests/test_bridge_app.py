"""The bridge app in-process (Starlette's test client, no daemon, no uvicorn): routing,
error shape, metrics for every endpoint, /health without a daemon."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from qwen3ttsd.bridge.app import create_app
from qwen3ttsd.config import BridgeConfig


@pytest.fixture()
def client(tmp_path):
    app = create_app(BridgeConfig(runtime_dir=str(tmp_path / "rt")))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def requests_counted(client: TestClient) -> dict[tuple[str, str], int]:
    text = client.get("/metrics").text
    return {(ep, st): int(n) for ep, st, n in
            re.findall(r'qwen3tts_requests_total\{endpoint="([^"]+)",status="(\d+)"\} (\d+)', text)}


def test_every_endpoint_is_counted_get_included(client):
    assert client.get("/health").status_code == 200
    assert client.get("/v1/models").status_code == 503           # no daemon socket
    assert client.get("/v1/audio/voices/someone").status_code == 503
    assert client.post("/v1/audio/speech", json={"input": "x", "speed": 9}).status_code == 400
    assert client.get("/no/such/path").status_code == 404
    counted = requests_counted(client)
    assert counted[("/health", "200")] == 1 and counted[("/v1/models", "503")] == 1
    assert counted[("/v1/audio/voices/{name}", "503")] == 1 and counted[("/v1/audio/speech", "400")] == 1
    assert counted[("unmatched", "404")] == 1


def test_errors_have_the_openai_shape(client):
    r = client.post("/v1/audio/speech", json={"input": "x", "seed": 2.5})
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert r.json() == {"error": {"message": "seed must be an integer", "type": "invalid_request_error",
                                  "code": "bad_request", "param": "seed"}}
    r = client.post("/v1/audio/speech", json={"input": "x", "voice": "ryan"})
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert r.json()["error"]["code"] == "unavailable"


def test_health_without_a_daemon_says_so_without_connecting(client):
    d = client.get("/health").json()["daemon"]
    assert d["running"] is False and d["source"] == "cached"
