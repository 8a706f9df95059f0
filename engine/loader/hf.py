"""Read HF checkpoints: safetensors (single or sharded with an index) and PyTorch `.bin` files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from engine.errors import CheckpointError

WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise CheckpointError(path, f"corrupt or truncated safetensors file ({exc})") from None


def _read_bin(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, EOF); all mean "unreadable"
        raise CheckpointError(path, f"corrupt or truncated PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(path, f"expected a state dict, found {type(state).__name__}")
    return state


def _read_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(index, f"not a valid shard index ({exc})") from None
    return [index.parent / name for name in sorted(set(weight_map.values()))]


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """All weights of an HF checkpoint directory, whichever of the standard layouts it uses."""
    present = [name for name in WEIGHT_FILES if (directory / name).is_file()]
    if not present:
        raise CheckpointError(directory, f"no weights found (looked for {', '.join(WEIGHT_FILES)})")
    first = directory / present[0]
    reader = _read_safetensors if "safetensors" in first.name else _read_bin
    shards = _read_index(first) if first.name.endswith(".index.json") else [first]
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(reader(shard))
    return state
