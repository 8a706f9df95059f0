"""The plugin interface every quantization strategy implements (the registry is `engine.quant.registry`).

A strategy turns one fp32 `nn.Linear` into a `QuantLinear`; strategies that need activations
(GPTQ, AWQ) get `calibrate(model, batches)` first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import nn

from engine.quant.linear import QuantLinear


class QuantizationError(RuntimeError):
    """One layer (or the calibration data) cannot be quantized; the layer stays fp32."""


class QuantStrategy(ABC):
    """A quantization method: options in the constructor, `calibrate` (optional), then `quantize` per layer."""

    name: ClassVar[str]
    needs_calibration: ClassVar[bool] = False
    max_rel_error: ClassVar[float] = 0.5  # per-layer ||W - Wq|| / ||W|| above which the layer stays fp32

    def __init__(self, **options: Any) -> None:
        if options:
            raise ValueError(f"quantization strategy {self.name!r} takes no options, got {sorted(options)}")

    def options(self) -> dict[str, Any]:
        """The options this instance runs with (saved in the checkpoint's metadata)."""
        return {}

    def calibrate(self, model: nn.Module, batches: list[list[int]]) -> None:  # noqa: B027 (optional hook)
        """Collect what `quantize` needs from the model's activations on calibration token batches."""

    @abstractmethod
    def quantize(self, name: str, linear: nn.Linear) -> QuantLinear:
        """The quantized replacement for the fp32 layer `name`; raise `QuantizationError` when impossible."""
