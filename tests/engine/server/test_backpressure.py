"""Backpressure and readiness: a full queue answers 429 with Retry-After; loading answers 503."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient

from engine.engine import EngineConfig
from engine.server.app import ServerConfig, build_app
from tests.conftest import start_server

MODEL = "smollm2-135m-instruct"


@pytest.mark.integration
def test_full_queue_gets_429_and_nothing_else_fails(smollm2: Path) -> None:
    config = ServerConfig(
        models=[str(smollm2)], engine=EngineConfig(max_num_seqs=1, kv_cache_bytes=64 * 2**20), max_waiting=4
    )
    live = start_server(config)

    async def one(aclient: openai.AsyncOpenAI, i: int) -> str:
        try:
            r = await aclient.completions.create(model=MODEL, prompt=f"Item {i}:", max_tokens=16, temperature=0)
            return "ok" if r.choices[0].text else "empty"
        except openai.RateLimitError as exc:
            assert exc.response.headers["retry-after"] == "1"
            assert exc.body["code"] == "queue_full"
            return "429"

    async def run() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0) as aclient:
            return await asyncio.gather(*(one(aclient, i) for i in range(12)))

    try:
        outcomes = asyncio.run(run())
    finally:
        live.stop()
    assert set(outcomes) == {"ok", "429"}, outcomes
    assert outcomes.count("ok") >= 5  # one running + four waiting were always admitted


def test_health_is_503_until_models_are_loaded(tmp_path: Path) -> None:
    app = build_app(ServerConfig(models=[str(tmp_path / "not-loaded-yet")]))
    client = TestClient(app)  # lifespan not started: nothing is loaded
    r = client.get("/health")
    assert r.status_code == 503 and r.json()["error"]["code"] == "loading"
    chat = client.post("/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 503 and chat.headers["retry-after"] == "1"


def test_a_model_that_fails_to_load_is_reported_by_health(tmp_path: Path) -> None:
    with TestClient(build_app(ServerConfig(models=[str(tmp_path / "missing")]))) as client:
        for _ in range(100):
            r = client.get("/health")
            if r.json()["error"]["code"] == "load_failed":
                break
        assert r.status_code == 503 and "checkpoint not found" in r.json()["error"]["message"]
