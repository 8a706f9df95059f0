"""Calibration data: token windows from a text, and per-layer input statistics gathered with forward hooks.

GPTQ needs each layer's input Hessian H = Σ x xᵀ, AWQ its mean absolute input per channel (and H to score a
scaling by the layer's output error, ‖ΔW X‖² = Σ_rows ΔW H ΔWᵀ). One pass over the fp32 model fills both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.attention import AttentionMetadata
from engine.progress import progress
from engine.quant.base import QuantizationError, QuantStrategy
from engine.quant.calibration_mix import mix_batches

DEFAULT_CALIBRATION = "data/calibration/mix.yaml"  # prose (wikitext-2 valid), code and dialogue; test: evaluation


@dataclass
class LayerStats:
    """Sums over every calibration token that reached one Linear."""

    hessian: torch.Tensor  # Σ x xᵀ, (in, in)
    abs_sum: torch.Tensor  # Σ |x|, (in,)
    tokens: int = 0

    @property
    def mean_hessian(self) -> torch.Tensor:
        """H / tokens (the scale GPTQ's damping is relative to)."""
        return self.hessian / max(self.tokens, 1)

    @property
    def mean_abs(self) -> torch.Tensor:
        """Mean |x| per input channel."""
        return self.abs_sum / max(self.tokens, 1)

    def check(self, name: str) -> None:
        """Raise when the statistics cannot be used (no tokens, NaN or Inf from corrupt data)."""
        if self.tokens == 0:
            raise QuantizationError(f"{name}: no calibration tokens reached this layer")
        if not bool(torch.isfinite(self.hessian).all()):
            raise QuantizationError(f"{name}: calibration activations contain NaN or Inf")


def text_batches(tokenizer: Any, text_path: str | Path, tokens: int, seq_len: int = 512) -> list[list[int]]:
    """`tokens` tokens of a text or a calibration mix (`engine.quant.calibration_mix`), in windows of `seq_len`."""
    return mix_batches(tokenizer, text_path, tokens, seq_len)


def calibration_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers calibration-based strategies quantize (the decoder's; the head is handled apart)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"}


def check_batches(model: nn.Module, batches: list[list[int]]) -> list[list[int]]:
    """The non-empty batches; QuantizationError when there are none or a token id is outside the vocabulary."""
    batches = [b for b in batches if b]
    if not batches:
        raise QuantizationError("calibration data is empty")
    vocab = model.config.vocab_size
    bad = [t for b in batches for t in b if not 0 <= t < vocab]
    if bad:
        raise QuantizationError(
            f"calibration data is corrupt: token id {bad[0]} outside the vocabulary (0..{vocab - 1})"
        )
    return batches


@contextmanager
def recording(layers: dict[str, nn.Linear]) -> Iterator[dict[str, LayerStats]]:
    """Sum each layer's input statistics over every forward run inside the block."""
    stats = {
        name: LayerStats(torch.zeros(m.in_features, m.in_features), torch.zeros(m.in_features))
        for name, m in layers.items()
    }

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).float()
            s = stats[name]
            s.hessian.addmm_(x.t(), x)
            s.abs_sum.add_(x.abs().sum(0))
            s.tokens += x.shape[0]

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()  # not inference_mode: the sums stay ordinary tensors that strategies may edit later
def collect_stats(model: nn.Module, batches: list[list[int]]) -> dict[str, LayerStats]:
    """Run the fp32 model over the batches and sum each Linear's input statistics."""
    batches = check_batches(model, batches)
    device = next(model.parameters()).device
    with recording(calibration_layers(model)) as stats:
        for batch in progress(batches, desc="calibrate", unit="batch", leave=False):
            ids = torch.tensor(batch, device=device)
            model(ids, torch.arange(len(batch), device=device), AttentionMetadata.no_cache([len(batch)]))
    return stats


class CalibratedStrategy(QuantStrategy):
    """Base of the strategies that quantize from input statistics (GPTQ, AWQ)."""

    needs_calibration = True

    def __init__(self) -> None:
        self.stats: dict[str, LayerStats] = {}

    def calibrate(self, model: nn.Module, batches: list[list[int]]) -> None:
        """Input Hessian and mean |x| of every decoder Linear."""
        self.stats = collect_stats(model, batches)

    def layer_stats(self, name: str) -> LayerStats:
        """A layer's usable statistics, or `QuantizationError` (the layer then stays fp32)."""
        if name not in self.stats:
            raise QuantizationError(f"{name}: no calibration statistics (was `calibrate` run on this model?)")
        self.stats[name].check(name)
        return self.stats[name]
