"""Serving past the trained context: a dense server answers context_length_exceeded, a sink-window one with an
int8 cache serves the same prompt (official `openai` client, a tiny model trained to 96 positions)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from engine.engine import EngineConfig
from engine.server.app import ServerConfig
from tests.conftest import LiveServer, make_tiny_checkpoint, start_server

pytestmark = pytest.mark.integration

PROMPT = list(range(100, 400))  # 300 tokens, about three times what the model was trained on


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-96"), "llama", max_position_embeddings=96)


def serve(path: Path, **engine: object) -> Iterator[LiveServer]:
    server = start_server(ServerConfig([str(path)], EngineConfig(num_blocks=256, **engine)))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dense(tiny: Path) -> Iterator[LiveServer]:
    yield from serve(tiny)


@pytest.fixture(scope="module")
def sparse(tiny: Path) -> Iterator[LiveServer]:
    yield from serve(tiny, kv_cache_dtype="int8", attention="sink-window", window=32, sinks=4, max_model_len=1024,
                     max_num_batched_tokens=64)  # fmt: skip


def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_dense_refuses_a_prompt_past_the_trained_context(dense: LiveServer, tiny: Path) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(dense).completions.create(model=tiny.name, prompt=PROMPT, max_tokens=4)
    assert caught.value.body["code"] == "context_length_exceeded"


@pytest.mark.parametrize("stream", [False, True])
def test_sink_window_serves_it_in_bounded_kv(sparse: LiveServer, tiny: Path, stream: bool) -> None:
    result = client(sparse).completions.create(
        model=tiny.name, prompt=PROMPT, max_tokens=8, temperature=0, stream=stream
    )
    if stream:
        chunks = list(result)
        text, usage = "".join(c.choices[0].text for c in chunks if c.choices), None
    else:
        text, usage = result.choices[0].text, result.usage
    assert text
    assert usage is None or (usage.prompt_tokens, usage.completion_tokens) == (300, 8)
    blocks = sparse.engine(tiny.name).block_manager
    assert blocks.peak_used <= 1 + (32 + 64) // 16 + 1 < len(PROMPT) // 16  # sinks, window, one step: not it all


def test_sink_window_still_bounds_the_length(sparse: LiveServer, tiny: Path) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(sparse).completions.create(model=tiny.name, prompt=[5] * 1100, max_tokens=4)
    assert caught.value.body["code"] == "context_length_exceeded"
