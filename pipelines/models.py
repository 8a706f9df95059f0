"""Stage `models`: the loader's evidence (`python -m pipelines models`).

- Architecture-verified: every tiny random-weight checkpoint of engine.loader.tiny through the KV-cache parity
  check against HF transformers (chunked prefill, a prefix-cache hit, a preemption; per-step logits and greedy
  tokens). An architecture counts as supported only when all of its tiny checkpoints pass.
- Real-weight-verified: the configured model, loaded and timed, through the same parity check; then each GGUF
  the profile's `real_packages` ship (weekly, release: Gemma-3-270M in Q4_K_M, a second family and a k-quant),
  converted to safetensors under models/ once and checked the same way.
- Formats: lossless round trips (safetensors -> GGUF F32 -> safetensors on the real model; safetensors -> .bin,
  sharded, -> safetensors on a tiny one), each read back and hashed tensor by tensor; the GGUF written here
  loaded by transformers' own GGUF loader, compared logit by logit with the engine; and, when `LLAMACPP_BIN`
  names llama.cpp's tools, the real model's GGUF loaded and decoded by `llama-bench`.
- With `quant_probes` (weekly, release), every quantization strategy on every tiny checkpoint.

Writes metrics/models.json (`loader.*`) and reports/models.md (the support matrix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from engine.convert import convert
from engine.loader.convert import gguf_in_package
from engine.loader.format_checks import format_checks, real_check
from engine.loader.support import QUANT_STRATEGIES, SupportRow, support_matrix
from pipelines.common import now_utc, save_report, stage_run_name, write_metrics
from pipelines.config import TollgateConf, load_params


@task
def tiny_checks(p: TollgateConf) -> list[SupportRow]:
    """Parity (and, when the profile asks, quantization) for every tiny checkpoint."""
    return support_matrix(calibration_text=p.data.eval_text if p.profile.models.quant_probes else None)


@task
def real_weights(p: TollgateConf) -> list[dict[str, Any]]:
    """The configured model, then each GGUF the profile's packages ship (converted to safetensors first: the
    transformers reference loads that directory)."""
    steps = p.profile.models.real_parity_steps
    rows = [real_check(p.model.name, Path(p.model.path), steps)]
    for package in p.profile.models.real_packages:
        gguf_path = gguf_in_package(package)
        out = Path("models") / gguf_path.stem
        if not (out / "model.safetensors").is_file():
            convert(gguf_path, "safetensors", out)
        rows.append({**real_check(gguf_path.name, out, steps), "source": package})
    return rows


@task
def round_trips(p: TollgateConf) -> list[dict[str, Any]]:
    """Lossless conversions read back and hashed, and our GGUF in transformers and llama.cpp."""
    return format_checks(Path(p.model.path))


def supported(rows: list[SupportRow]) -> tuple[list[str], set[str]]:
    """Architectures whose every tiny checkpoint passed parity, and their families."""
    by_arch: dict[str, bool] = {}
    for r in rows:
        by_arch[r.architecture] = by_arch.get(r.architecture, True) and r.parity.passed
    passed = sorted(a for a, ok in by_arch.items() if ok)
    return passed, {r.family for r in rows if r.architecture in passed}


def formats(trips: list[dict[str, Any]]) -> set[str]:
    """Formats proven by a bit-exact lossless round trip (the first through GGUF, the second through .bin)."""
    proven = set()
    for trip, fmt in zip([t for t in trips if t["tensors"] is not None], ("gguf", "pytorch"), strict=False):
        if trip["bit_exact"]:
            proven |= {"safetensors", fmt}
    return proven


def loader_metrics(rows: list[SupportRow], real: list[dict[str, Any]], trips: list[dict[str, Any]]) -> dict[str, Any]:
    """The `loader.*` evidence: only architectures whose every tiny checkpoint passed count."""
    passed, families = supported(rows)
    exact = [t["bit_exact"] for t in trips if t["tensors"] is not None]
    return {
        "supported_models": len(passed),
        "families": len(families),
        "architecture_verified": passed,
        "real_weight_verified": [r["model"] for r in real if r["passed"]],
        "tiny_checkpoints": len(rows),
        "tiny_passed": sum(r.parity.passed for r in rows),
        "max_abs_logit_diff": max(r.parity.max_abs_diff for r in rows),
        "real": real,
        "load_s": max(r["load_s"] for r in real),
        "formats_supported": len(formats(trips)),
        "conversion_exact_pct": 100.0 * sum(exact) / len(exact) if exact else 0.0,
        "conversions": trips,
    }


def matrix_rows(rows: list[SupportRow], quant: bool) -> list[str]:
    """One Markdown table row per tiny checkpoint."""
    lines = []
    for r in rows:
        marks = ["yes" if v else "" for v in r.features.values()]
        status = f"{'PASS' if r.parity.passed else 'FAIL'} ({r.parity.max_abs_diff:.1e})"
        cells = [r.name, r.architecture, r.family, *marks, status]
        if quant:
            cells += ["ok" if r.quant.get(s) == "ok" else "no" for s in QUANT_STRATEGIES]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report_lines(rows: list[SupportRow], metrics: dict[str, Any]) -> list[str]:
    """reports/models.md: the support matrix and the conversions."""
    quant = any(r.quant for r in rows)
    head = "| checkpoint | architecture | family | GQA | sliding window | RoPE scaling | bias | tied | MoE | parity |"
    lines = [
        "# Models and formats", "",
        f"{metrics['supported_models']} architectures ({metrics['families']} families) pass KV-cache parity with "
        f"HF transformers; real-weight-verified: {', '.join(metrics['real_weight_verified']) or 'none'} "
        f"(load {metrics['load_s']} s).", "",
        head + (" " + " | ".join(QUANT_STRATEGIES) + " |" if quant else ""),
        "|" + "---|" * (10 + (len(QUANT_STRATEGIES) if quant else 0)),
    ]  # fmt: skip
    lines += matrix_rows(rows, quant)
    lines += ["", "| real checkpoint | architecture | load s | parity steps | max abs logit diff | greedy equal |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['model']} | {r['architecture']} | {r['load_s']} | {r['steps']} | {r['max_abs_diff']:.1e} | "
              f"{r['greedy_equal']} |" for r in metrics["real"]]  # fmt: skip
    lines += ["", "| conversion | bit-exact | tensors | seconds |", "|---|---|---|---|"]
    for t in metrics["conversions"]:
        verdict = t.get("skipped") or t["bit_exact"]
        lines.append(f"| {t['conversion']} | {verdict} | {t['tensors'] or '-'} | {t['seconds'] or '-'} |")
    return lines


@flow(name="models", flow_run_name=stage_run_name)
def models_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Check every architecture and format; write the evidence."""
    started = now_utc()
    p = load_params(Path(params_path))
    rows = tiny_checks(p)
    metrics = loader_metrics(rows, real_weights(p), round_trips(p))
    get_run_logger().info(save_report("models.md", report_lines(rows, metrics)))
    write_metrics("models", {"loader": metrics}, params_path, started)
    return metrics
