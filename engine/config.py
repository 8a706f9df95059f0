"""Model and engine configuration: one place that turns an HF `config.json` into the decoder's settings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import CheckpointError

# Architectures the generic decoder covers, and the per-family defaults that config.json may omit.
SUPPORTED_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "LlamaForCausalLM": {"attention_bias": False},
    "MistralForCausalLM": {"attention_bias": False},
    "Qwen2ForCausalLM": {"attention_bias": True},
}


def _architecture(cfg: dict[str, Any], source: str) -> str:
    archs = cfg.get("architectures") or []
    arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
        supported = ", ".join(SUPPORTED_ARCHITECTURES)
        raise CheckpointError(source, f"unknown architecture {archs or '(none given)'}; supported: {supported}")
    return arch


def _eos_ids(eos: Any) -> tuple[int, ...]:
    if eos is None:
        return ()
    return tuple(int(e) for e in eos) if isinstance(eos, list) else (int(eos),)


def _rope_scaling(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """Older configs name it `rope_scaling`; transformers 5 writes `rope_parameters` with a `rope_type`."""
    params = cfg.get("rope_parameters") or {}
    if cfg.get("rope_scaling"):
        return cfg["rope_scaling"]
    return dict(params) if params.get("rope_type", "default") != "default" else None


@dataclass(frozen=True)
class ModelConfig:
    """Settings of the generic Llama-family decoder, read from an HF `config.json`."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    attention_bias: bool
    tie_word_embeddings: bool
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None
    sliding_window: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Parse an HF config dict; errors name `source` and the key at fault."""
        arch = _architecture(cfg, source)
        try:
            heads, hidden = int(cfg["num_attention_heads"]), int(cfg["hidden_size"])
            rope_params = cfg.get("rope_parameters") or {}
            return cls(
                architecture=arch,
                vocab_size=int(cfg["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(cfg["intermediate_size"]),
                num_hidden_layers=int(cfg["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or hidden // heads),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                rope_theta=float(cfg.get("rope_theta", rope_params.get("rope_theta", 10000.0))),
                rope_scaling=_rope_scaling(cfg),
                attention_bias=bool(cfg.get("attention_bias", SUPPORTED_ARCHITECTURES[arch]["attention_bias"])),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                eos_token_ids=_eos_ids(cfg.get("eos_token_id")),
                bos_token_id=cfg.get("bos_token_id"),
                sliding_window=cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None,
                raw=dict(cfg),
            )
        except KeyError as exc:
            raise CheckpointError(source, f"missing required key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise CheckpointError(source, f"invalid value: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """Parse a `config.json` file; a missing or malformed file raises CheckpointError."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(path, "file not found (a checkpoint needs config.json)")
        try:
            cfg = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(path, f"not valid JSON: {exc}") from None
        return cls.from_dict(cfg, source=str(path))

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """KV-cache bytes one token occupies across all layers (K and V)."""
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * dtype_bytes
