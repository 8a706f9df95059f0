"""Quantized checkpoints: a directory with config.json, the tokenizer, model.safetensors (engine-named
tensors, integer layouts for quantized layers) and quantization.json (strategy, options, per-layer facts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from engine.config import ModelConfig
from engine.errors import CheckpointError
from engine.models import build_model
from engine.models.decoder import DecoderForCausalLM
from engine.quant.apply import QuantReport
from engine.quant.linear import LAYER_KINDS, QuantLinear

QUANT_FILE = "quantization.json"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".json.partial")


def is_quantized_checkpoint(path: Path) -> bool:
    """Whether `path` is a directory written by `save_quantized`."""
    return (path / QUANT_FILE).is_file()


def save_quantized(model: DecoderForCausalLM, report: QuantReport, source: Path, out: Path) -> Path:
    """Write the quantized model next to a copy of the source checkpoint's config and tokenizer files."""
    if source.is_file():
        raise ValueError(f"{source}: quantize an HF-layout directory (convert GGUF files first)")
    out.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file() and not f.name.endswith(_WEIGHT_SUFFIXES) and f.name != QUANT_FILE:
            shutil.copy2(f, out / f.name)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            layers[name] = module.meta()
            tensors.update({f"{name}.{k}": t.contiguous() for k, t in module.tensors().items()})
    seen: set[int] = set()
    for key, t in model.state_dict().items():
        owner = key.rsplit(".", 1)[0]
        if owner in layers or t.data_ptr() in seen:  # quantized, or tied to a tensor already written
            continue
        seen.add(t.data_ptr())
        tensors[key] = t.contiguous()
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "tollgate-quant", "version": str(FORMAT_VERSION)})
    doc = {"format_version": FORMAT_VERSION, "source": str(source), "layers": layers, **report.to_dict()}
    (out / QUANT_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    return out


def load_quantized(path: Path, device: str | torch.device = "cpu") -> DecoderForCausalLM:
    """Rebuild a model saved by `save_quantized` (quantized layers ready for their kernels)."""
    try:
        doc = json.loads((path / QUANT_FILE).read_text())
        cfg = ModelConfig.from_file(path / "config.json")
        tensors = load_file(str(path / WEIGHTS), device=str(device))
    except (OSError, ValueError) as exc:
        raise CheckpointError(path, f"quantized checkpoint unreadable: {exc}") from None
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(path / QUANT_FILE, f"format_version {doc.get('format_version')} is not {FORMAT_VERSION}")
    with torch.device("meta"):
        model = build_model(cfg)
    model = model.to_empty(device=device)
    model.rebuild_derived()
    for name, meta in doc["layers"].items():
        kind = LAYER_KINDS.get(meta.get("kind", ""))
        prefix = name + "."
        # cloned: the kernels need their own aligned buffers (the mmapped file segfaults _weight_int8pack_mm)
        own = {k[len(prefix) :]: tensors.pop(k).clone() for k in list(tensors) if k.startswith(prefix)}
        if kind is None or not own:
            raise CheckpointError(path / WEIGHTS, f"layer {name}: kind {meta.get('kind')!r} or its tensors missing")
        model.set_submodule(name, kind.from_tensors(own, meta))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    missing = [k for k in missing if k not in tied and k.rsplit(".", 1)[0] not in doc["layers"]]
    if missing or unexpected:
        raise CheckpointError(path / WEIGHTS, f"missing tensors {missing[:5]}, unexpected {unexpected[:5]}")
    return model
