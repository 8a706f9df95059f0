"""Router over two live replicas: balancing; a replica killed with streams in flight (its streams fail loudly, new
requests go to the other with the expected text); re-admission after restart."""

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
from pipelines.fault_trials import long_stream

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
def router_replicas(smollm2: Path) -> ReplicaSet:
    return ReplicaSet(str(smollm2), count=2, threads=1, interval_s=0.5)


@pytest.fixture(scope="module")
def router(router_replicas: ReplicaSet) -> Iterator[str]:
    replicas = router_replicas
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


PROMPTS = [f"Fact {i}: the capital of" for i in range(6)]


@pytest.fixture
def health_loop_paused(router_replicas: ReplicaSet) -> Iterator[threading.Event]:
    """While the event is set the router's health loop checks nothing, so a dead replica still looks healthy."""
    hold, original = threading.Event(), router_replicas.check

    async def paused(client: httpx.AsyncClient) -> None:
        while hold.is_set():
            await asyncio.sleep(0.05)
        await original(client)

    hold.set()
    router_replicas.check = paused  # type: ignore[method-assign]
    yield hold
    hold.clear()
    del router_replicas.check


def test_a_killed_replica_fails_its_streams_loudly_and_new_requests_over(router: str, health_loop_paused) -> None:
    client = openai.OpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0, timeout=120)
    expected = [client.completions.create(model=MODEL, prompt=p, max_tokens=8, temperature=0).choices[0].text
                for p in PROMPTS]  # fmt: skip

    async def run() -> tuple[list[str], list[str], int]:
        async with openai.AsyncOpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0, timeout=120) as c:
            started = [asyncio.Event() for _ in range(4)]
            streams = [asyncio.create_task(long_stream(c, MODEL, 120, e)) for e in started]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 120)
            in_flight = replicas_info(router)[0]["outstanding"]
            os.kill(replicas_info(router)[0]["pid"], signal.SIGKILL)
            await asyncio.sleep(0.5)  # the kill has landed; the paused health loop has not seen it
            assert replicas_info(router)[0]["healthy"], "the health loop noticed: this test would prove nothing"
            replies = await asyncio.gather(
                *(c.completions.create(model=MODEL, prompt=p, max_tokens=8, temperature=0) for p in PROMPTS)
            )
            return [r.choices[0].text for r in replies], await asyncio.gather(*streams), in_flight

    texts, streams, in_flight = asyncio.run(run())
    assert in_flight >= 1 and texts == expected
    assert sorted(streams) == ["complete"] * (4 - in_flight) + ["error"] * in_flight, streams
    assert [r["outstanding"] for r in replicas_info(router)] == [0, 0]

    health_loop_paused.clear()

    def readmitted() -> bool:
        r0 = replicas_info(router)[0]
        return r0["healthy"] and r0["restarts"] == 1

    assert wait_for(readmitted, 240), replicas_info(router)
