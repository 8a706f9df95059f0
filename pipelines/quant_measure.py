"""One row of the calibrate stage's table: a strategy quantized, saved, compared with fp32 on every domain and
benchmarked; and the fp32 row every other one is compared with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from engine.loader import load_model, load_tokenizer
from engine.models import use_cpu_kernels
from engine.quant import linear_bytes, quantize_loaded, save_quantized
from pipelines.config import QuantConf, TollgateConf
from pipelines.quant_eval import Domain, accuracy, bench_decode, reference_row, set_references
from pipelines.quant_plans import checkpoint


@task(cache_policy=NO_CACHE)
def measure(p: TollgateConf, strategy: QuantConf, domains: list[Domain]) -> dict[str, Any]:
    """Quantize (timed), save, compare with fp32 on every domain and benchmark one strategy."""
    model = load_model(p.model.path, cpu_kernels=False)
    report = quantize_loaded(
        model,
        load_tokenizer(p.model.path),
        strategy.name,
        dict(strategy.options),
        p.data.calibration_text,
        p.profile.calibrate.calibration_tokens,
    )
    out = save_quantized(model, report, Path(p.model.path), checkpoint(p, strategy.name))
    quality = accuracy(use_cpu_kernels(model), domains, p.profile.calibrate.context)
    facts = report.summary()
    row = {
        **quality,
        "calibration_s": facts["calibration_s"] + facts["quantize_s"],  # the whole time to a quantized model
        "decode_tok_s": bench_decode(p, out)["decode_tok_s"],
        "weight_mb": facts["linear_mb"],
        "fallback_layers": facts["fallback_layers"],
        "layers_quantized": facts["layers_quantized"],
        "options": dict(strategy.options),
    }
    get_run_logger().info(
        "%s: worst-domain perplexity change %+.2f%%, KL %.4f, top-1 %.3f; %.1f tok/s, %.0f MB, %.1f s",
        strategy.name, row["accuracy_loss_pct"], row["kl_mean"], row["top1_agreement"],
        row["decode_tok_s"], row["weight_mb"], row["calibration_s"],
    )  # fmt: skip
    return row


def fp32_row(p: TollgateConf, domains: list[Domain]) -> dict[str, Any]:
    """The reference itself (zero loss, zero KL), its speed and size; fills every domain's reference."""
    fp32 = load_model(p.model.path, cpu_kernels=False)
    weight_mb = linear_bytes(fp32) / 2**20  # counted before the Linear layers become CPU kernels
    set_references(domains, use_cpu_kernels(fp32), p.profile.calibrate.context)
    quality = reference_row(domains)
    speed = bench_decode(p, Path(p.model.path))["decode_tok_s"]
    return {**quality, "calibration_s": 0.0, "decode_tok_s": speed, "weight_mb": weight_mb, "fallback_layers": 0}
