"""Round-to-nearest weight-only strategies: `int8` (per output channel) and `int4` (per group)."""

from __future__ import annotations

from typing import Any

from torch import nn

from engine.quant.base import QuantStrategy
from engine.quant.linear import Int4Linear, Int8Linear
from engine.quant.rounding import check_group_size, int8_scales, round_int8, rtn_int4


def bias_of(linear: nn.Linear) -> Any:
    """The layer's bias, detached (None without one)."""
    return None if linear.bias is None else linear.bias.detach().float().clone()


class Int8Strategy(QuantStrategy):
    """int8 weights with one scale per output channel (no calibration)."""

    name = "int8"
    max_rel_error = 0.05

    def __init__(self, activations: str = "bf16") -> None:
        if activations not in Int8Linear.ACTIVATIONS:
            raise ValueError(f"int8: activations must be one of {Int8Linear.ACTIVATIONS}, got {activations!r}")
        self.activations = activations

    def options(self) -> dict[str, Any]:
        """Activation precision of the kernel: bf16 (weight-only) or int8 (dynamic, VNNI)."""
        return {"activations": self.activations}

    def quantize(self, name: str, linear: nn.Linear) -> Int8Linear:
        """Symmetric per-row round-to-nearest."""
        w = linear.weight.detach().float()
        scales = int8_scales(w)
        return Int8Linear(round_int8(w, scales), scales, bias_of(linear), self.activations)


class Int4Strategy(QuantStrategy):
    """Weight-only int4, asymmetric per group of `group_size` input columns (no calibration)."""

    name = "int4"
    max_rel_error = 0.3

    def __init__(self, group_size: int = 64) -> None:
        check_group_size(group_size, group_size)
        self.group_size = group_size

    def options(self) -> dict[str, Any]:
        """The group size."""
        return {"group_size": self.group_size}

    def quantize(self, name: str, linear: nn.Linear) -> Int4Linear:
        """Group-wise round-to-nearest."""
        q, scale, zero = rtn_int4(linear.weight.detach().float(), self.group_size)
        return Int4Linear(q, scale, zero, self.group_size, bias_of(linear))
