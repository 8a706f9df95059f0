"""Load a checkpoint (HF directory, GGUF file or quantized checkpoint) into the engine's decoder, with its tokenizer.

`load` is the one loading path every stage and tool takes: build the decoder, load the weights, quantize on
load if asked, then pick the CPU kernels. The loader depends on `engine.quant`, never the other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from engine.config import ModelConfig
from engine.errors import CheckpointError
from engine.loader.gguf_file import read_gguf, read_gguf_tokenizer
from engine.loader.hf import read_state_dict
from engine.models import DecoderForCausalLM, build_model, use_cpu_kernels
from engine.quant import QuantReport, is_quantized_checkpoint, load_quantized, quantize_loaded

__all__ = ["CheckpointError", "load", "load_model", "load_tokenizer"]


def load_tokenizer(path: str | Path) -> Any:
    """The checkpoint's tokenizer (an HF tokenizer directory, or the one inside a GGUF file)."""
    path = Path(path)
    if path.suffix == ".gguf":
        return read_gguf_tokenizer(path)
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise CheckpointError(path, "no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)")

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise CheckpointError(path, f"tokenizer could not be loaded: {exc}") from None


def load_model(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    cpu_kernels: bool = True,
) -> DecoderForCausalLM:
    """Build the decoder for a checkpoint and load its weights; every failure names the file at fault."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "checkpoint not found")
    if is_quantized_checkpoint(path):  # written by `python -m engine.quant quantize`: fp32 parts stay fp32
        model = load_quantized(path, device)
        return use_cpu_kernels(model).eval() if cpu_kernels else model.eval()
    if path.suffix == ".gguf":
        raw_config, state = read_gguf(path)
        cfg, weights_source = ModelConfig.from_dict(raw_config, str(path)), path
    else:
        cfg = ModelConfig.from_file(path / "config.json")
        state, weights_source = read_state_dict(path), path
    with torch.device("meta"):
        model = build_model(cfg)
    model = model.to_empty(device=device).to(dtype)
    model.rebuild_derived()
    try:
        model.load_hf_state_dict(state)  # copied tensor by tensor into the model's dtype
    except CheckpointError:
        raise
    except (KeyError, ValueError) as exc:
        raise CheckpointError(weights_source, str(exc.args[0])) from None
    return use_cpu_kernels(model).eval() if cpu_kernels else model.eval()


def load(
    path: str | Path,
    quant: str = "none",
    options: dict[str, Any] | None = None,
    calibration_text: str | Path | None = None,
    calibration_tokens: int = 4096,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[DecoderForCausalLM, Any, QuantReport | None]:
    """Model, tokenizer and quantization report for a checkpoint, quantized on load unless quant="none"."""
    model = load_model(path, dtype=dtype, device=device, cpu_kernels=quant == "none")
    tokenizer = load_tokenizer(path)
    if quant == "none":
        return model, tokenizer, None
    report = quantize_loaded(model, tokenizer, quant, options, calibration_text, calibration_tokens)
    return use_cpu_kernels(model), tokenizer, report  # fast kernels for the layers that stayed fp32
