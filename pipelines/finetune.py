"""Stage `finetune`: train a LoRA (fp32 base) and a QLoRA (frozen NF4 base) adapter on the project's
contact-card task, each in its own process through the `finetune-adapter` flow (so each peak RSS is its own),
then measure task accuracy before and after on held-out names, the perplexity change on the evaluation text,
merged-versus-served agreement, and decode speed with 0, 1 and several adapters in the batch.

`python -m pipelines finetune` writes metrics/finetune.json (namespaces `finetune`, `qlora`),
plots/finetune_loss.{csv,png} and reports/finetune.md; the adapters go to models/finetune/. The criteria's
"< 1 hour per 7B" and "< 4 GB" are about a 7B model: on a smaller one they are extrapolations, written as
such and declared invalid, so the gate cannot read them as measurements.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from engine.loader import load_model
from pipelines.common import PLOTS, now_utc, save_report, stage_run_name, write_metrics
from pipelines.config import TollgateConf, load_params
from pipelines.finetune_measure import measure
from pipelines.plots import chart, write_csv
from pipelines.prefect_parent import PARENT_ENV

SEVEN_B = 7e9
NF4_BITS = 4.5  # 4-bit codes plus one fp32 absmax per 64 weights (bitsandbytes' block size)


def train(p: TollgateConf, method: str) -> dict[str, Any]:
    """One adapter from scratch, through the flow in a child process; its result.json."""
    f, s = p.finetune, p.profile.finetune
    out = Path("models/finetune") / f"{p.model.name}-{method}"
    shutil.rmtree(out, ignore_errors=True)  # a stage run trains afresh; resuming is for interrupted jobs
    data = Path(f.data)
    command = [
        sys.executable, "-m", "pipelines", "finetune_train", "--base", p.model.path, "--method", method,
        "--train", str(data / "train.jsonl"), "--valid", str(data / "valid.jsonl"), "--out", str(out),
        "--rank", str(f.rank), "--alpha", str(f.alpha), "--dropout", str(f.dropout), "--targets", *f.targets,
        "--learning-rate", str(f.learning_rate), "--epochs", str(f.epochs), "--max-steps", str(s.max_steps),
        "--batch-size", str(s.batch_size), "--seed", "0", "--mlflow-store", p.mlflow.store,
        "--kl-weight", str(f.kl_weight), "--kl-tokens", str(f.kl_tokens), "--kl-text", f.kl_text,
    ]  # fmt: skip
    # the child's flow run is a subflow of this one, on this flow's Prefect API (ephemeral or not)
    env = {**os.environ, "PREFECT_API_URL": str(get_client(sync_client=True).api_url), PARENT_ENV: str(flow_run.id)}
    subprocess.run(command, check=True, env=env)
    return json.loads((out / "result.json").read_text())


def extrapolate(params: float, qlora: dict[str, Any], weight_bytes: float) -> dict[str, float]:
    """QLoRA on a 7B model from this run: compute and weights scale with parameters, the rest is kept as measured.

    hours = seconds x 7e9 / params / 3600 (same training tokens); memory = NF4 weights of 7B (4.5 bits each)
    + this run's peak RSS less its own weights."""
    hours = qlora["seconds"] * SEVEN_B / params / 3600
    overhead = qlora["peak_rss_mb"] * 2**20 - weight_bytes
    return {"hours_per_7b": hours, "peak_memory_gb": (SEVEN_B * NF4_BITS / 8 + overhead) / 2**30}


