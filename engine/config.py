"""Model and engine configuration: one place that turns an HF `config.json` into the decoder's settings.

transformers' own config class for the checkpoint's `model_type` reads the file first, so renamed keys (GPT-2's
`n_embd`), defaults a file omits and derived fields (`layer_types`) are exactly what transformers would use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.architectures import ARCHITECTURES, ArchSpec
from engine.errors import CheckpointError

SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)
EPS_KEYS = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_epsilon", "norm_eps")
UNSUPPORTED_OPTIONS = {"qk_layernorm": False, "clip_qkv": None, "scale_attn_by_inverse_layer_idx": False}
ACT_KEYS = ("hidden_activation", "hidden_act", "activation_function")


def _architecture(cfg: dict[str, Any], source: str) -> str:
    archs = cfg.get("architectures") or []
    arch = next((a for a in archs if a in ARCHITECTURES), None)
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
    if any(isinstance(v, dict) for v in params.values()):  # per layer type (Gemma 3): each read by engine.models.rope
        return None
    return dict(params) if params.get("rope_type", "default") != "default" else None


def hf_config(cfg: dict[str, Any], spec: ArchSpec) -> Any:
    """transformers' config object for this checkpoint (local classes only; nothing is downloaded)."""
    from transformers import AutoConfig

    raw = {k: v for k, v in cfg.items() if k != "model_type"}
    return AutoConfig.for_model(cfg.get("model_type") or spec.model_type, **raw)


def _first(hf: Any, keys: tuple[str, ...], default: Any) -> Any:
    return next((getattr(hf, k) for k in keys if getattr(hf, k, None) is not None), default)


def _rotary_dim(hf: Any, spec: ArchSpec, head_dim: int) -> int:
    if spec.positions != "rope":
        return 0
    params = hf.rope_parameters if isinstance(getattr(hf, "rope_parameters", None), dict) else {}
    factor = params.get("partial_rotary_factor") or getattr(hf, "partial_rotary_factor", None) or 1.0
    return int(head_dim * factor)


def _layer_windows(hf: Any, layers: int) -> tuple[int | None, ...]:
    """Each layer's sliding window (None = full attention), as transformers applies them."""
    window = getattr(hf, "sliding_window", None)
    types = getattr(hf, "layer_types", None)
    if types:
        return tuple(window if t == "sliding_attention" else None for t in types)
    slides = window and getattr(hf, "use_sliding_window", True)
    return (window if slides else None,) * layers


def _parallel(hf: Any, spec: ArchSpec) -> str | None:
    """The spec's parallel residual, unless the config switches it (`use_parallel_residual`: NeoX, StableLM)."""
    switch = getattr(hf, "use_parallel_residual", None)
    if switch is None:
        return spec.parallel
    return (spec.parallel or "shared") if switch else None


def _check_options(hf: Any) -> None:
    """Refuse config options the decoder does not implement, rather than compute something else."""
    for key, off in UNSUPPORTED_OPTIONS.items():
        if getattr(hf, key, off) not in (off, None):
            raise ValueError(f"option {key}={getattr(hf, key)!r} is not supported")


def _scales(hf: Any, spec: ArchSpec, head_dim: int) -> dict[str, Any]:
    """Multipliers and soft-caps (Gemma, Granite); 1 and None where the family has none."""
    embed = float(hf.hidden_size) ** 0.5 if spec.embed_scale_sqrt else float(getattr(hf, "embedding_multiplier", 1.0))
    return {
        "attention_scale": _attention_scale(hf, head_dim),
        "attention_softcap": getattr(hf, "attn_logit_softcapping", None),
        "final_softcap": getattr(hf, "final_logit_softcapping", None),
        "embedding_scale": embed,
        "residual_scale": float(getattr(hf, "residual_multiplier", 1.0)),
        "logits_scale": 1.0 / float(getattr(hf, "logits_scaling", 1.0)),
    }


def _experts(hf: Any, spec: ArchSpec) -> dict[str, Any]:
    """Routed-expert sizes (Mixtral names them `num_local_experts`, Qwen-MoE and OLMoE `num_experts`)."""
    if spec.mlp != "moe":
        return {}
    return {
        "num_experts": int(_first(hf, ("num_local_experts", "num_experts"), 0)),
        "experts_per_token": int(hf.num_experts_per_tok),
        "moe_intermediate_size": int(_first(hf, ("moe_intermediate_size", "intermediate_size"), 0)),
        "normalize_expert_weights": bool(getattr(hf, "norm_topk_prob", True)),
    }


