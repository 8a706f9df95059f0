"""What each supported architecture changes in the one generic decoder, as data (vLLM's model files share layers;
here the differences are small enough to be flags).

An `ArchSpec` says how a family's block is wired (norm kind, where the norms sit, q/k norm, parallel residual,
gated or plain or routed MLP, learned or rotary positions) and how its checkpoint names map onto the decoder's
modules. Numbers (eps, multipliers, soft-caps, windows, rotary fraction) come from the checkpoint's own config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The decoder's names for one block's parts; a checkpoint's names are mapped onto these.
# q/k/v and gate/up are fused into one matmul each; `part` says which slice a checkpoint tensor fills.
LLAMA_LAYER = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "mlp_norm",
    "self_attn.q_proj": "qkv_proj:q",
    "self_attn.k_proj": "qkv_proj:k",
    "self_attn.v_proj": "qkv_proj:v",
    "self_attn.o_proj": "o_proj",
    "self_attn.q_norm": "q_norm",
    "self_attn.k_norm": "k_norm",
    "mlp.gate_proj": "gate_up_proj:gate",
    "mlp.up_proj": "gate_up_proj:up",
    "mlp.down_proj": "down_proj",
    "mlp.gate": "experts.router",
    "block_sparse_moe.gate": "experts.router",
    "mlp.experts.gate_up_proj": "experts.experts_gate_up",
    "mlp.experts.down_proj": "experts.experts_down",
}
LLAMA_TOP = {"embed_tokens": "embed_tokens", "norm": "norm", "lm_head": "lm_head"}


def _overlay(base: dict[str, str], **changes: str) -> dict[str, str]:
    """`base` with dotted names given as keyword names with `__` for `.`."""
    return {**base, **{k.replace("__", "."): v for k, v in changes.items()}}


SANDWICH_LAYER = _overlay(
    LLAMA_LAYER,
    post_attention_layernorm="attn_out_norm",
    pre_feedforward_layernorm="mlp_norm",
    post_feedforward_layernorm="mlp_out_norm",
)
POST_NORM_LAYER = _overlay(
    LLAMA_LAYER, post_attention_layernorm="attn_out_norm", post_feedforward_layernorm="mlp_out_norm"
)
PLAIN_MLP_LAYER = _overlay(LLAMA_LAYER, mlp__c_fc="up_proj", mlp__c_proj="down_proj")
PHI_LAYER = _overlay(LLAMA_LAYER, self_attn__dense="o_proj", mlp__fc1="up_proj", mlp__fc2="down_proj")
PHI3_LAYER = _overlay(LLAMA_LAYER, self_attn__qkv_proj="qkv_proj", mlp__gate_up_proj="gate_up_proj")
NEOX_LAYER = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "mlp_norm",
    "attention.query_key_value": "qkv_proj",
    "attention.dense": "o_proj",
    "mlp.dense_h_to_4h": "up_proj",
    "mlp.dense_4h_to_h": "down_proj",
}
GPT2_LAYER = {
    "ln_1": "attn_norm",
    "ln_2": "mlp_norm",
    "attn.c_attn": "qkv_proj",
    "attn.c_proj": "o_proj",
    "mlp.c_fc": "up_proj",
    "mlp.c_proj": "down_proj",
}


def _flag(key: str, default: bool) -> Callable[[Any], bool]:
    return lambda hf: bool(getattr(hf, key, None) if getattr(hf, key, None) is not None else default)


def _const(value: bool) -> Callable[[Any], bool]:
    return lambda hf: value


@dataclass(frozen=True)
class ArchSpec:
    """How one architecture's block differs from Llama's, and how its checkpoint is named."""

    family: str
    model_type: str
    norm: str = "rms"  # rms | layer (with bias) | layer-noparam (OLMo: no weight, no bias)
    norm_offset: float = 0.0  # Gemma scales by (1 + weight): folded into the weight at load
    norm_placement: str = "pre"  # pre | sandwich (Gemma 2/3: pre and post) | post (OLMo 2: after each sublayer)
    qk_norm: str | None = None  # head (per head, Qwen3/Gemma3) | full (the whole projection, OLMo 2/OLMoE)
    parallel: str | None = None  # shared (one norm: Phi) | separate (two norms: GPT-NeoX)
    mlp: str = "gated"  # gated (act(gate) * up) | plain (act(up)) | moe (routed gated experts)
    positions: str = "rope"  # rope | learned (GPT-2)
    embed_scale_sqrt: bool = False  # Gemma multiplies embeddings by sqrt(hidden)
    qkv_layout: str = "cat"  # how a fused checkpoint qkv is laid out: cat ([q; k; v]) | per-head (GPT-NeoX)
    rope_interleaved: bool = False  # rotary on adjacent pairs (GPT-J style): q/k rows are permuted at load
    conv1d: bool = False  # GPT-2 stores Linear weights transposed (its Conv1D)
    prefix: str = "model."  # where the checkpoint's decoder lives
    layers: str = "layers"
    layer_names: dict[str, str] = field(default_factory=lambda: LLAMA_LAYER)
    top_names: dict[str, str] = field(default_factory=lambda: LLAMA_TOP)
    qkv_bias: Callable[[Any], bool] = field(default_factory=lambda: _flag("attention_bias", False))
    o_bias: Callable[[Any], bool] = field(default_factory=lambda: _flag("attention_bias", False))
    mlp_bias: Callable[[Any], bool] = field(default_factory=lambda: _flag("mlp_bias", False))
    head_bias: bool = False  # Phi's lm_head has a bias
    default_eps: float = 1e-6  # when the config names none (OLMo's fixed 1e-5)


def _llama(model_type: str, **kw: Any) -> ArchSpec:
    return ArchSpec(family=kw.pop("family", "llama"), model_type=model_type, **kw)


_GEMMA = {"family": "gemma", "norm_offset": 1.0, "embed_scale_sqrt": True}
_BIASED = {"qkv_bias": _const(True), "o_bias": _const(True), "mlp_bias": _const(True)}

ARCHITECTURES: dict[str, ArchSpec] = {
    "LlamaForCausalLM": _llama("llama"),
    "MistralForCausalLM": _llama("mistral"),
    "Qwen2ForCausalLM": _llama("qwen2", qkv_bias=_const(True), o_bias=_const(False)),
    "HeliumForCausalLM": _llama("helium", rope_interleaved=True),
    "SmolLM3ForCausalLM": _llama("smollm3"),
    "GraniteForCausalLM": _llama("granite", family="granite"),
    "Qwen3ForCausalLM": _llama("qwen3", family="qwen3", qk_norm="head"),
    "Qwen3MoeForCausalLM": _llama("qwen3_moe", family="qwen3", qk_norm="head", mlp="moe"),
    "MixtralForCausalLM": _llama("mixtral", family="mixtral", mlp="moe"),
    "GemmaForCausalLM": _llama("gemma", **_GEMMA),
    "Gemma2ForCausalLM": _llama("gemma2", **_GEMMA, norm_placement="sandwich", layer_names=SANDWICH_LAYER),
    "Gemma3ForCausalLM": _llama(
        "gemma3_text", **_GEMMA, norm_placement="sandwich", qk_norm="head", layer_names=SANDWICH_LAYER
    ),
    "OlmoForCausalLM": _llama("olmo", family="olmo", norm="layer-noparam", default_eps=1e-5),
    "Olmo2ForCausalLM": _llama(
        "olmo2", family="olmo", norm_placement="post", qk_norm="full", layer_names=POST_NORM_LAYER
    ),
    "OlmoeForCausalLM": _llama("olmoe", family="olmo", qk_norm="full", mlp="moe"),
    "StableLmForCausalLM": _llama("stablelm", family="stablelm", norm="layer", qkv_bias=_flag("use_qkv_bias", False)),
    "Starcoder2ForCausalLM": _llama(
        "starcoder2",
        family="starcoder2",
        norm="layer",
        mlp="plain",
        layer_names=PLAIN_MLP_LAYER,
        qkv_bias=_flag("use_bias", True),
        o_bias=_flag("use_bias", True),
        mlp_bias=_flag("use_bias", True),
    ),
    "Phi3ForCausalLM": _llama("phi3", family="phi", layer_names=PHI3_LAYER, o_bias=_const(False)),
    "PhiForCausalLM": _llama(
        "phi",
        family="phi",
        norm="layer",
        parallel="shared",
        mlp="plain",
        layer_names=PHI_LAYER,
        top_names={**LLAMA_TOP, "final_layernorm": "norm"},
        head_bias=True,
        **_BIASED,
    ),
    "GPTNeoXForCausalLM": ArchSpec(
        family="gpt-neox",
        model_type="gpt_neox",
        norm="layer",
        parallel="separate",
        mlp="plain",
        qkv_layout="per-head",
        prefix="gpt_neox.",
        layer_names=NEOX_LAYER,
        top_names={
            "embed_in": "embed_tokens",
            "final_layer_norm": "norm",
            "embed_out": "lm_head",
            "lm_head": "lm_head",
        },
        qkv_bias=_flag("attention_bias", True),
        o_bias=_flag("attention_bias", True),
        mlp_bias=_const(True),
    ),
    "GPT2LMHeadModel": ArchSpec(
        family="gpt2",
        model_type="gpt2",
        norm="layer",
        mlp="plain",
        positions="learned",
        conv1d=True,
        prefix="transformer.",
        layers="h",
        layer_names=GPT2_LAYER,
        top_names={"wte": "embed_tokens", "wpe": "embed_positions", "ln_f": "norm", "lm_head": "lm_head"},
        **_BIASED,
    ),
}


def spec_for(architecture: str) -> ArchSpec:
    """The spec of an architecture `engine.config` has already accepted."""
    return ARCHITECTURES[architecture]
