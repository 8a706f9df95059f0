"""The generic decoder, built for any architecture in engine.architectures."""

from __future__ import annotations

from engine.config import ModelConfig
from engine.models.decoder import DecoderForCausalLM
from engine.models.linear import use_cpu_kernels

__all__ = ["DecoderForCausalLM", "build_model", "use_cpu_kernels"]


def build_model(cfg: ModelConfig, max_positions: int | None = None) -> DecoderForCausalLM:
    """The decoder for the config's architecture."""
    return DecoderForCausalLM(cfg, max_positions)
