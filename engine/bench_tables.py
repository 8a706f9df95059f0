"""The README's performance tables, generated from an engine.bench JSON report (never typed by hand).

python -m engine.bench_tables reports/bench_engine.json                  # print the markdown
python -m engine.bench_tables reports/bench_engine.json --readme README.md  # replace the marked block
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

START, END = "<!-- bench-tables:start -->", "<!-- bench-tables:end -->"
SERVE_START, SERVE_END = "<!-- serve-tables:start -->", "<!-- serve-tables:end -->"
QUANT_NAMES = {"none": "fp32"}


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(ours: float | None, peer: float | None) -> str:
    return "—" if not ours or not peer else f"**{ours / peer:.2f}×**"


def _finish(lines: list[str], report: dict[str, Any]) -> str:
    """The table's lines, then one line per peer that could not run, saying why."""
    for peer, why in report.get("peers_missing", {}).items():
        lines += ["", f"{peer} rows missing: {why}"]
    return "\n".join(lines) + "\n"


def _rows(report: dict[str, Any]) -> dict[tuple[str, str, int, int], dict[str, Any]]:
    return {(r["system"], r["quant"], r["batch"], r["threads"]): r for r in report["results"] if "error" not in r}


def tables(report: dict[str, Any]) -> str:
    """Markdown: one line naming machine and settings, then decode, prefill and memory side by side."""
    rows = _rows(report)
    keys = sorted({(q, b, t) for s, q, b, t in rows if s == "tollgate"}, key=lambda k: (k[0] != "none", k))
    lines = [
        f"Measured on {report['cpu']}, torch {report['torch']}, `{report['model']}`, prompt {report['prompt_len']}, "
        f"{report['new_tokens']} new tokens, median of {report['repeats']} runs (`docs/bench/bench_engine.json`).",
        "",
        "| quant | batch | threads | Tollgate decode tok/s | llama.cpp (format) | ratio | HF | ratio "
        "| prefill tok/s ours / llama.cpp | peak RSS MB ours / llama.cpp / HF |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for quant, batch, threads in keys:
        ours = rows[("tollgate", quant, batch, threads)]
        cpp = rows.get(("llamacpp", quant, batch, threads), {})
        hf = rows.get(("hf", quant, batch, threads), {})
        fmt = f" ({cpp['gguf_type']})" if cpp else ""
        lines.append(
            f"| {QUANT_NAMES.get(quant, quant)} | {batch} | {threads} | {_fmt(ours['decode_tok_s'])} "
            f"| {_fmt(cpp.get('decode_tok_s'))}{fmt} | {_ratio(ours['decode_tok_s'], cpp.get('decode_tok_s'))} "
            f"| {_fmt(hf.get('decode_tok_s'))} | {_ratio(ours['decode_tok_s'], hf.get('decode_tok_s'))} "
            f"| {_fmt(ours['prefill_tok_s'], 0)} / {_fmt(cpp.get('prefill_tok_s'), 0)} "
            f"| {_fmt(ours['peak_rss_mb'], 0)} / {_fmt(cpp.get('peak_rss_mb'), 0)} / {_fmt(hf.get('peak_rss_mb'), 0)} |"
        )
    return _finish(lines, report)


def serving_tables(report: dict[str, Any]) -> str:
    """Markdown: engine.server and llama-server per concurrency, output tok/s, TTFT and TPOT P50 / P95."""
    rows = {(r["system"], r["concurrency"]): r for r in report["results"]}
    lines = [
        f"Measured on {report['cpu']}, `{report['model']}` ({QUANT_NAMES.get(report['quant'], report['quant'])}), "
        f"{report['threads']} threads per server, {report['requests']} requests per level, prompt "
        f"{report['prompt_len']}, {report['max_tokens']} output tokens (`docs/bench/serve_vs_llamacpp.json`).",
        "",
        "| concurrency | output tok/s ours / llama-server | ratio | TTFT P50 / P95 ms ours | llama-server "
        "| TPOT P50 / P95 ms ours | llama-server | errors ours / llama-server |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in sorted({c for _, c in rows}):
        ours, peer = rows.get(("tollgate", c), {}), rows.get(("llamacpp", c), {})

        def p50_95(row: dict[str, Any], key: str) -> str:
            stats = row.get(key, {})
            return f"{_fmt(stats.get('p50'), 0)} / {_fmt(stats.get('p95'), 0)}"

        errors = " / ".join(_errors(row) for row in (ours, peer))
        lines.append(
            f"| {c} | {_fmt(ours.get('output_tok_s'))} / {_fmt(peer.get('output_tok_s'))} "
            f"| {_ratio(ours.get('output_tok_s'), peer.get('output_tok_s'))} "
            f"| {p50_95(ours, 'ttft_ms')} | {p50_95(peer, 'ttft_ms')} | {p50_95(ours, 'tpot_ms')} "
            f"| {p50_95(peer, 'tpot_ms')} | {errors} |"
        )
    return _finish(lines, report)


def _errors(row: dict[str, Any]) -> str:
    if not row:
        return "—"
    retried = row.get("stale_connection_retries", 0)
    return f"{sum(row['errors'].values())}" + (f" ({retried} retried on a stale connection)" if retried else "")


def replace_block(text: str, block: str, start: str = START, end: str = END) -> str:
    """`text` with the part between the `start` and `end` markers replaced by `block`."""
    if start not in text or end not in text:
        raise ValueError(f"no {start} ... {end} block to replace")
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{block}{end}{rest.split(end, 1)[1]}"


def render(report: dict[str, Any], text: str | None = None) -> str:
    """The report's tables, or `text` with the report's README block replaced by them."""
    if report.get("serving"):
        block, start, end = serving_tables(report), SERVE_START, SERVE_END
    else:
        block, start, end = tables(report), START, END
    return block if text is None else replace_block(text, block, start, end)


def main(argv: list[str] | None = None) -> int:
    """Print the tables, or write them into the README's marked blocks (all or nothing)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", type=Path, nargs="+", help="engine.bench --out or pipelines serve_peer --out JSON")
    p.add_argument("--readme", type=Path, help="rewrite the marked blocks in this file")
    args = p.parse_args(argv)
    try:
        reports = [json.loads(path.read_text()) for path in args.reports]
        if args.readme:
            text = args.readme.read_text()
            for report in reports:
                text = render(report, text)
            args.readme.write_text(text)
        else:
            print("\n".join(render(report) for report in reports), end="")
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
