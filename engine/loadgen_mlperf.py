"""MLPerf LoadGen as the judge of served latency, over the OpenAI API.

    python -m engine.loadgen mlperf --url http://127.0.0.1:8000 --model smollm2-135m-instruct \\
        --scenario server --qps 0.5 --min-duration-s 60 --min-queries 64 --out-dir reports/mlperf

LoadGen (`mlcommons-loadgen`, the harness MLPerf Inference submissions run under) schedules the queries: Poisson
arrivals at --qps in the Server scenario, everything at once in Offline. Each query is one of engine.loadgen's
streamed requests (random token-id prompts of --prompt-len, `ignore_eos` to --max-tokens), and reports its first
token and its completion back with their token counts (`use_token_latencies`), so LoadGen measures TTFT and TPOT
itself. It decides VALID or INVALID (minimum duration, minimum query count, the TTFT/TPOT constraints at its
latency percentile, early stopping) and writes its own logs into --out-dir; the result here is read back from
`mlperf_log_detail.txt` (one JSON record per `:::MLLOG` line). The latency constraints default to MLPerf's
Llama-2 Server values: TTFT 2000 ms, TPOT 200 ms.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import mlperf_loadgen as lg

from engine.loadgen import RequestResult, make_prompts, one_request
from engine.report_json import emit_json

NS_PER_MS = 1e6
LOADGEN_PERCENTILES = (50, 90, 95, 99)  # of the ones LoadGen logs: 50, 90, 95, 97, 99, 99.9
SCENARIOS = {"server": lg.TestScenario.Server, "offline": lg.TestScenario.Offline}


class OpenAISut:
    """LoadGen's system under test: each issued query becomes a streamed completion on an asyncio loop thread."""

    def __init__(self, args: argparse.Namespace, prompts: list[list[int]]) -> None:
        self.args, self.prompts = args, prompts
        self.results: list[RequestResult] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.client: httpx.AsyncClient | None = None
        self.slots: asyncio.Semaphore | None = None  # the SUT's own queue (Offline): at most this many in flight

    def __enter__(self) -> OpenAISut:
        self.thread.start()
        self.client = self._wait(self._client())
        return self

    async def _client(self) -> httpx.AsyncClient:
        if self.args.max_in_flight:
            self.slots = asyncio.Semaphore(self.args.max_in_flight)
        limits = httpx.Limits(max_connections=max(self.args.max_in_flight, 256))
        return httpx.AsyncClient(timeout=httpx.Timeout(self.args.timeout), limits=limits)

    def _wait(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self._wait(self.client.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def issue(self, samples: list[Any]) -> None:
        """LoadGen's IssueQuery: start each query and return at once (LoadGen's own thread must not block)."""
        for sample in samples:
            asyncio.run_coroutine_threadsafe(self._query(sample.id, sample.index), self.loop)

    async def _query(self, query_id: int, index: int) -> None:
        if self.client is None:
            raise RuntimeError("OpenAISut used outside its `with` block")
        first = array.array("B", b"\0")  # LoadGen copies the response bytes; a token counts, its content does not

        def first_token() -> None:
            lg.FirstTokenComplete([lg.QuerySampleResponse(query_id, *first.buffer_info())])

        if self.slots is None:
            result = await one_request(self.client, self.args, self.prompts[index], first_token)
        else:
            async with self.slots:
                result = await one_request(self.client, self.args, self.prompts[index], first_token)
        self.results.append(result)
        tokens = result.output_tokens if result.status == 200 else 0
        if result.ttft_s is None:  # failed before any token: LoadGen still needs the first-token mark
            first_token()
        body = array.array("B", b"\0" * max(tokens, 1))
        lg.QuerySamplesComplete([lg.QuerySampleResponse(query_id, *body.buffer_info(), tokens)])

    def flush(self) -> None:
        """LoadGen's FlushQueries: nothing is batched here."""


def settings(args: argparse.Namespace) -> lg.TestSettings:
    """LoadGen's test settings from the command line (performance mode, token latencies on)."""
    s = lg.TestSettings()
    s.scenario = SCENARIOS[args.scenario]
    s.mode = lg.TestMode.PerformanceOnly
    s.use_token_latencies = True
    s.ttft_latency = int(args.ttft_ms * NS_PER_MS)
    s.tpot_latency = int(args.tpot_ms * NS_PER_MS)
    s.server_target_latency_percentile = args.latency_percentile / 100
    s.server_target_qps = args.qps
    s.offline_expected_qps = args.qps
    s.min_duration_ms = int(args.min_duration_s * 1000)
    s.min_query_count = args.min_queries
    if args.max_duration_s:
        s.max_duration_ms = int(args.max_duration_s * 1000)
    return s


def read_detail_log(path: Path) -> dict[str, Any]:
    """Every `:::MLLOG {json}` record of LoadGen's detail log as key -> value (errors collected in a list)."""
    records: dict[str, Any] = {"errors": []}
    for line in path.read_text().splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        entry = json.loads(line[len(":::MLLOG ") :])
        if entry.get("metadata", {}).get("is_error"):
            records["errors"].append(entry["value"])
        else:
            records[entry["key"]] = entry["value"]
    return records


def _ms(records: dict[str, Any], key: str) -> float | None:
    value = records.get(key)
    return None if value is None else float(value) / NS_PER_MS


def _reasons(records: dict[str, Any], failed: int, total: int) -> list[str]:
    """Why a run is not VALID, in LoadGen's words where it has them."""
    checks = {
        "result_min_duration_met": "minimum duration not met",
        "result_min_queries_met": "minimum query count not met",
        "result_perf_constraints_met": "latency constraints not met at the target percentile",
    }
    reasons = [why for key, why in checks.items() if records.get(key) is False]
    if records.get("result_invalid_reason"):
        reasons.append(f"LoadGen: {records['result_invalid_reason'].strip()}")
    if records.get("early_stopping_met") is False:
        for kind in ("ttft", "tpot"):
            text = " ".join(str(records.get(f"early_stopping_{kind}_result", "")).split())
            if "unsuccessful" in text:
                reasons.append(f"{kind.upper()} early stopping: {text.replace('* ', '')}")
    if failed:
        reasons.append(f"{failed} of {total} requests failed")
    return reasons


def _percentiles(records: dict[str, Any], kind: str, n: int) -> dict[str, float | int | None]:
    """LoadGen's percentiles of TTFT (`first_token`) or TPOT (`time_per_output_token`), in ms, with n."""
    suffix = "_latency_ns" if kind == "first_token" else "_ns"
    out: dict[str, float | int | None] = {
        f"p{q:g}": _ms(records, f"result_{kind}_{q:.2f}_percentile{suffix}") for q in LOADGEN_PERCENTILES
    }
    return {**out, "n": n}


def summarize(records: dict[str, Any], results: list[RequestResult], args: argparse.Namespace) -> dict[str, Any]:
    """LoadGen's verdict and numbers (ms) for the requests it scheduled."""
    failed = sum(r.status != 200 for r in results)
    done = len(results) - failed
    return {
        "scenario": args.scenario,
        "valid": records.get("result_validity") == "VALID" and not failed,
        "loadgen_result": records.get("result_validity"),
        "reasons": _reasons(records, failed, len(results)),
        "target_qps": args.qps,
        "completed_qps": records.get("result_completed_samples_per_sec", records.get("result_samples_per_second")),
        "completed_tok_s": records.get("result_completed_tokens_per_second", records.get("result_tokens_per_second")),
        "queries": len(results),
        "failed": failed,
        "overlatency_queries": records.get("result_overlatency_query_count"),
        "latency_percentile": args.latency_percentile,
        "ttft_limit_ms": args.ttft_ms,
        "tpot_limit_ms": args.tpot_ms,
        "ttft_ms": _percentiles(records, "first_token", done),
        "tpot_ms": _percentiles(records, "time_per_output_token", done),
        "loadgen_errors": records["errors"][:5],
        "loadgen_version": records.get("loadgen_version"),
    }


def run_mlperf(args: argparse.Namespace) -> dict[str, Any]:
    """One LoadGen test against the server; its logs go to args.out_dir, its summary is returned."""
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prompts = make_prompts(args.samples, args.prompt_len, args.seed)
    log = lg.LogSettings()
    log.log_output.outdir = str(out)
    log.log_output.copy_summary_to_stdout = False
    with OpenAISut(args, prompts) as sut:
        handle = lg.ConstructSUT(sut.issue, sut.flush)
        qsl = lg.ConstructQSL(len(prompts), len(prompts), lambda _: None, lambda _: None)
        try:
            lg.StartTestWithLogSettings(handle, qsl, settings(args), log)
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(handle)
        results = list(sut.results)
    return summarize(read_detail_log(out / "mlperf_log_detail.txt"), results, args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `mlperf` subcommand's options."""
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="server")
    p.add_argument("--qps", type=float, default=0.5, help="Server: target queries/s; Offline: expected queries/s")
    p.add_argument("--min-duration-s", type=float, default=60)
    p.add_argument("--max-duration-s", type=float, default=0, help="0: no cap")
    p.add_argument("--min-queries", type=int, default=64)
    p.add_argument("--ttft-ms", type=float, default=2000, help="Server latency constraint on time to first token")
    p.add_argument("--tpot-ms", type=float, default=200, help="Server latency constraint on time per output token")
    p.add_argument(
        "--latency-percentile", type=float, default=99, help="the percentile the constraints hold at (MLPerf: 99)"
    )
    p.add_argument(
        "--max-in-flight", type=int, default=0, help="queue in the SUT beyond this many requests (0: none; Offline)"
    )
    p.add_argument("--samples", type=int, default=64, help="distinct prompts LoadGen draws from")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--timeout", type=float, default=600, help="per-request timeout, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=Path("reports/mlperf"), help="LoadGen's logs")
    p.add_argument("--out", type=Path, help="write the JSON summary here (it is printed too)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The `mlperf` subcommand's options, checked."""
    p = argparse.ArgumentParser(
        prog="python -m engine.loadgen mlperf",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    args = p.parse_args(argv)
    if args.qps <= 0 or args.min_queries < 1 or args.samples < 1 or args.max_tokens < 2:
        p.error("--qps must be > 0, --min-queries and --samples >= 1, --max-tokens >= 2 (TPOT needs two tokens)")
    return args


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.loadgen mlperf`: exit 0 when LoadGen's result is VALID, 1 when INVALID."""
    args = parse_args(argv)
    summary = run_mlperf(args)
    emit_json(summary, args.out)
    return 0 if summary["valid"] else 1