def assemble(p: TollgateConf, runs: dict[str, dict[str, Any]], measured: dict[str, Any]) -> dict[str, Any]:
    """metrics/finetune.json: the measurements, QLoRA's criteria keys, and what is declared invalid."""
    model = load_model(p.model.path, cpu_kernels=False)
    params = sum(t.numel() for t in model.parameters())
    weight_bytes = params * NF4_BITS / 8
    keep = ("steps", "tokens", "seconds", "tokens_per_s", "peak_rss_mb", "best_valid_loss")
    finetune = {"params_m": params / 1e6, **measured}
    for method, result in runs.items():
        finetune[method].update({k: result[k] for k in keep if result.get(k) is not None})
    qlora: dict[str, Any] = {}
    invalid = {}
    if "qlora" in runs and "lora" in runs:
        lora_pct = finetune["lora"]["task_accuracy_pct"]
        qlora["quality_pct"] = 100 * finetune["qlora"]["task_accuracy_pct"] / lora_pct if lora_pct else 0.0
        if not lora_pct:
            invalid["qlora.quality_pct"] = "LoRA reached 0% task accuracy: there is no quality to compare QLoRA with"
    if "qlora" in runs:
        qlora.update(extrapolate(params, finetune["qlora"], weight_bytes))
        if params < 0.9 * SEVEN_B:
            why = f"extrapolated from {p.model.name} ({params / 1e6:.0f}M parameters) to 7B; no 7B model was trained"
            invalid.update({"qlora.hours_per_7b": why, "qlora.peak_memory_gb": why})
    return {"finetune": finetune, "qlora": qlora, "_invalid": invalid}


def write_loss_plot(runs: dict[str, dict[str, Any]]) -> None:
    """Training and validation loss per step, per method (CSV for `dvc plots`, PNG for the report)."""
    rows = [[m, h["step"], h["train_loss"], h.get("valid_loss", "")] for m, r in runs.items() for h in r["history"]]
    write_csv(PLOTS / "finetune_loss.csv", ["method", "step", "train_loss", "valid_loss"], rows)
    series = {f"{m} train": ([h["step"] for h in r["history"]], [h["train_loss"] for h in r["history"]])
              for m, r in runs.items()}  # fmt: skip
    chart(PLOTS / "finetune_loss.png", series, "step", "loss (nats/token)", "Fine-tuning loss", log_y=True)


def write_report(p: TollgateConf, metrics: dict[str, Any], failures: dict[str, list]) -> str:
    """reports/finetune.md: the table of measured numbers, the extrapolations beside them, wrong replies."""
    f = metrics["finetune"]
    lines = [
        f"# Fine-tuning ({p.model.name}, profile {p.profile.name})\n",
        f"Rank {p.finetune.rank} on {', '.join(p.finetune.targets)}; lr {p.finetune.learning_rate}, "
        f"{p.profile.finetune.max_steps} steps of {p.profile.finetune.batch_size}; KL(base || adapted) weight "
        f"{p.finetune.kl_weight} on {p.finetune.kl_tokens} tokens per step of {p.finetune.kl_text}.\n",
        "| model | task accuracy (held-out) | perplexity change | train s | tok/s | peak RSS MiB |",
        "|---|---|---|---|---|---|",
        f"| base | {f['base']['task_accuracy_pct']:.1f}% | - | - | - | - |",
    ]
    for m in p.finetune.methods:
        r = f[m]
        lines.append(f"| {m} | {r['task_accuracy_pct']:.1f}% | {r['accuracy_loss_pct']:+.2f}% | {r['seconds']:.0f} | "
                     f"{r['tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} |")  # fmt: skip
    d, merge = f["decode"], f["merge"]
    lines += [
        f"\nMerged vs served ({merge['adapter']}): max relative logit difference {merge['max_rel_logit_diff']:.2e}, "
        f"top-1 agreement {merge['top1_agreement_pct']:.2f}%.\n",
        f"Decode, batch {d['batch']}: "
        + ", ".join(f"{k.split('_')[0]} {v:.1f} tok/s" for k, v in d.items() if k != "batch"),
        f"\nExtrapolated to 7B (derived, not measured): {json.dumps(metrics['qlora'])}\n",
        "## Wrong replies (first few)\n",
    ]  # fmt: skip
    for model, rows in failures.items():
        lines += [f"- {model}: {row['prompt']!r} -> {row['reply']!r}" for row in rows]
    return save_report("finetune.md", lines)


@flow(name="finetune", flow_run_name=stage_run_name)
def finetune_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Train each configured method, measure, write metrics, plot and report."""
    started = now_utc()
    p = load_params(Path(params_path))
    runs = {method: train(p, method) for method in p.finetune.methods}
    measured, failures = measure(p, runs)
    metrics = assemble(p, runs, measured)
    write_metrics("finetune", metrics, params_path, started)
    write_loss_plot(runs)
    get_run_logger().info("\n%s", write_report(p, metrics, failures))
    return metrics
