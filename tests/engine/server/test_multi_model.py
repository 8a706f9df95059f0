"""Two models under a memory budget that holds one: load on demand, LRU unload, switch times in /metrics."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from engine.engine import EngineConfig
from engine.server.app import ServerConfig
from engine.server.models import estimate_mb
from tests.conftest import make_tiny_checkpoint, start_server

pytestmark = pytest.mark.integration
BIG = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def two_models(smollm2: Path, tmp_path_factory: pytest.TempPathFactory):
    tiny = make_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny-llama", "llama")
    engine = EngineConfig(kv_cache_bytes=32 * 2**20)
    budget = estimate_mb(str(smollm2), engine) + estimate_mb(str(tiny), engine) / 2  # room for one of them
    live = start_server(ServerConfig([str(tiny), str(smollm2)], engine, memory_budget_mb=budget))
    yield live
    live.stop()


def resident(live) -> list[str]:
    return httpx.get(f"{live.url}/health").json()["resident"]


def test_models_load_on_demand_and_the_least_recent_is_unloaded(two_models) -> None:
    client = openai.OpenAI(base_url=f"{two_models.url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny-llama", BIG]
    assert resident(two_models) == ["tiny-llama"]
    question = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model=BIG, messages=question, temperature=0)
    assert r.choices[0].message.content == "The capital of France is Paris."
    assert resident(two_models) == [BIG]
    client.completions.create(model="tiny-llama", prompt="hi", max_tokens=2)
    assert resident(two_models) == ["tiny-llama"]
    metrics = httpx.get(f"{two_models.url}/metrics").text
    assert 'tollgate_model_load_seconds_count{model="smollm2-135m-instruct"} 1.0' in metrics
    assert "tollgate_model_switch_seconds_bucket" in metrics


def test_switch_to_a_resident_model_is_fast(two_models) -> None:
    client = openai.OpenAI(base_url=f"{two_models.url}/v1", api_key="unused", max_retries=0)
    client.completions.create(model="tiny-llama", prompt="hi", max_tokens=1)
    before = httpx.get(f"{two_models.url}/metrics").text
    client.completions.create(model="tiny-llama", prompt="hi", max_tokens=1)
    after = httpx.get(f"{two_models.url}/metrics").text

    def le_half_second(text: str) -> float:
        line = next(
            x
            for x in text.splitlines()
            if x.startswith('tollgate_model_switch_seconds_bucket{le="0.5",model="tiny-llama"}')
        )
        return float(line.split()[-1])

    assert le_half_second(after) == le_half_second(before) + 1


@pytest.fixture
def room_for_both(smollm2: Path, tmp_path: Path):
    """A budget both models fit in, only the first loaded at start: the second loads while the first serves."""
    tiny = make_tiny_checkpoint(tmp_path / "tiny-llama", "llama")
    engine = EngineConfig(kv_cache_bytes=32 * 2**20)
    budget = (estimate_mb(str(smollm2), engine) + estimate_mb(str(tiny), engine)) * 1.2
    live = start_server(ServerConfig([str(tiny), str(smollm2)], engine, memory_budget_mb=budget))
    yield live
    live.stop()


def test_a_load_does_not_stall_another_models_stream(room_for_both) -> None:
    """Stream from the resident tiny model, again and again, while the big one loads in the background."""
    url = room_for_both.url
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    client.completions.create(model="tiny-llama", prompt="warm", max_tokens=1)
    assert resident(room_for_both) == ["tiny-llama"]
    arrivals: list[float] = []
    load: dict[str, float] = {}

    def load_big() -> None:
        load["start"] = time.monotonic()
        reply = httpx.post(f"{url}/v1/completions", json={"model": BIG, "prompt": "x", "max_tokens": 1}, timeout=120)
        load["status"], load["end"] = reply.status_code, time.monotonic()

    loader = threading.Thread(target=load_big)
    while "end" not in load:
        stream = client.completions.create(
            model="tiny-llama", prompt="go", max_tokens=300, stream=True, extra_body={"ignore_eos": True}
        )
        for _chunk in stream:
            arrivals.append(time.monotonic())
            if len(arrivals) == 4:
                loader.start()
    loader.join()
    during = [t for t in arrivals if load["start"] < t < load["end"]]
    assert load["status"] == 200 and resident(room_for_both) == ["tiny-llama", BIG]
    assert len(during) >= 5, f"only {len(during)} chunks in the {load['end'] - load['start']:.2f} s the load took"
