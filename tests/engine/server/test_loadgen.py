"""The load generator against a live server: closed and open loop, percentiles with n, goodput."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from engine.loadgen import main, parse_args, run_load, summarize

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"


def test_closed_loop_measures_every_request(live, tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    args = ["--url", live.url, "--model", MODEL, "--requests", "8", "--concurrency", "4", "--prompt-len", "32"]
    assert main([*args, "--max-tokens", "8", "--warmup", "1", "--slo-ttft-ms", "1e9", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["completed"] == 8 and r["errors"] == {}
    assert r["ttft_ms"]["n"] == 8 and r["tpot_ms"]["n"] == 8 and r["itl_ms"]["n"] >= 8 * 6
    assert r["output_tok_s"] > 0 and r["goodput_rps"] == pytest.approx(r["request_throughput_rps"])
    assert r["ttft_ms"]["p50"] <= r["ttft_ms"]["p95"] <= r["ttft_ms"]["p99"]


def test_open_loop_poisson_and_errors_by_status(live, tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    args = ["--url", live.url, "--model", "missing-model", "--requests", "3", "--rate", "20", "--poisson"]
    assert main([*args, "--max-tokens", "2", "--warmup", "0", "--out", str(out)]) == 1
    assert json.loads(out.read_text())["errors"] == {"404": 3}


class _ClosesReusedConnections:
    """An SSE server that answers the first request of each connection and closes on the second, unanswered:
    what llama-server's keep-alive limit does to a pooled client connection."""

    def __init__(self) -> None:
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        for served in range(2):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")).split(b":")[1])
            await reader.readexactly(length)
            if served:
                break
            events = [
                {"choices": [{"text": "a"}]},
                {"choices": [{"text": "b"}]},
                {"choices": [], "usage": {"completion_tokens": 2}},
            ]
            body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
            writer.write(f"content-length: {len(body)}\r\n\r\n{body}".encode())
            await writer.drain()
        writer.close()


def test_a_stale_keep_alive_connection_is_retried_once_and_counted() -> None:
    server = _ClosesReusedConnections()

    async def run() -> dict:
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        args = parse_args(["--url", url, "--model", "m", "--requests", "4", "--concurrency", "1",
                           "--prompt-len", "4", "--max-tokens", "2", "--warmup", "0", "--timeout", "10"])  # fmt: skip
        async with listener:
            results, wall = await run_load(args)
        return summarize(results, wall, args)

    out = asyncio.run(run())
    assert out["completed"] == 4 and out["errors"] == {}
    assert out["stale_connection_retries"] == 3 and server.connections == 4


def test_a_stream_that_ends_with_an_error_event_is_an_error_not_a_completion() -> None:
    import argparse

    import httpx

    from engine.loadgen import one_request

    events = [{"choices": [{"text": "a"}]}, {"error": {"message": "replica went away", "type": "server_error"}}]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text=body))
    args = argparse.Namespace(url="http://router", model=MODEL, max_tokens=8, timeout=5, slo_ttft_ms=None,
                              slo_tpot_ms=None)  # fmt: skip

    async def once():
        async with httpx.AsyncClient(transport=transport) as client:
            return await one_request(client, args, [1, 2, 3])

    result = asyncio.run(once())
    assert result.status == 200 and result.error == "replica went away" and result.e2e_s is None
    summary = summarize([result], 1.0, args)
    assert summary["completed"] == 0 and summary["errors"] == {"stream_error": 1}
