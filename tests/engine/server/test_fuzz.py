"""Property-based fuzzing of every POST endpoint: whatever the body, never a 5xx, errors in OpenAI's shape naming a
field of the request, the server healthy afterwards and every KV block free. Hypothesis, derandomised so CI is
repeatable; 3 endpoints x 200 examples = 600 requests per `make test`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.engine import EngineConfig
from engine.server.app import ServerConfig
from tests.conftest import LiveServer, start_server

EXAMPLES = 200
FIELDS = {
    "/v1/completions": {"prompt", "max_tokens", "logprobs", "echo"},
    "/v1/chat/completions": {"messages", "max_completion_tokens", "max_tokens", "logprobs", "top_logprobs"},
    "/v1/embeddings": {"input", "encoding_format"},
}
SHARED = {
    "model",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "n",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "logit_bias",
    "ignore_eos",
    "stream",
    "stream_options",
    "user",
}

junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
token_ids = st.lists(st.integers(min_value=-5, max_value=60_000), max_size=12)
plausible: dict[str, st.SearchStrategy[Any]] = {
    "prompt": st.text(max_size=40)
    | token_ids
    | st.lists(st.text(max_size=10), max_size=3)
    | st.lists(token_ids, max_size=2),
    "input": st.text(max_size=40) | token_ids | st.lists(st.text(max_size=10), max_size=3),
    "messages": st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "assistant", "system", "robot"]),
                "content": st.text(max_size=30) | st.none(),
            }
        ),
        max_size=3,
    ),
    "max_tokens": st.integers(min_value=-2, max_value=12) | st.integers(),
    "max_completion_tokens": st.integers(min_value=-2, max_value=12),
    "n": st.integers(min_value=-1, max_value=4) | st.integers(),
    "temperature": st.floats(min_value=-1, max_value=3),
    "top_p": st.floats(min_value=-0.5, max_value=1.5),
    "logprobs": st.integers(min_value=-1, max_value=25) | st.booleans(),
    "top_logprobs": st.integers(min_value=-1, max_value=25),
    "logit_bias": st.dictionaries(st.text(max_size=6) | st.integers().map(str), st.floats(-200, 200), max_size=3),
    "stop": st.text(max_size=4) | st.lists(st.text(max_size=4), max_size=5),
    "stream": st.booleans(),
    "echo": st.booleans(),
    "encoding_format": st.sampled_from(["float", "base64", "bits"]),
}


@st.composite
def bodies(draw: st.DrawFn, path: str) -> bytes:
    """Mostly well-typed bodies with some wrong fields, sometimes pure junk or not JSON at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=40))
    names = sorted(FIELDS[path] | SHARED)
    body = {"model": draw(st.just(MODEL) | st.text(max_size=8))}
    for name in draw(st.lists(st.sampled_from(names), max_size=5, unique=True)):
        body[name] = draw(plausible[name] | junk) if name in plausible else draw(junk)
    return json.dumps(body).encode()


MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def fuzzed(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    model = tmp_path_factory.mktemp("fuzz") / MODEL
    model.symlink_to(tiny_llama, target_is_directory=True)
    server = start_server(ServerConfig([str(model)], EngineConfig(num_blocks=64, max_num_seqs=8)))
    yield server
    server.stop()


def check(server: LiveServer, path: str, body: bytes) -> None:
    reply = httpx.post(f"{server.url}{path}", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert reply.status_code < 500, reply.text
    if reply.status_code >= 400:
        error = reply.json()["error"]
        assert {"message", "type", "param", "code"} <= error.keys() and error["message"]
        assert error["param"] is None or error["param"].split(".")[0] in FIELDS[path] | SHARED | {"body"}, error
    elif reply.headers["content-type"].startswith("text/event-stream"):
        assert '"server_error"' not in reply.text


@pytest.mark.parametrize("path", sorted(FIELDS))
def test_no_body_gets_a_5xx_or_a_malformed_error(fuzzed: LiveServer, path: str) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=bodies(path))
    def one(body: bytes) -> None:
        check(fuzzed, path, body)

    one()
    assert httpx.get(f"{fuzzed.url}/health").status_code == 200
    engine = fuzzed.app.state.server.engines[MODEL]
    deadline = time.monotonic() + 10  # a stream the client dropped is reaped by the engine's next step
    while engine.kv_usage > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine.kv_usage == 0