def _attention_scale(hf: Any, head_dim: int) -> float:
    if getattr(hf, "attention_multiplier", None) is not None:  # Granite
        return float(hf.attention_multiplier)
    if getattr(hf, "query_pre_attn_scalar", None) is not None:  # Gemma 2/3
        return float(hf.query_pre_attn_scalar) ** -0.5
    return head_dim**-0.5


@dataclass(frozen=True)
class ModelConfig:
    """Settings of the generic decoder, read from an HF `config.json` through transformers' config class."""

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
    sliding_window: int | None = None  # when every layer slides by the same window (Mistral): the cache's window
    hidden_act: str = "silu"
    parallel_residual: str | None = None  # shared (one norm feeds both) | separate (GPT-NeoX)
    rotary_dim: int = 0  # leading dims of each head that rotate; 0 = no rotary (learned positions)
    layer_windows: tuple[int | None, ...] = ()  # per-layer window when layers differ (Gemma 2/3)
    layer_types: tuple[str, ...] = ()
    rope_layers: tuple[bool, ...] = ()  # False: this layer has no rotary at all (SmolLM3's NoPE layers)
    attention_scale: float = 0.0
    attention_softcap: float | None = None
    final_softcap: float | None = None
    embedding_scale: float = 1.0
    residual_scale: float = 1.0
    logits_scale: float = 1.0
    o_bias: bool = False
    mlp_bias: bool = False
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    normalize_expert_weights: bool = True
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def spec(self) -> ArchSpec:
        """How this architecture wires its blocks (engine.architectures)."""
        return ARCHITECTURES[self.architecture]

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Parse an HF config dict; errors name `source` and the key at fault."""
        arch = _architecture(cfg, source)
        spec = ARCHITECTURES[arch]
        try:
            hf = hf_config(cfg, spec)
            _check_options(hf)
            heads, hidden = int(hf.num_attention_heads), int(hf.hidden_size)
            head_dim = int(getattr(hf, "head_dim", None) or hidden // heads)
            layers = int(hf.num_hidden_layers)
            windows = _layer_windows(hf, layers)
            uniform = len(set(windows)) == 1
            rope_params = cfg.get("rope_parameters") or {}
            return cls(
                architecture=arch,
                vocab_size=int(hf.vocab_size),
                hidden_size=hidden,
                intermediate_size=int(_first(hf, ("intermediate_size", "n_inner"), 4 * hidden)),
                num_hidden_layers=layers,
                num_attention_heads=heads,
                num_key_value_heads=int(getattr(hf, "num_key_value_heads", None) or heads),
                head_dim=head_dim,
                max_position_embeddings=int(getattr(hf, "max_position_embeddings", None) or 2048),
                rms_norm_eps=float(_first(hf, EPS_KEYS, spec.default_eps)),
                rope_theta=float(cfg.get("rope_theta", rope_params.get("rope_theta", 10000.0))),
                rope_scaling=_rope_scaling(cfg),
                attention_bias=spec.qkv_bias(hf),
                tie_word_embeddings=bool(hf.tie_word_embeddings),
                eos_token_ids=_eos_ids(cfg.get("eos_token_id")),
                bos_token_id=cfg.get("bos_token_id"),
                sliding_window=windows[0] if uniform else None,
                hidden_act=str(_first(hf, ACT_KEYS, "silu")),
                parallel_residual=_parallel(hf, spec),
                rotary_dim=_rotary_dim(hf, spec, head_dim),
                layer_windows=() if uniform else windows,
                layer_types=tuple(getattr(hf, "layer_types", None) or ()),
                rope_layers=tuple(bool(x) for x in getattr(hf, "no_rope_layers", None) or ()),
                o_bias=spec.o_bias(hf),
                mlp_bias=spec.mlp_bias(hf),
                raw=dict(cfg),
                **_scales(hf, spec, head_dim),
                **_experts(hf, spec),
            )
        except KeyError as exc:
            raise CheckpointError(source, f"missing required key {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
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
