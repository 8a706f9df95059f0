"""The API key and the body cap, over HTTP with the official `openai` client (tiny model: what is tested is HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from engine.engine import EngineConfig
from engine.router.app import build_router
from engine.router.replicas import ReplicaSet
from engine.server.app import ServerConfig
from tests.conftest import LiveServer, start_server

KEY = "s3cret-key"
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def guarded(tiny_llama: Path) -> Iterator[LiveServer]:
    config = ServerConfig([str(tiny_llama)], EngineConfig(num_blocks=64), api_key=KEY, max_body_bytes=LIMIT)
    server = start_server(config)
    yield server
    server.stop()


def client(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def test_the_right_key_is_served(guarded: LiveServer) -> None:
    model = guarded.app.state.server.pool.names[0]
    assert client(guarded, KEY).completions.create(model=model, prompt="hi", max_tokens=2).usage.completion_tokens == 2


@pytest.mark.parametrize("key", ["wrong", KEY[:-1], KEY + "x", ""])
def test_a_wrong_or_missing_key_is_a_401_in_openai_shape(guarded: LiveServer, key: str) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        client(guarded, key or "-").models.list()
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
    bare = httpx.get(f"{guarded.url}/v1/models")
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"


def test_health_and_metrics_stay_open_for_probes(guarded: LiveServer) -> None:
    assert httpx.get(f"{guarded.url}/health").status_code == 200
    assert httpx.get(f"{guarded.url}/metrics").status_code == 200


def test_a_body_over_the_cap_is_a_413_whether_declared_or_chunked(guarded: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
    big = b'{"model": "x", "prompt": "' + b"a" * LIMIT + b'"}'
    declared = httpx.post(f"{guarded.url}/v1/completions", content=big, headers=auth)
    chunked = httpx.post(f"{guarded.url}/v1/completions", content=iter([big[:1000], big[1000:]]), headers=auth)
    for reply in (declared, chunked):
        assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"
    assert httpx.get(f"{guarded.url}/health").status_code == 200


def test_the_routers_admin_and_api_ask_for_the_key(tmp_path: Path) -> None:
    app = build_router(ReplicaSet(str(tmp_path), count=0), api_key=KEY)
    http = TestClient(app)  # no `with`: the lifespan (which would start replicas) does not run
    assert http.get("/admin/replicas").status_code == 401
    assert http.post("/v1/completions", json={}).status_code == 401
    assert http.get("/admin/replicas", headers={"Authorization": f"Bearer {KEY}"}).json() == []
    assert http.get("/health").status_code == 503  # open, and honest: no replica
