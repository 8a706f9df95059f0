"""OpenAI API coverage (criteria Part 5) measured against a live server, plus error-handling probes (Part 4.2).

An endpoint counts as covered when it answers a valid request as OpenAI would; a parameter counts as supported
when a valid value is accepted and an invalid one is rejected with a 400 naming it (so it is really read, not
silently ignored like an unknown field).
"""

from __future__ import annotations

from typing import Any

import httpx

# Part 5.1, in the document's order.
ENDPOINTS = [
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/fine-tunes",
    "/v1/fine-tunes/:id",
    "streaming",
    "error handling",
]
OPTIONAL = {"/v1/embeddings"}  # Part 5.1: "Optional (Phase 3.5)"; reported beside the coverage, not in it
# Part 5.2: parameter -> (valid value, invalid value); model and messages are checked by their own errors.
PARAMETERS: dict[str, tuple[Any, Any]] = {
    "max_tokens": (4, -1),
    "temperature": (0.5, -1.0),
    "top_p": (0.9, 1.5),
    "top_k": (5, -5),
    "stop": (["\n"], [""]),
    "frequency_penalty": (0.5, 5.0),
    "presence_penalty": (0.5, 5.0),
    "repetition_penalty": (1.1, 0.0),
}


def _chat(client: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, **extra}
    return client.post("/v1/chat/completions", json=body)


def _endpoint_ok(client: httpx.Client, model: str, name: str) -> bool:
    if name == "/v1/models":
        r = client.get("/v1/models")
        return r.status_code == 200 and any(m["id"] == model for m in r.json()["data"])
    if name == "/v1/chat/completions":
        r = _chat(client, model)
        return r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
    if name == "/v1/completions":
        r = client.post("/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 2})
        return r.status_code == 200 and "text" in r.json()["choices"][0]
    if name == "/v1/embeddings":
        r = client.post("/v1/embeddings", json={"model": model, "input": "hi"})
        return r.status_code == 200 and len(r.json()["data"][0]["embedding"]) > 0
    if name == "streaming":
        r = client.post("/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 2, "stream": True})
        return r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    if name == "error handling":
        r = _chat(client, model, temperature=-1)
        return r.status_code == 400 and set(r.json()["error"]) >= {"message", "type", "param", "code"}
    return _fine_tunes_ok(client, model, name)


# A job whose file fails validation at once: the endpoints answer as for any job, and nothing trains while the
# serve stage measures.
PROBE_FILE = b'{"messages": [{"role": "user", "content": "a probe with no assistant turn"}]}\n'


def _fine_tunes_ok(client: httpx.Client, model: str, name: str) -> bool:
    """POST /v1/fine-tunes creates a job that GET /v1/fine-tunes lists and GET /v1/fine-tunes/:id returns."""
    upload = client.post("/v1/files", files={"file": ("probe.jsonl", PROBE_FILE)}, data={"purpose": "fine-tune"})
    if upload.status_code != 200:
        return False
    created = client.post("/v1/fine-tunes", json={"model": model, "training_file": upload.json()["id"]})
    if created.status_code != 200:
        return False
    job_id = created.json()["id"]
    if name == "/v1/fine-tunes":
        listed = client.get("/v1/fine-tunes")
        return listed.status_code == 200 and job_id in [j["id"] for j in listed.json()["data"]]
    fetched = client.get(f"/v1/fine-tunes/{job_id}")
    return fetched.status_code == 200 and fetched.json()["object"] == "fine-tune"


def _parameter_ok(client: httpx.Client, model: str, name: str) -> bool:
    valid, invalid = PARAMETERS[name]
    ok = _chat(client, model, **{name: valid}).status_code == 200
    bad = _chat(client, model, **{name: invalid})
    return ok and bad.status_code == 400 and bad.json()["error"]["param"] == name


def probe(url: str, model: str) -> dict[str, Any]:
    """Coverage percentages with the per-item results, and which error paths behaved."""
    with httpx.Client(base_url=url, timeout=120) as client:
        endpoints = {name: _endpoint_ok(client, model, name) for name in ENDPOINTS}
        params = {name: _parameter_ok(client, model, name) for name in PARAMETERS}
        params["model"] = _chat(client, "no-such-model").status_code == 404
        missing = client.post("/v1/chat/completions", json={"model": model})
        params["messages"] = missing.status_code == 400 and missing.json()["error"]["param"] == "messages"
    required = {k: v for k, v in endpoints.items() if k not in OPTIONAL}
    return {
        "api": {
            "endpoint_coverage_pct": 100.0 * sum(required.values()) / len(required),
            "parameter_support_pct": 100.0 * sum(params.values()) / len(params),
            "endpoints": {k: int(v) for k, v in required.items()},
            "optional_endpoints": {k: int(v) for k, v in endpoints.items() if k in OPTIONAL},
            "parameters": {k: int(v) for k, v in params.items()},
        },
    }
