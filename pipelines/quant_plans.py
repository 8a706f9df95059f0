"""Mixed precision in the calibrate stage: per-block sensitivity on the calibration set, then plans keeping the
k most sensitive blocks at int8 over the best 4-bit strategy, measured on every evaluation domain; the smallest
plan within the budget is saved and benchmarked as strategy `mixed`, which the auto-selector weighs like the rest.

Sensitivity is measured on calibration tokens, not on the evaluation texts, so which blocks a plan keeps is not
fitted to the texts it is judged on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from engine.eval import Reference
from engine.loader import load_model, load_tokenizer
from engine.mixed_precision import blocks_from, most_sensitive, sensitivity, within
from engine.quant import QuantLinear, QuantReport, linear_bytes, save_quantized
from engine.quant.calibration import text_batches
from pipelines.config import TollgateConf
from pipelines.quant_eval import Domain, accuracy, bench_decode

QUANT_DIR = Path("models/quant")
HIGH = "int8"


def checkpoint(p: TollgateConf, strategy: str) -> Path:
    """Where the calibrate stage saves a strategy's quantized model."""
    return QUANT_DIR / f"{p.model.name}-{strategy}"


def best_base(rows: dict[str, dict[str, Any]]) -> str:
    """The strategy smaller than int8 with the least held-out KL: the 4-bit side of every plan."""
    small = [n for n, r in rows.items() if n not in ("none", HIGH) and r["weight_mb"] < rows[HIGH]["weight_mb"]]
    return min(small, key=lambda n: rows[n]["heldout"]["kl_mean"])


def calibration_ids(p: TollgateConf) -> list[int]:
    """The first `sensitivity_tokens` of the calibration set, as one flat list of ids."""
    tokenizer = load_tokenizer(p.model.path)
    return [
        t for b in text_batches(tokenizer, p.data.calibration_text, p.profile.calibrate.sensitivity_tokens) for t in b
    ]


@task(cache_policy=NO_CACHE)
def mixed_precision(p: TollgateConf, domains: list[Domain], rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sensitivity, the frontier of plans, and the chosen plan's row (saved and benchmarked)."""
    log, start = get_run_logger(), time.perf_counter()
    base, context = best_base(rows), p.profile.calibrate.context
    fp32 = domains[0].reference.model  # the fp32 model the references were scored with, not a second load
    quantized, high = (load_model(checkpoint(p, name)) for name in (base, HIGH))
    ids = calibration_ids(p)
    scores = sensitivity(fp32, quantized, Reference(fp32, ids, context), ids, context)
    sizes = sorted({min(k, len(scores)) for k in p.profile.calibrate.int8_blocks})
    frontier = []
    for k in sizes:
        blocks = most_sensitive(scores, k)
        with blocks_from(quantized, high, blocks) as model:
            mb = linear_bytes(model) / 2**20
            frontier.append({"int8_blocks": k, "blocks": blocks, "weight_mb": mb, **accuracy(model, domains, context)})
        log.info("plan %s + %d int8 blocks: %.1f MB, worst loss %+.2f%%, KL %.4f", base, k, mb,
                 frontier[-1]["accuracy_loss_pct"], frontier[-1]["kl_mean"])  # fmt: skip
    budget = p.calibrate.mixed
    fits = [f for f in frontier if within(f, budget.max_loss_pct, budget.max_kl_mean)]
    chosen = fits[0] if fits else frontier[-1]  # the smallest within budget, else the most accurate tried
    with blocks_from(quantized, high, chosen["blocks"]) as model:
        out = _save(model, p, base, chosen["blocks"], time.perf_counter() - start)
    row = {
        **{k: v for k, v in chosen.items() if k not in ("blocks", "int8_blocks")},
        "calibration_s": rows[base]["calibration_s"] + time.perf_counter() - start,
        "decode_tok_s": bench_decode(p, out)["decode_tok_s"],
        "fallback_layers": 0,
        "within_budget": int(bool(fits)),
        "options": {"base": base, "int8_blocks": chosen["blocks"]},
    }
    return {"row": row, "frontier": frontier, "sensitivity": scores, "base": base}


def _save(model: Any, p: TollgateConf, base: str, blocks: list[int], seconds: float) -> Path:
    layers = {n: m.kind for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    report = QuantReport("mixed", {"base": base, "high": HIGH, "int8_blocks": blocks}, layers, quantize_s=seconds)
    report.linear_bytes = linear_bytes(model)
    return save_quantized(model, report, Path(p.model.path), checkpoint(p, "mixed"))
