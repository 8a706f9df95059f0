"""LoRA adapters served per request, as vLLM does: one forward serves rows with different adapters.

Adapters arrive in peft's standard format (adapter_config.json + adapter_model.safetensors, HF module names).
Each adapted layer keeps `max_loras` slots of stacked A and B matrices; the fused q/k/v and gate/up layers hold
each part's A side by side and its B block-diagonally, so one matmul pair serves all three (or two) parts. A
step's rows are grouped into segments by adapter (punica's SGMV idea, written with torch matmuls): for each
adapter present in the batch, one `x[rows] @ A^T @ B^T` added to the base output. Rows without an adapter cost
nothing. Adapters load into slots on demand and the least recently used one not in the batch is evicted.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from engine.config import ModelConfig
from engine.errors import ParameterError

# HF module name -> (engine module, part within the fused layer)
PARTS = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "o_proj": ("o_proj", 0),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
    "down_proj": ("down_proj", 0),
}
KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])\.weight$")
UNSUPPORTED = {"use_dora": "DoRA", "fan_in_fan_out": "fan_in_fan_out", "modules_to_save": "modules_to_save"}


class AdapterError(ValueError):
    """An adapter that cannot be served; says which file and why."""


def part_sizes(cfg: ModelConfig) -> dict[str, list[int]]:
    """Output rows of each part of the engine's (possibly fused) layers."""
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    return {
        "qkv_proj": [q, kv, kv],
        "o_proj": [cfg.hidden_size],
        "gate_up_proj": [cfg.intermediate_size] * 2,
        "down_proj": [cfg.hidden_size],
    }


