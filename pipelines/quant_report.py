"""The calibrate stage's tables and charts: the head-to-head of every strategy on every domain (Markdown, CSV for
`dvc plots`) and the size/quality frontier of the mixed-precision plans beside the single strategies (CSV, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.common import PLOTS
from pipelines.plots import chart, write_csv

COLUMNS = ["strategy", "accuracy_loss_pct", "kl_mean", "top1_agreement", "decode_tok_s", "speedup_vs_fp32",
           "weight_mb", "calibration_s", "fallback_layers"]  # fmt: skip
PER_DOMAIN = ["accuracy_loss_pct", "kl_mean", "kl_p99", "top1_agreement"]
FRONTIER = ["plan", "weight_mb", "weight_vs_int8", "accuracy_loss_pct", "kl_mean", "heldout_loss_pct", "heldout_kl"]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def markdown(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]) + "\n"


def head_to_head(rows: dict[str, dict[str, Any]]) -> str:
    """The criteria's "Comparison: head-to-head": worst-domain numbers, then each domain's."""
    summary = markdown(COLUMNS, [[name] + [row.get(k) for k in COLUMNS[1:]] for name, row in rows.items()])
    domains = next(iter(rows.values())).get("domains", {})
    parts = [summary]
    for domain in domains:
        table = [[name] + [row["domains"][domain].get(k) for k in PER_DOMAIN] for name, row in rows.items()]
        parts.append(f"\n### {domain}\n\n" + markdown(["strategy", *PER_DOMAIN], table))
    return "".join(parts)


def write_head_to_head(rows: dict[str, dict[str, Any]]) -> Path:
    """CSV of the worst-domain numbers for `dvc plots`."""
    return write_csv(
        PLOTS / "quant_head_to_head.csv", COLUMNS, ([n] + [r.get(k, "") for k in COLUMNS[1:]] for n, r in rows.items())
    )


def frontier_rows(plans: dict[str, Any], rows: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """Every single strategy below fp32 and every plan: size, its share of int8's, worst and held-out quality."""
    int8_mb = rows["int8"]["weight_mb"]
    points = [(n, r) for n, r in rows.items() if n not in ("none", "mixed")]
    points += [(f"{plans['base']}+{f['int8_blocks']}xint8", f) for f in plans["frontier"]]
    return [
        [name, r["weight_mb"], r["weight_mb"] / int8_mb, r["accuracy_loss_pct"], r["kl_mean"],
         r["heldout"]["accuracy_loss_pct"], r["heldout"]["kl_mean"]]
        for name, r in sorted(points, key=lambda x: x[1]["weight_mb"])
    ]  # fmt: skip


def write_frontier(plans: dict[str, Any], rows: dict[str, dict[str, Any]]) -> list[Path]:
    """CSV and PNG of the size/quality frontier (held-out perplexity change against weight MB)."""
    table = frontier_rows(plans, rows)
    plan_rows = [r for r in table if "xint8" in r[0]]
    series = {"mixed plans": ([r[1] for r in plan_rows], [r[5] for r in plan_rows])}
    series |= {r[0]: ([r[1]], [r[5]]) for r in table if "xint8" not in r[0] and r[5] < 1e3}  # bitnet is off the chart
    return [
        write_csv(PLOTS / "quant_frontier.csv", FRONTIER, table),
        chart(PLOTS / "quant_frontier.png", series, "Linear weights (MB)", "held-out perplexity change (%)",
              "Size/quality frontier", "o"),
    ]  # fmt: skip


def write_sensitivity(plans: dict[str, Any]) -> Path:
    """Each block's mean KL when only it takes the base strategy's layers (CSV for `dvc plots`)."""
    rows = ([i, round(v, 6)] for i, v in enumerate(plans["sensitivity"]))
    return write_csv(PLOTS / "quant_sensitivity.csv", ["block", "kl_mean"], rows)
