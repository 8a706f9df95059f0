"""Router over two live replicas: balancing, a replica killed mid-load, re-admission after restart."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from engine.router.app import build_router
from engine.router.replicas import ReplicaSet, free_port

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def replicas_info(url: str) -> list[dict]:
    return httpx.get(f"{url}/admin/replicas").json()


@pytest.fixture(scope="module")
def router(smollm2: Path) -> Iterator[str]:
    replicas = ReplicaSet(str(smollm2), count=2, threads=1, interval_s=0.5)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_router(replicas, max_outstanding=64), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def all_healthy() -> bool:
        try:
            return all(r["healthy"] for r in replicas_info(url))
        except httpx.HTTPError:
            return False

    assert wait_for(all_healthy, 240), "replicas did not become healthy"
    yield url
    server.should_exit = True
    thread.join(timeout=60)


def test_admin_lists_replicas_and_requests_are_served(router: str) -> None:
    replicas = replicas_info(router)
    assert [r["id"] for r in replicas] == [0, 1]
    assert set(replicas[0]) >= {"id", "url", "pid", "healthy", "outstanding"}
    client = openai.OpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0)
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0
    )
    assert r.choices[0].message.content == "The capital of France is Paris."


def test_killing_a_replica_mid_load_loses_nothing_silently(router: str) -> None:
    async def one(aclient: openai.AsyncOpenAI, i: int) -> str:
        try:
            stream = await aclient.completions.create(
                model=MODEL, prompt=f"Story {i}:", max_tokens=24, temperature=0, stream=True
            )
            text = "".join([c.choices[0].text async for c in stream if c.choices])
            return "ok" if text else "empty"
        except openai.APIError as exc:  # a clean, OpenAI-shaped error is acceptable; a hang or garbage is not
            return f"error:{type(exc).__name__}"

    async def run() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0, timeout=120) as c:
            tasks = [asyncio.create_task(one(c, i)) for i in range(12)]
            await asyncio.sleep(1.5)
            os.kill(replicas_info(router)[0]["pid"], signal.SIGKILL)
            return await asyncio.gather(*tasks)

    outcomes = asyncio.run(run())
    assert len(outcomes) == 12 and "empty" not in outcomes
    assert outcomes.count("ok") >= 6, outcomes

    def readmitted() -> bool:
        r0 = replicas_info(router)[0]
        return r0["healthy"] and r0["restarts"] == 1

    assert wait_for(readmitted, 240), replicas_info(router)
