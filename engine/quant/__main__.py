"""Quantization from the command line.

    python -m engine.quant list
    python -m engine.quant quantize --model models/smollm2-135m-instruct --strategy gptq \\
        --option bits=4 --option group_size=64 --out models/smollm2-135m-instruct-gptq
    python -m engine.quant select --results metrics/calibrate.json --memory-mb 200 --max-loss-pct 10 --min-tok-s 25

A quantized checkpoint loads like any other (`LLM(path)`, `engine.server --model path`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from engine.errors import CheckpointError
from engine.loader import load_model, load_tokenizer
from engine.quant import QuantizationError, available_strategies, quantize_loaded, save_quantized
from engine.quant.calibration import DEFAULT_CALIBRATION
from engine.quant.registry import parse_option
from engine.quant.select import Limits, from_metrics, select


def _quantize(args: argparse.Namespace) -> int:
    model = load_model(args.model, cpu_kernels=False)  # fp32 layers stay plain nn.Linear for saving
    report = quantize_loaded(
        model,
        load_tokenizer(args.model),
        args.strategy,
        dict(args.option),
        args.calibration_text,
        args.calibration_tokens,
    )
    save_quantized(model, report, Path(args.model), args.out)
    print(json.dumps(report.summary(), indent=2))
    print(f"wrote {args.out}" + (f" ({len(report.fallback)} layers stayed fp32)" if report.fallback else ""))
    return 0


def _select(args: argparse.Namespace) -> int:
    try:
        candidates = from_metrics(json.loads(args.results.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: --results {args.results}: {exc}", file=sys.stderr)
        return 1
    if not candidates:
        print(f"error: --results {args.results}: no measured strategies (run the calibrate stage)", file=sys.stderr)
        return 1
    selection = select(candidates, Limits(args.memory_mb, args.max_loss_pct, args.min_tok_s))
    print(selection.explain())
    return 0 if selection.choice else 2


def build_parser() -> argparse.ArgumentParser:
    """Subcommands list, quantize and select."""
    p = argparse.ArgumentParser(
        prog="python -m engine.quant", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered strategies (built-in and plugins)")
    q = sub.add_parser("quantize", help="quantize a checkpoint and save it")
    q.add_argument("--model", required=True, help="fp32 checkpoint directory (HF layout)")
    q.add_argument("--strategy", required=True, help="strategy name (see `list`)")
    q.add_argument("--option", type=parse_option, action="append", default=[], help="strategy option key=value")
    q.add_argument("--calibration-text", default=DEFAULT_CALIBRATION, help="text GPTQ and AWQ calibrate on")
    q.add_argument("--calibration-tokens", type=int, default=4096, help="calibration token budget")
    q.add_argument("--out", type=Path, required=True, help="directory to write")
    s = sub.add_parser("select", help="pick a strategy from measured results")
    s.add_argument("--results", type=Path, default=Path("metrics/calibrate.json"), help="calibrate-stage metrics")
    s.add_argument("--memory-mb", type=float, help="budget for the Linear weights, MB")
    s.add_argument("--max-loss-pct", type=float, help="largest accuracy loss allowed, percent")
    s.add_argument("--min-tok-s", type=float, help="slowest decode allowed, tokens/s (batch 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; bad input ends with one line on stderr and exit 1."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "list":
        print("\n".join(available_strategies()))
        return 0
    if args.command == "select":
        return _select(args)
    if args.strategy not in available_strategies():
        print(
            f"error: unknown strategy {args.strategy!r}; available: {', '.join(available_strategies())}",
            file=sys.stderr,
        )
        return 1
    try:
        return _quantize(args)
    except (CheckpointError, QuantizationError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
