"""The plugin interface every quantization strategy implements, and the registry that finds them.

A strategy turns one fp32 `nn.Linear` into a `QuantLinear`; strategies that need activations
(GPTQ, AWQ) get `calibrate(model, batches)` first. Third-party strategies join through the
`tollgate.quant` entry-point group (`name = "package.module:StrategyClass"`) or `register_strategy`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from typing import Any, ClassVar

from torch import nn

from engine.quant.linear import QuantLinear

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "tollgate.quant"


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


_REGISTRY: dict[str, type[QuantStrategy]] = {}
_loaded_entry_points = False


def register_strategy(cls: type[QuantStrategy]) -> type[QuantStrategy]:
    """Class decorator: make a strategy available by its `name`."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"quantization strategy {cls.name!r} is already registered by {existing.__module__}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_entry_points() -> None:
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register_strategy(ep.load())
        except Exception as exc:  # a broken plugin must not take the built-in strategies down with it
            log.warning("quantization plugin %s (%s) not loaded: %s", ep.name, ep.value, exc)


def available_strategies() -> list[str]:
    """Names of every registered strategy, built-in and plugins, plus "none"."""
    import engine.quant.strategies  # noqa: F401 (registers the built-in strategies)

    _load_entry_points()
    return ["none", *sorted(_REGISTRY)]


def get_strategy(name: str, **options: Any) -> QuantStrategy:
    """An instance of the named strategy; a clear error names the ones that exist."""
    names = available_strategies()
    if name not in _REGISTRY:
        raise ValueError(f"unknown quantization strategy {name!r}; available: {', '.join(names)}")
    try:
        return _REGISTRY[name](**options)
    except TypeError as exc:  # an option the strategy does not have
        raise ValueError(f"quantization strategy {name!r}: {exc}") from None
