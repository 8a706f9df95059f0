"""Each Part 4.2 error injected into real processes, one trial at a time; a trial says whether the documented
behaviour happened (`handled`) and what it measured. pipelines/faults.py runs them and writes the evidence."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import torch

from engine.errors import CheckpointError
from engine.eval import Reference, evaluate
from engine.faults import OOM_SEED
from engine.loader import load_model
from engine.quant import calibration_layers, get_strategy, quantize_model
from engine.stats import proc_status_mb
from pipelines.live_server import greedy_texts, kv_usage

PROMPTS = [f"Fact {i}: the capital of" for i in range(4)]
INVALID_BODIES = [
    b"{",  # not JSON
    b"\x80\x81",  # not even UTF-8
    b'{"model": "M", "prompt": "hi", "max_tokens": "many"}',  # wrong type
    b'{"model": "M", "prompt": "hi", "temperature": -3}',  # out of range
    b'{"model": "M", "prompt": [-1, 99999999]}',  # token ids outside the vocabulary
    b'{"model": "M", "prompt": "hi", "n": 100000}',  # can never fit
]


def invalid_input(url: str, model: str) -> list[dict[str, Any]]:
    """Malformed bodies: each a 400 in OpenAI's shape, the server healthy after each."""
    trials = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for body in INVALID_BODIES:
            reply = http.post("/v1/completions", content=body.replace(b'"M"', f'"{model}"'.encode()))
            shaped = reply.status_code == 400 and {"message", "type", "param", "code"} <= reply.json()["error"].keys()
            healthy = http.get("/health").status_code == 200
            trials.append({"handled": shaped and healthy, "status": reply.status_code})
    return trials


