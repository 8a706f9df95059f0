"""Model classes by HF architecture name: the Llama family shares one generic decoder."""

from __future__ import annotations

from engine.config import SUPPORTED_ARCHITECTURES, ModelConfig
from engine.models.linear import use_cpu_kernels
from engine.models.llama import LlamaForCausalLM

__all__ = ["MODEL_CLASSES", "LlamaForCausalLM", "build_model", "use_cpu_kernels"]

MODEL_CLASSES = dict.fromkeys(SUPPORTED_ARCHITECTURES, LlamaForCausalLM)


def build_model(cfg: ModelConfig, max_positions: int | None = None) -> LlamaForCausalLM:
    """The decoder class for the config's architecture."""
    return MODEL_CLASSES[cfg.architecture](cfg, max_positions)
