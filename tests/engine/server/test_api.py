"""The OpenAI API through the official `openai` client against a live server with SmolLM2-135M."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)


def test_models_and_health(live, client) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(f"{live.url}/health").json()["status"] == "ok"


def test_chat_greedy_answer_and_usage(client) -> None:
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=32)
    assert r.choices[0].message.content == "The capital of France is Paris."
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 10 and r.usage.completion_tokens == 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion_with_stop_sequence(client) -> None:
    r = client.completions.create(
        model=MODEL, prompt="One, two, three, four,", max_tokens=20, temperature=0, stop=[" six"]
    )
    assert r.choices[0].finish_reason == "stop" and " six" not in r.choices[0].text
    assert r.usage.completion_tokens >= 1


@pytest.mark.parametrize("endpoint", ["chat", "completion"])
def test_stream_reassembles_to_the_non_streamed_text(client, endpoint: str) -> None:
    if endpoint == "chat":
        kw = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Name three fruits."}],
            "temperature": 0,
            "max_tokens": 40,
        }
        whole = client.chat.completions.create(**kw).choices[0].message.content
        chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        kw = {"model": MODEL, "prompt": "The history of Rome", "temperature": 0, "max_tokens": 40}
        whole = client.completions.create(**kw).choices[0].text
        chunks = list(client.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole and len(text) > 10
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_n_logprobs_and_seed(client) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=QUESTION, n=2, temperature=1.0, seed=11, max_tokens=8, logprobs=True, top_logprobs=2
    )
    assert [c.index for c in r.choices] == [0, 1]
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens // 2 or len(content) > 0
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    again = client.chat.completions.create(
        model=MODEL, messages=QUESTION, n=2, temperature=1.0, seed=11, max_tokens=8, logprobs=True, top_logprobs=2
    )
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]
    legacy = client.completions.create(model=MODEL, prompt="Hello", max_tokens=3, temperature=0, logprobs=2)
    assert len(legacy.choices[0].logprobs.tokens) == 3 and len(legacy.choices[0].logprobs.top_logprobs[0]) == 2


@pytest.mark.parametrize(
    ("kwargs", "status", "param"),
    [
        ({"temperature": -1}, 400, "temperature"),
        ({"top_p": 2}, 400, "top_p"),
        ({"model": "no-such-model"}, 404, "model"),
        ({"messages": [{"role": "user", "content": "hi " * 9000}]}, 400, "messages"),
    ],
)
def test_errors_have_openai_shape(client, kwargs: dict, status: int, param: str) -> None:
    args = {"model": MODEL, "messages": QUESTION, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(**args)
    assert err.value.status_code == status
    body = err.value.body
    assert body["param"] == param and body["message"] and body["type"]


def test_malformed_bodies_get_400_and_the_server_lives(live) -> None:
    url = f"{live.url}/v1/chat/completions"
    assert httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    missing = httpx.post(url, json={"model": MODEL})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"
    extra = httpx.post(url, json={"model": MODEL, "messages": QUESTION, "max_tokens": 2, "frobnicate": True})
    assert extra.status_code == 200
    assert httpx.get(f"{live.url}/health").status_code == 200


def test_32_concurrent_streams_all_complete_correctly(live, client) -> None:
    prompts = [f"Count from {i} to {i + 5}:" for i in range(4)]
    expected = {
        p: client.completions.create(model=MODEL, prompt=p, max_tokens=12, temperature=0).choices[0].text
        for p in prompts
    }

    async def one(aclient: openai.AsyncOpenAI, prompt: str) -> tuple[str, str]:
        stream = await aclient.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0, stream=True)
        return prompt, "".join([c.choices[0].text async for c in stream if c.choices])

    async def run() -> list[tuple[str, str]]:
        async with openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0) as aclient:
            return await asyncio.gather(*(one(aclient, prompts[i % 4]) for i in range(32)))

    results = asyncio.run(run())
    assert len(results) == 32
    assert all(text == expected[prompt] for prompt, text in results)


def test_client_disconnect_frees_blocks(live) -> None:
    engine = live.engine(MODEL)
    body = {"model": MODEL, "prompt": "Tell me a long story.", "max_tokens": 400, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{live.url}/v1/completions", json=body, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 6:
                break
        assert engine.block_manager.num_free_blocks < engine.block_manager.num_blocks
    deadline = time.monotonic() + 20
    while engine.block_manager.num_free_blocks < engine.block_manager.num_blocks and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    assert not engine.has_unfinished_requests()


def test_embeddings(client) -> None:
    r = client.embeddings.create(model=MODEL, input=["hello world", "bonjour"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 576
    assert r.data[0].embedding != r.data[1].embedding and r.usage.prompt_tokens > 0


def test_metrics_exposes_latency_histograms(live, client) -> None:
    client.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    text = httpx.get(f"{live.url}/metrics").text
    for name in (
        "tollgate_time_to_first_token_seconds_bucket",
        "tollgate_inter_token_latency_seconds_bucket",
        "tollgate_e2e_request_latency_seconds_count",
        "tollgate_requests_running",
        "tollgate_requests_waiting",
        "tollgate_kv_cache_usage_ratio",
        "tollgate_prompt_tokens_total",
        "tollgate_generation_tokens_total",
    ):
        assert name in text, name
