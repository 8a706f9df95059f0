"""Stage `calibrate`: quantize the model with every configured strategy, measure each one against fp32 on every
evaluation domain (mean and P99 KL divergence, top-1 agreement, perplexity change) and its batch-1 decode speed,
search mixed-precision plans, and let the auto-selector choose under the configured limits.

`python -m pipelines calibrate` writes metrics/calibrate.json (namespaces `quant`, `features`),
plots/quant_head_to_head.csv, plots/quant_frontier.{csv,png} and reports/quant_head_to_head.md; quantized
checkpoints go to models/quant/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from engine.quant import BUILT_IN, available_strategies, from_metrics
from engine.quant import select as choose
from pipelines.common import REPORTS, now_utc, stage_run_name, write_metrics
from pipelines.config import load_params
from pipelines.quant_eval import eval_domains
from pipelines.quant_measure import fp32_row, measure
from pipelines.quant_plans import mixed_precision
from pipelines.quant_report import head_to_head, write_frontier, write_head_to_head, write_sensitivity


@flow(name="calibrate", flow_run_name=stage_run_name)
def calibrate_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Measure every strategy and the mixed plans against fp32, select one, write metrics, table and frontier."""
    started = now_utc()
    p = load_params(Path(params_path))
    domains = eval_domains(p)
    rows = {"none": fp32_row(p, domains)}
    for name, strategy in p.calibrate.strategies.items():
        rows[name] = measure(p, strategy, domains)
    plans = mixed_precision(p, domains, rows)
    rows["mixed"] = plans["row"]
    for row in rows.values():
        row["speedup_vs_fp32"] = row["decode_tok_s"] / rows["none"]["decode_tok_s"]
    limits = p.calibrate.limits
    selection = choose(from_metrics({"quant": rows}), limits)
    get_run_logger().info("auto-selector: %s", selection.explain())
    built_in = set(BUILT_IN)
    complete = built_in <= set(rows) and built_in <= set(available_strategies()) and selection.reasons
    metrics = {
        "quant": {
            **rows,
            "selected": selection.choice or "none",
            "heldout_domains": [d.name for d in domains if d.heldout],
        },
        "features": {"quantization": {"complete": int(bool(complete)), "strategies": len(rows) - 1}},
    }
    write_metrics("calibrate", metrics, params_path, started)
    write_head_to_head(rows)
    write_frontier(plans, rows)
    write_sensitivity(plans)
    table = head_to_head(rows)
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "quant_head_to_head.md").write_text(
        f"# Quantization head-to-head ({p.model.name}, profile {p.profile.name})\n\n"
        f"Against fp32 on the same tokens; the first table is the worst over the evaluation domains "
        f"(held out from calibration: {', '.join(d.name for d in domains if d.heldout)}). KL in nats per token.\n\n"
        f"{table}\n## Mixed precision (base {plans['base']}, int8 blocks chosen by sensitivity)\n\n"
        f"Chosen: {rows['mixed']['options']['int8_blocks']} "
        f"({'within' if rows['mixed']['within_budget'] else 'NOT within'} the budget {p.calibrate.mixed}); "
        f"the frontier is plots/quant_frontier.csv.\n\n"
        f"## Auto-selector (limits: {limits})\n\n{selection.explain()}\n"
    )
    print(table)
    return metrics