@dataclass
class Adapter:
    """An adapter's matrices keyed by (layer, engine module, part): (A, B scaled by alpha/r)."""

    name: str
    path: str
    rank: int
    weights: dict[tuple[int, str, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def _config(path: Path) -> dict:
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{path}: no readable adapter_config.json ({exc})") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{path}: peft_type {config.get('peft_type')!r} is not LORA")
    for key, what in UNSUPPORTED.items():
        if config.get(key):
            raise AdapterError(f"{path}: {what} adapters are not supported by the engine")
    if config.get("bias", "none") != "none" or config.get("alpha_pattern"):
        raise AdapterError(f"{path}: LoRA biases and alpha_pattern are not supported by the engine")
    return config


def read_adapter(name: str, path: str | Path, cfg: ModelConfig, max_rank: int) -> Adapter:
    """Map a peft adapter onto the engine's layers; AdapterError on anything the engine cannot serve."""
    path = Path(path)
    config = _config(path)
    try:
        tensors = load_file(str(path / "adapter_model.safetensors"))
    except OSError as exc:
        raise AdapterError(f"{path}: no readable adapter_model.safetensors ({exc})") from None
    pairs: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        match = KEY.search(key)
        if match is None or match.group(2) not in PARTS or int(match.group(1)) >= cfg.num_hidden_layers:
            raise AdapterError(f"{path}: weight {key!r} is not a LoRA matrix of a layer the engine adapts")
        pairs.setdefault((int(match.group(1)), match.group(2)), {})[match.group(3)] = value.float()
    adapter = Adapter(name, str(path), 0)
    alpha = config.get("lora_alpha", 8)
    for (layer, hf_name), ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise AdapterError(f"{path}: layer {layer} {hf_name} lacks its lora_A or lora_B")
        a, b = ab["A"], ab["B"]
        rank = a.shape[0]
        if b.shape[1] != rank or rank > max_rank:
            raise AdapterError(f"{path}: {hf_name} has rank {rank}; the server allows up to {max_rank}")
        scale = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        module, part = PARTS[hf_name]
        adapter.weights[(layer, module, part)] = (a, b * scale)
        adapter.rank = max(adapter.rank, rank)
    if not adapter.weights:
        raise AdapterError(f"{path}: the adapter has no LoRA weights")
    return adapter


class LoraBatch:
    """The current step's segments, shared by every adapted layer: (slot, token rows or None for all rows)."""

    def __init__(self) -> None:
        self.segments: list[tuple[int, torch.Tensor | None]] = []


class LoraLinear(nn.Module):
    """A base layer plus `max_loras` LoRA slots; adds each segment's low-rank update to its rows."""

    def __init__(self, base: nn.Module, parts: list[int], max_loras: int, max_rank: int, batch: LoraBatch) -> None:
        super().__init__()
        self.base, self.parts, self.max_rank, self.batch = base, parts, max_rank, batch
        width = len(parts) * max_rank
        in_features = base.in_features
        self.register_buffer("lora_a", torch.zeros(max_loras, width, in_features))
        self.register_buffer("lora_b", torch.zeros(max_loras, sum(parts), width))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    def load_slot(self, slot: int, weights: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Put one adapter's parts into a slot (parts it does not adapt stay zero)."""
        self.lora_a[slot].zero_()
        self.lora_b[slot].zero_()
        rows = 0
        for part, size in enumerate(self.parts):
            if part in weights:
                a, b = weights[part]
                if a.shape[1] != self.in_features or b.shape[0] != size:
                    raise AdapterError(f"LoRA shapes {tuple(a.shape)}, {tuple(b.shape)} do not fit this model")
                cols = slice(part * self.max_rank, part * self.max_rank + a.shape[0])
                self.lora_a[slot, cols] = a
                self.lora_b[slot, rows : rows + size, cols] = b
            rows += size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Base output plus, per segment, that adapter's update on its rows."""
        y = self.base(x)
        for slot, rows in self.batch.segments:
            a, b = self.lora_a[slot], self.lora_b[slot]
            y = y + x @ a.T @ b.T if rows is None else y.index_add(0, rows, x.index_select(0, rows) @ a.T @ b.T)
        return y


class LoraManager:
    """Registered adapters (name -> path), the slots they occupy (LRU order) and the step's segments."""

    def __init__(self, model: nn.Module, max_loras: int, max_rank: int) -> None:
        if max_loras < 1 or max_rank < 1:
            raise ValueError("max_loras and max_lora_rank must be >= 1")
        self.config: ModelConfig = model.config
        self.max_loras, self.max_rank = max_loras, max_rank
        self.paths: dict[str, str] = {}
        self.slots: OrderedDict[str, int] = OrderedDict()
        self.batch = LoraBatch()
        self.loads = 0
        self._lock = threading.Lock()
        if self.config.spec.mlp != "gated":
            raise ValueError(f"LoRA serving needs a gated-MLP architecture; {self.config.architecture} is not one")
        sizes = part_sizes(self.config)
        self.layers: dict[tuple[int, str], LoraLinear] = {}
        for index, layer in enumerate(model.layers):
            for module, parts in sizes.items():
                wrapped = LoraLinear(getattr(layer, module), parts, max_loras, max_rank, self.batch)
                setattr(layer, module, wrapped)
                self.layers[(index, module)] = wrapped

    def register(self, name: str, path: str | Path) -> None:
        """Make an adapter servable under `name`; its files are checked now, its weights load on first use."""
        if self.paths.get(name, str(path)) != str(path):  # cached KV blocks are keyed by the name
            raise AdapterError(f"adapter name {name!r} is already registered for {self.paths[name]}")
        read_adapter(name, path, self.config, self.max_rank)
        with self._lock:
            self.paths[name] = str(path)

    def check(self, name: str | None) -> None:
        """ParameterError unless `name` is None or a registered adapter."""
        if name is not None and name not in self.paths:
            raise ParameterError("model", f"unknown LoRA adapter {name!r}", "model_not_found")

    def _load(self, name: str, keep: set[str]) -> int:
        if len(self.slots) >= self.max_loras:
            victim = next(n for n in self.slots if n not in keep)
            slot = self.slots.pop(victim)
        else:
            slot = next(s for s in range(self.max_loras) if s not in self.slots.values())
        adapter = read_adapter(name, self.paths[name], self.config, self.max_rank)
        for (index, module), layer in self.layers.items():
            layer.load_slot(slot, {p: w for (i, m, p), w in adapter.weights.items() if i == index and m == module})
        self.slots[name] = slot
        self.loads += 1
        return slot

    def use(self, name: str | None) -> None:
        """Every row of the next forwards on one adapter (or none): scoring and evaluation without a scheduler."""
        self.prepare([] if name is None else [(name, 0, 1)])
        if name is not None:
            self.batch.segments = [(self.slots[name], None)]

    def prepare(self, rows: list[tuple[str | None, int, int]]) -> None:
        """Segments for a step from (adapter, first token row, row count) per sequence; loads what is missing."""
        names = {name for name, _, _ in rows if name is not None}
        if len(names) > self.max_loras:
            raise RuntimeError(f"{len(names)} adapters in one step, but max_loras is {self.max_loras}")
        with self._lock:
            for name in names:
                if name not in self.slots:
                    self._load(name, names)
                self.slots.move_to_end(name)
            slots = {name: self.slots[name] for name in names}
        total = sum(count for _, _, count in rows)
        segments: dict[str, list[torch.Tensor]] = {}
        for name, start, count in rows:
            if name is not None:
                segments.setdefault(name, []).append(torch.arange(start, start + count))
        self.batch.segments = [
            (slots[name], None if sum(map(len, parts)) == total else torch.cat(parts))
            for name, parts in segments.items()
        ]
