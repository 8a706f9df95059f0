"""Quantization: strategy plugins (int8, int4, gptq, awq, bitnet, and entry-point plugins), quantized Linear
layers with fast CPU kernels, per-layer fp32 fallback, quantized checkpoints and a strategy auto-selector."""

from engine.quant.apply import QuantReport, quantize_loaded, quantize_model
from engine.quant.base import QuantizationError, QuantStrategy
from engine.quant.linear import QuantLinear
from engine.quant.registry import available_strategies, get_strategy, register_strategy

__all__ = [
    "QuantLinear",
    "QuantReport",
    "QuantStrategy",
    "QuantizationError",
    "available_strategies",
    "get_strategy",
    "quantize_loaded",
    "quantize_model",
    "register_strategy",
]
