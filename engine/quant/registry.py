"""Where strategies are found: the built-ins, `register_strategy` in code, and plugins of an entry-point group.

Third-party strategies join through the `tollgate.quant` entry-point group (`name = "package.module:Class"`),
looked up once, the first time a strategy is listed or asked for; a broken plugin is skipped with a warning.
"""

from __future__ import annotations

import argparse
import logging
from importlib.metadata import entry_points
from typing import Any

import yaml

from engine.quant.awq import AWQStrategy
from engine.quant.base import QuantStrategy
from engine.quant.bitnet import BitNetStrategy
from engine.quant.gptq import GPTQStrategy
from engine.quant.rtn import Int4Strategy, Int8Strategy

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "tollgate.quant"

BUILT_IN: dict[str, type[QuantStrategy]] = {
    cls.name: cls for cls in (Int8Strategy, Int4Strategy, GPTQStrategy, AWQStrategy, BitNetStrategy)
}
_REGISTRY: dict[str, type[QuantStrategy]] = dict(BUILT_IN)
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


def parse_option(text: str) -> tuple[str, Any]:
    """A command line's `--option key=value`, the value read as YAML (4 -> int, true -> bool)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option {text!r}: expected key=value")
    return key, yaml.safe_load(value)
