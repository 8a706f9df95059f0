"""Quantize a loaded model layer by layer; a layer that fails stays fp32 with a warning, and is counted."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.quant.base import QuantizationError, QuantStrategy
from engine.quant.calibration import text_batches
from engine.quant.linear import QuantLinear
from engine.quant.registry import get_strategy
from engine.quant.rtn import Int8Strategy

log = logging.getLogger(__name__)
HEAD = "lm_head"


@dataclass
class QuantReport:
    """What happened to each layer, how long it took and how many weight bytes a step now reads."""

    strategy: str
    options: dict[str, Any]
    quantized: dict[str, str] = field(default_factory=dict)  # layer -> kind
    fallback: dict[str, str] = field(default_factory=dict)  # layer -> why it stayed fp32
    calibration_s: float = 0.0
    quantize_s: float = 0.0
    fp32_linear_bytes: int = 0
    linear_bytes: int = 0

    def summary(self) -> dict[str, Any]:
        """Flat numbers for metrics files."""
        return {
            "strategy": self.strategy,
            "layers_quantized": len(self.quantized),
            "fallback_layers": len(self.fallback),
            "calibration_s": self.calibration_s,
            "quantize_s": self.quantize_s,
            "linear_mb": self.linear_bytes / 2**20,
            "fp32_linear_mb": self.fp32_linear_bytes / 2**20,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, for quantization.json."""
        return asdict(self)


def relative_error(layer: QuantLinear, weight: torch.Tensor) -> float:
    """‖W − dequant(Wq)‖ / ‖W‖ of the effective weight."""
    w = weight.detach().float()
    return float((layer.dequantize() - w).norm() / w.norm().clamp(min=1e-12))


def check_layer(name: str, layer: QuantLinear, weight: torch.Tensor, bound: float) -> None:
    """Raise `QuantizationError` on NaN/Inf or an error above the strategy's bound."""
    for key, t in layer.tensors().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise QuantizationError(f"{name}: quantized {key} contains NaN or Inf")
    err = relative_error(layer, weight)
    if not err <= bound:
        raise QuantizationError(f"{name}: relative weight error {err:.3f} is above the bound {bound}")


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every fp32 Linear of the model, decoder first, the head last."""
    return [(n, m) for n, m in model.named_modules() if type(m) is nn.Linear]


def _calibrate(model: nn.Module, strategy: QuantStrategy, batches: list[list[int]]) -> str | None:
    """Run the strategy's calibration; the reason it failed (every calibrated layer then stays fp32), or None."""
    if not strategy.needs_calibration:
        return None
    try:
        strategy.calibrate(model, batches)
    except QuantizationError as exc:
        failure = f"calibration failed: {exc}"
        log.warning("%s %s: every layer stays fp32", strategy.name, failure)
        return failure
    return None


def _quantize_layer(name: str, linear: nn.Linear, strategy: QuantStrategy) -> QuantLinear:
    """The checked quantized layer; raises `QuantizationError` (or a torch error) when it must stay fp32."""
    layer = strategy.quantize(name, linear)
    check_layer(name, layer, linear.weight, strategy.max_rel_error)
    return layer


def linear_bytes(model: nn.Module) -> int:
    """Weight bytes of every Linear, quantized or not."""
    return sum(
        m.weight_bytes if isinstance(m, QuantLinear) else m.weight.numel() * 4
        for m in model.modules()
        if isinstance(m, QuantLinear) or type(m) is nn.Linear
    )


def quantize_model(
    model: nn.Module, strategy: QuantStrategy, batches: list[list[int]] | None = None, head: str = "int8"
) -> QuantReport:
    """Replace every Linear by the strategy's quantized layer (the head by int8 unless head="none")."""
    report = QuantReport(strategy.name, strategy.options(), fp32_linear_bytes=linear_bytes(model))
    layers = linear_layers(model)
    start = time.perf_counter()
    calibration_failure = _calibrate(model, strategy, batches or [])
    report.calibration_s = time.perf_counter() - start
    chosen = {name: strategy for name, _ in layers}
    if head == "int8":
        chosen[HEAD] = Int8Strategy()
    else:
        chosen.pop(HEAD, None)
    start = time.perf_counter()
    for name, linear in layers:
        if name not in chosen:
            continue
        if calibration_failure and chosen[name] is strategy:
            report.fallback[name] = calibration_failure
            continue
        try:
            layer = _quantize_layer(name, linear, chosen[name])
        except (QuantizationError, RuntimeError, ValueError) as exc:
            report.fallback[name] = str(exc)
            log.warning("layer %s stays fp32 (%s failed): %s", name, chosen[name].name, exc)
            continue
        model.set_submodule(name, layer)
        report.quantized[name] = layer.kind
    report.quantize_s = time.perf_counter() - start
    report.linear_bytes = linear_bytes(model)
    if report.fallback:
        log.warning("%s: %d of %d layers stay fp32", strategy.name, len(report.fallback), len(layers))
    return report


def quantize_loaded(
    model: nn.Module,
    tokenizer: Any,
    name: str,
    options: dict[str, Any] | None = None,
    calibration_text: str | Path | None = None,
    calibration_tokens: int = 4096,
) -> QuantReport:
    """Quantize a freshly loaded fp32 model by strategy name, reading calibration tokens when it needs them."""
    strategy = get_strategy(name, **(options or {}))
    batches: list[list[int]] = []
    if strategy.needs_calibration:
        if calibration_text is None:
            raise ValueError(f"quantization strategy {name!r} needs calibration text (calibration_text=PATH)")
        batches = text_batches(tokenizer, calibration_text, calibration_tokens)
    return quantize_model(model, strategy, batches)