def model_load(scratch: Path, checkpoint: Path) -> list[dict[str, Any]]:
    """A missing, a truncated and a garbled checkpoint: each a CheckpointError that names the file."""
    cases = {"missing": scratch / "missing"}
    for case, damage in {"truncated": lambda b: b[: len(b) // 3], "garbled": lambda b: b"\x00" * 64 + b[64:]}.items():
        broken = scratch / case
        broken.mkdir(parents=True, exist_ok=True)
        for f in checkpoint.iterdir():
            if f.is_file() and f.suffix != ".safetensors":
                (broken / f.name).write_bytes(f.read_bytes())
        weights = (checkpoint / "model.safetensors").read_bytes()
        (broken / "model.safetensors").write_bytes(damage(weights))
        cases[case] = broken
    trials = []
    for case, path in cases.items():
        try:
            load_model(path)
            trials.append({"handled": False, "case": case, "message": "loaded"})
        except Exception as exc:  # anything but a CheckpointError naming the file is the fault not handled
            named = isinstance(exc, CheckpointError) and str(path) in str(exc)
            trials.append({"handled": named, "case": case, "message": f"{type(exc).__name__}: {exc}"})
    return trials


def quantization(checkpoint: Path, gptq_options: dict[str, Any], heldout: list[int]) -> list[dict[str, Any]]:
    """Empty and corrupt calibration data: every calibrated layer stays fp32, a warning says so, and the model
    still gives finite logits (the criteria's "quantization error -> fallback to FP32, log warning"). Each trial
    also measures how far the degraded model is from fp32 on held-out text (mean KL, nats/token)."""
    reference = Reference(load_model(checkpoint), heldout, len(heldout))
    trials = []
    for case, batches in {"empty": [], "out_of_vocabulary": [[1, 2, 10**9]], "negative_ids": [[-5, 3, 4]]}.items():
        model = load_model(checkpoint, cpu_kernels=False)
        layers = len(calibration_layers(model))
        with _warnings("engine.quant") as warned:
            report = quantize_model(model, get_strategy("gptq", **gptq_options), batches)
        finite = bool(torch.isfinite(model.score([1, 2, 3])).all())
        handled = len(report.fallback) == layers and bool(warned) and finite
        kl = evaluate(model, reference, heldout, len(heldout))["kl_mean"]
        trials.append(
            {
                "handled": handled,
                "case": case,
                "fallback_layers": len(report.fallback),
                "warned": len(warned),
                "kl_mean": kl,
            }
        )
    return trials


@contextmanager
def _warnings(logger: str) -> Iterator[list[str]]:
    """The warning messages `logger` emits inside the block."""
    sink: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: sink.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger(logger).addHandler(handler)
    try:
        yield sink
    finally:
        logging.getLogger(logger).removeHandler(handler)


def rate_limiting(url: str, model: str, burst: int) -> dict[str, Any]:
    """A burst beyond the queue: the overflow gets 429 with Retry-After, everything admitted completes in full."""

    async def one(client: httpx.AsyncClient) -> httpx.Response:
        body = {"model": model, "prompt": "Count:", "max_tokens": 16, "ignore_eos": True, "temperature": 0}
        return await client.post("/v1/completions", json=body)

    async def burst_of() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            return await asyncio.gather(*(one(client) for _ in range(burst)))

    replies = asyncio.run(burst_of())
    limited = [r for r in replies if r.status_code == 429]
    served = [r for r in replies if r.status_code == 200]
    full = all(r.json()["usage"]["completion_tokens"] == 16 for r in served)
    told = all(r.headers.get("retry-after") and r.json()["error"]["type"] == "rate_limit_error" for r in limited)
    handled = bool(limited) and len(limited) + len(served) == burst and full and told
    return {"handled": handled, "limited": len(limited), "served": len(served)}


async def _goodput(url: str, model: str, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` closed-loop clients for `seconds`: tokens/s of answered requests, and what the rest got.

    A client told 429 waits its Retry-After before trying again, as a well-behaved one does."""
    outcome: Counter[str] = Counter()
    tokens = 0
    deadline = time.monotonic() + seconds
    body = {"model": model, "prompt": "Count:", "max_tokens": 16, "ignore_eos": True, "temperature": 0}

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while time.monotonic() < deadline:
            try:
                reply = await http.post("/v1/completions", json=body)
            except httpx.TimeoutException:
                outcome["timeout"] += 1
                continue
            outcome[str(reply.status_code)] += 1
            if reply.status_code == 200:
                tokens += reply.json()["usage"]["completion_tokens"]
            elif reply.status_code == 429:
                await asyncio.sleep(float(reply.headers.get("retry-after", 1)))

    start = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return {"tok_s": tokens / (time.monotonic() - start), "outcomes": dict(outcome)}


def overload(url: str, model: str, capacity: int, seconds: float) -> dict[str, Any]:
    """Twice the load the server holds (`capacity` = running + waiting): it sheds with 429 instead of timing out,
    and goodput stays at >= 80% of what `capacity` clients get."""
    unloaded = asyncio.run(_goodput(url, model, capacity, seconds))
    loaded = asyncio.run(_goodput(url, model, 2 * capacity, seconds))
    ratio = loaded["tok_s"] / unloaded["tok_s"] if unloaded["tok_s"] else 0.0
    codes = set(loaded["outcomes"])
    handled = "429" in codes and codes <= {"200", "429"} and ratio >= 0.8
    return {"handled": handled, "goodput_ratio": ratio, "unloaded": unloaded, "loaded": loaded}


async def _through(url: str, model: str, requests: int, bound_s: float) -> list[tuple[str | None, float]]:
    """`requests` greedy completions, 8 at a time, each given `bound_s`: (text or None, seconds) for each."""
    limit = asyncio.Semaphore(8)

    async def one(client: httpx.AsyncClient, i: int) -> tuple[str | None, float]:
        body = {"model": model, "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 8, "temperature": 0}
        async with limit:
            start = time.monotonic()
            try:
                reply = await client.post("/v1/completions", json=body)
                text = reply.json()["choices"][0]["text"] if reply.status_code == 200 else None
            except httpx.HTTPError:
                text = None
            return text, time.monotonic() - start

    async with httpx.AsyncClient(base_url=url, timeout=bound_s) as client:
        return await asyncio.gather(*(one(client, i) for i in range(requests)))


def network_timeout(router_url: str, direct_url: str, model: str, requests: int, bound_s: float) -> dict[str, Any]:
    """Through a router whose path to one replica delays (1-5 s), resets and drops requests: every request still
    gets the expected text within `bound_s` (bounded timeouts, retries elsewhere with backoff), and the router
    stays healthy. `direct_url` is the other replica, reached with no faults, for the expected texts."""
    expected = greedy_texts(direct_url, model, PROMPTS)
    results = asyncio.run(_through(router_url, model, requests, bound_s))
    right = sum(text == expected[i % len(PROMPTS)] for i, (text, _) in enumerate(results))
    healthy = httpx.get(f"{router_url}/health", timeout=10).status_code == 200
    slowest = max(seconds for _, seconds in results)
    return {"handled": right == requests and healthy, "right": right, "requests": requests, "slowest_s": slowest}


def out_of_memory(url: str, model: str) -> dict[str, Any]:
    """On a server started with TOLLGATE_FAULT=out_of_memory: a stream whose step runs out of memory ends with an
    error event after the tokens it had, its KV blocks are freed, and the next request is served in full."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=120)
    stream = client.completions.create(model=model, prompt="Count:", max_tokens=16, seed=OOM_SEED, stream=True)
    chunks, ended = 0, "complete"
    try:
        for chunk in stream:
            chunks += bool(chunk.choices and chunk.choices[0].text)
    except openai.APIError as exc:
        ended = f"error: {exc}"
    freed = kv_usage(url) == 0.0
    after = client.completions.create(model=model, prompt="Count:", max_tokens=16, extra_body={"ignore_eos": True})
    served = after.usage.completion_tokens == 16
    handled = ended.startswith("error") and "out of memory" in ended and freed and served
    return {"handled": handled, "tokens_before_error": chunks, "ended": ended, "kv_freed": freed, "next_served": served}


def memory_limit(url: str, pid: int, model: str, headroom_mb: int, prompt_tokens: int) -> dict[str, Any]:
    """The server capped (RLIMIT_AS) at its address space now plus `headroom_mb`, then a prompt whose prefill
    needs more: that stream ends with an error event naming the allocation, KV usage returns to 0, and a short
    request is served under the same cap. The cap is lifted afterwards."""
    limit = int((proc_status_mb("VmSize", pid) + headroom_mb) * 2**20)  # VmSize: what RLIMIT_AS limits
    _, hard = resource.prlimit(pid, resource.RLIMIT_AS)
    resource.prlimit(pid, resource.RLIMIT_AS, (limit, hard))  # the soft limit binds; only it can be lifted again
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=120)
        ended = "complete"
        try:
            for _ in client.completions.create(model=model, prompt=[100 + i % 1000 for i in range(prompt_tokens)],
                                               max_tokens=2, stream=True):  # fmt: skip
                pass
        except openai.APIError as exc:
            ended = f"error: {exc}"
        freed = kv_usage(url) == 0.0
        after = client.completions.create(model=model, prompt="Count:", max_tokens=8, extra_body={"ignore_eos": True})
        served = after.usage.completion_tokens == 8
    finally:
        resource.prlimit(pid, resource.RLIMIT_AS, (hard, hard))
    hit = ended.startswith("error") and "memory" in ended.lower()
    return {"handled": hit and freed and served, "ended": ended[:300], "kv_freed": freed, "next_served": served}


async def long_stream(client: openai.AsyncOpenAI, model: str, tokens: int, started: asyncio.Event) -> str:
    """ "complete", "error" (the stream ended with an error event) or "truncated" (ended early, silently)."""
    stream = await client.completions.create(model=model, prompt="Story:", max_tokens=tokens, temperature=0,
                                             stream=True, extra_body={"ignore_eos": True})  # fmt: skip
    chunks = 0
    try:
        async for chunk in stream:
            chunks += bool(chunk.choices and chunk.choices[0].text)
            started.set()
    except openai.APIError:
        return "error"
    return "complete" if chunks >= tokens * 0.8 else "truncated"  # the detokenizer merges a few pieces


async def _node_failure(url: str, model: str, tokens: int, expected: list[str]) -> dict[str, Any]:
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=300) as client:
        started = [asyncio.Event() for _ in range(2)]
        streams = [asyncio.create_task(long_stream(client, model, tokens, e)) for e in started]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 300)
        async with httpx.AsyncClient(base_url=url) as http:
            victim = (await http.get("/admin/replicas")).json()[0]
        killed = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        replies = await asyncio.gather(
            *(client.completions.create(model=model, prompt=p, max_tokens=8, temperature=0) for p in PROMPTS)
        )
        failover_s = time.monotonic() - killed
        ends = await asyncio.gather(*streams)
    texts_ok = [r.choices[0].text for r in replies] == expected
    loud = victim["outstanding"] >= 1 and ends.count("error") == victim["outstanding"] and "truncated" not in ends
    return {"handled": texts_ok and loud, "failover_s": failover_s, "in_flight": victim["outstanding"], "ends": ends}


def node_failure(url: str, model: str, stream_tokens: int, readmit_timeout: float = 300) -> dict[str, Any]:
    """SIGKILL a replica with a stream in flight: its streams end with an error event, requests sent right after
    get the expected greedy text from the other replica (failover_s: kill to the last of them answered), and the
    router restarts and re-admits the replica (readmit_s)."""
    expected = greedy_texts(url, model, PROMPTS)
    before = httpx.get(f"{url}/admin/replicas").json()[0]["restarts"]
    trial = asyncio.run(_node_failure(url, model, stream_tokens, expected))
    start = time.monotonic()
    while time.monotonic() - start < readmit_timeout:
        replica = httpx.get(f"{url}/admin/replicas").json()[0]
        if replica["restarts"] > before and replica["healthy"]:
            return {**trial, "readmit_s": time.monotonic() - start}
        time.sleep(0.2)
    return {**trial, "handled": False, "readmit_s": None}
