"""Quantization: strategy plugins (int8, int4, gptq, awq, bitnet, and entry-point plugins), quantized Linear
layers with fast CPU kernels, per-layer fp32 fallback, quantized checkpoints and a strategy auto-selector.

Callers outside the package use these names; its modules are its own business.
"""

from engine.quant.apply import QuantReport, linear_bytes, quantize_loaded, quantize_model
from engine.quant.base import QuantizationError, QuantStrategy
from engine.quant.calibration import DEFAULT_CALIBRATION, calibration_layers
from engine.quant.checkpoint import is_quantized_checkpoint, load_quantized, save_quantized
from engine.quant.linear import QuantLinear
from engine.quant.registry import BUILT_IN, available_strategies, get_strategy, parse_option, register_strategy
from engine.quant.select import Limits, Selection, from_metrics, select

__all__ = [
    "BUILT_IN",
    "DEFAULT_CALIBRATION",
    "Limits",
    "QuantLinear",
    "QuantReport",
    "QuantStrategy",
    "QuantizationError",
    "Selection",
    "available_strategies",
    "calibration_layers",
    "from_metrics",
    "get_strategy",
    "is_quantized_checkpoint",
    "linear_bytes",
    "load_quantized",
    "parse_option",
    "quantize_loaded",
    "quantize_model",
    "register_strategy",
    "save_quantized",
    "select",
]
