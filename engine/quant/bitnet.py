"""BitNet b1.58 (Ma et al., 2024): ternary weights {-1, 0, +1} times the tensor's mean |w| (absmean),
with 8-bit activations. Meant for models trained that way; applied after training to an ordinary model it
destroys most of its quality (measured and reported by the `calibrate` stage, not hidden).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.quant.base import QuantStrategy
from engine.quant.linear import TernaryLinear
from engine.quant.rtn import bias_of


def absmean_ternary(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ternary codes, scale): round(clip(w / γ, -1, 1)) with γ = mean |w|; a tensor that already holds only
    {-c, 0, +c} (a BitNet-trained layer exported as dense weights) keeps c, so it round-trips exactly."""
    magnitudes = w.abs()[w != 0]
    if magnitudes.numel() and magnitudes.max() - magnitudes.min() <= 1e-6 * magnitudes.max():
        return torch.sign(w).to(torch.int8), magnitudes.max()
    gamma = w.abs().mean().clamp(min=1e-8)
    return torch.clamp(torch.round(w / gamma), -1, 1).to(torch.int8), gamma


class BitNetStrategy(QuantStrategy):
    """Absmean ternarisation of every Linear (no calibration)."""

    name = "bitnet"
    max_rel_error = 1.0  # ternarising a non-ternary tensor loses ~half its norm: only broken output is refused

    def quantize(self, name: str, linear: nn.Linear) -> TernaryLinear:
        """Ternary codes and the absmean scale."""
        codes, gamma = absmean_ternary(linear.weight.detach().float())
        return TernaryLinear(codes, gamma, bias_of(linear))
