"""Stage `calibrate`: quantize the model with every configured strategy, measure each one's accuracy
(perplexity and next-token top-1 agreement vs fp32 on the eval text) and batch-1 decode speed, check the
fp32 fallback on corrupt calibration data, and let the auto-selector choose under the configured limits.

`python -m pipelines calibrate` writes metrics/calibrate.json (namespaces `quant`, `features`),
plots/quant_head_to_head.csv and reports/quant_head_to_head.md; quantized checkpoints go to models/quant/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from engine.bench import run_one
from engine.eval import compare, score
from engine.loader import load_model, load_tokenizer
from engine.models import use_cpu_kernels
from engine.quant import (
    BUILT_IN,
    available_strategies,
    from_metrics,
    linear_bytes,
    quantize_loaded,
    save_quantized,
    select,
)
from pipelines.common import PLOTS, REPORTS, bench_args, now_utc, stage_run_name, write_metrics
from pipelines.config import QuantConf, TollgateConf, load_params

QUANT_DIR = Path("models/quant")
HEAD_TO_HEAD = ["strategy", "perplexity", "accuracy_loss_pct", "top1_agreement", "decode_tok_s",
                "speedup_vs_fp32", "weight_mb", "calibration_s", "fallback_layers"]  # fmt: skip


def eval_ids(p: TollgateConf) -> list[int]:
    """The eval text's first `eval_tokens` tokens: the same for every strategy."""
    text = Path(p.data.eval_text).read_text(encoding="utf-8")
    return load_tokenizer(p.model.path).encode(text, add_special_tokens=False)[: p.profile.calibrate.eval_tokens]


def bench_decode(p: TollgateConf, checkpoint: Path) -> dict[str, Any]:
    """Batch-1 decode of a checkpoint (fp32 or quantized) in a fresh process, with the profile's bench sizes."""
    row = run_one("tollgate", bench_args(p, checkpoint), 1)  # quant "none": the checkpoint is already quantized
    if "error" in row:
        raise RuntimeError(f"bench of {checkpoint} failed: {row['error']}")
    return row


@task(cache_policy=NO_CACHE)
def measure(p: TollgateConf, strategy: QuantConf, ids: list[int], reference: Any) -> dict[str, Any]:
    """Quantize (timed), save, score against fp32 and benchmark one strategy."""
    model = load_model(p.model.path, cpu_kernels=False)
    report = quantize_loaded(
        model,
        load_tokenizer(p.model.path),
        strategy.name,
        dict(strategy.options),
        p.data.calibration_text,
        p.profile.calibrate.calibration_tokens,
    )
    out = save_quantized(model, report, Path(p.model.path), QUANT_DIR / f"{p.model.name}-{strategy.name}")
    quality = compare(score(use_cpu_kernels(model), ids, p.profile.calibrate.context), reference)
    speed = bench_decode(p, out)
    facts = report.summary()
    row = {
        **quality,
        "calibration_s": facts["calibration_s"] + facts["quantize_s"],  # the whole time to a quantized model
        "decode_tok_s": speed["decode_tok_s"],
        "weight_mb": facts["linear_mb"],
        "fallback_layers": facts["fallback_layers"],
        "layers_quantized": facts["layers_quantized"],
        "options": dict(strategy.options),
    }
    get_run_logger().info(
        "%s: perplexity %.2f (%+.2f%%), top-1 %.3f, %.1f tok/s, %.0f MB, %.1f s",
        strategy.name, row["perplexity"], row["accuracy_loss_pct"], row["top1_agreement"],
        row["decode_tok_s"], row["weight_mb"], row["calibration_s"],
    )  # fmt: skip
    return row


def head_to_head(rows: dict[str, dict[str, Any]]) -> str:
    """The criteria's "Comparison: head-to-head" table, as Markdown."""
    lines = ["| " + " | ".join(HEAD_TO_HEAD) + " |", "|" + "---|" * len(HEAD_TO_HEAD)]
    for name, row in rows.items():
        cells = [name] + [_cell(row.get(k)) for k in HEAD_TO_HEAD[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@flow(name="calibrate", flow_run_name=stage_run_name)
def calibrate_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Measure every strategy against fp32, check the fallback, select a strategy, write metrics and table."""
    started = now_utc()

    p = load_params(Path(params_path))
    log = get_run_logger()
    ids = eval_ids(p)
    fp32 = load_model(p.model.path, cpu_kernels=False)
    fp32_mb = linear_bytes(fp32) / 2**20  # counted before the Linear layers become CPU kernels
    reference = score(use_cpu_kernels(fp32), ids, p.profile.calibrate.context)
    del fp32
    fp32_speed = bench_decode(p, Path(p.model.path))["decode_tok_s"]
    rows: dict[str, dict[str, Any]] = {
        "none": {**compare(reference, reference), "calibration_s": 0.0, "decode_tok_s": fp32_speed,
                 "weight_mb": fp32_mb, "fallback_layers": 0},
    }  # fmt: skip
    for name, strategy in p.calibrate.strategies.items():
        rows[name] = measure(p, strategy, ids, reference)
    for row in rows.values():
        row["speedup_vs_fp32"] = row["decode_tok_s"] / fp32_speed
    limits = p.calibrate.limits
    selection = select(from_metrics({"quant": rows}), limits)
    log.info("auto-selector: %s", selection.explain())
    built_in = set(BUILT_IN)
    complete = built_in <= set(rows) and built_in <= set(available_strategies()) and selection.reasons
    metrics = {
        "quant": {**rows, "fp32_perplexity": reference.perplexity, "selected": selection.choice or "none"},
        "features": {"quantization": {"complete": int(bool(complete)), "strategies": len(rows) - 1}},
    }
    write_metrics("calibrate", metrics, params_path, started)
    table = head_to_head(rows)
    PLOTS.mkdir(exist_ok=True)
    csv_rows = [",".join(HEAD_TO_HEAD)] + [
        ",".join([name] + [str(row.get(k, "")) for k in HEAD_TO_HEAD[1:]]) for name, row in rows.items()
    ]
    (PLOTS / "quant_head_to_head.csv").write_text("\n".join(csv_rows) + "\n")
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "quant_head_to_head.md").write_text(
        f"# Quantization head-to-head ({p.model.name}, profile {p.profile.name})\n\n{table}\n"
        f"## Auto-selector (limits: {limits})\n\n{selection.explain()}\n"
    )
    print(table)
    return metrics
