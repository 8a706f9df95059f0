"""Served speed side by side: engine.server and llama.cpp's llama-server under the same load, one invocation.

    python -m pipelines serve_peer --model models/smollm2-135m-instruct --threads 2 --concurrency 1 4 8 \\
        --out reports/serve_vs_llamacpp.json

Each server runs alone on the same threads, one after the other, and gets the same engine.loadgen run per
concurrency (random token-id prompts, `ignore_eos`, streamed, warm-up requests first): output tok/s, TTFT and
TPOT percentiles. llama-server gets one slot per request in flight (`-np`, continuous batching) and the GGUF
engine.bench compares with (engine/llamacpp_peer.py). Without the llama.cpp tools its rows are skipped, and the
report says why.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from engine import llamacpp_peer
from engine.loadgen import parse_args as loadgen_args
from engine.loadgen import run_load, summarize
from engine.report_json import emit_json
from engine.stats import cpu_name
from pipelines.common import cli_args
from pipelines.live_server import running_command


def _load(url: str, model: str, concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    """engine.loadgen's closed loop at one concurrency, with its own defaults (2 warm-up requests)."""
    load = loadgen_args(
        cli_args(
            url=url,
            model=model,
            requests=args.requests,
            concurrency=concurrency,
            prompt_len=args.prompt_len,
            max_tokens=args.max_tokens,
            seed=concurrency,
        )
    )
    results, wall = asyncio.run(run_load(load))
    return summarize(results, wall, load)


def _server_command(system: str, args: argparse.Namespace) -> list[str]:
    threads = str(args.threads)
    if system == "tollgate":
        return [sys.executable, "-m", "engine.server", "--model", str(args.model), "--threads", threads,
                "--quant", args.quant, "--log-level", "warning"]  # fmt: skip
    tools = llamacpp_peer.find_tools(args.llamacpp_bin)
    gguf = llamacpp_peer.gguf_for(args.model, args.quant, tools)
    slots = max(args.concurrency)
    context = slots * (args.prompt_len + args.max_tokens + 16)
    return [str(tools / "llama-server"), "-m", str(gguf), "-t", threads, "-tb", threads, "-np", str(slots),
            "-c", str(context), "--host", "127.0.0.1", "--log-disable"]  # fmt: skip


def measure(system: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Start one system's server, run every concurrency against it, stop it."""
    cmd = _server_command(system, args)
    rows = []
    with running_command(cmd) as (url, _):
        for c in args.concurrency:
            rows.append({"system": system, "concurrency": c, **_load(url, args.model.name, c, args)})
            print(f"{system} concurrency {c}: {rows[-1]['output_tok_s']:.1f} output tok/s", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Both servers, every concurrency; JSON out; exit 1 if a request failed."""
    p = argparse.ArgumentParser(
        prog="python -m pipelines serve_peer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", type=Path, required=True, help="engine checkpoint directory")
    p.add_argument("--threads", type=int, default=2, help="threads for each server")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8], help="requests in flight")
    p.add_argument("--requests", type=int, default=32, help="measured requests per concurrency")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--quant", default="none", choices=sorted(llamacpp_peer.GGUF_TYPES), help="both sides")
    p.add_argument("--llamacpp-bin", help="llama.cpp's bin directory (default: $LLAMACPP_BIN)")
    p.add_argument("--out", type=Path, help="write the JSON here too")
    args = p.parse_args(argv)
    if not args.model.is_dir():
        p.error(f"--model {args.model}: not a checkpoint directory")
    rows, missing = measure("tollgate", args), {}
    try:
        rows += measure("llamacpp", args)
    except llamacpp_peer.PeerMissing as exc:
        missing["llamacpp"] = str(exc)
        print(f"llamacpp: peer rows skipped: {exc}", file=sys.stderr)
    report = {
        "serving": True,
        "model": str(args.model),
        "cpu": cpu_name(),
        "threads": args.threads,
        "quant": args.quant,
        "prompt_len": args.prompt_len,
        "max_tokens": args.max_tokens,
        "requests": args.requests,
        "peers_missing": missing,
        "results": rows,
    }
    emit_json(report, args.out)
    return 1 if any(r["errors"] for r in rows) else 0
