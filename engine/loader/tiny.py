"""Tiny random-weight checkpoints of every supported architecture, built locally from transformers' own classes.

Committed as configs and a seed, not weights: `build_tiny(name, dir)` makes the same checkpoint on any machine
(no hub). Each one is small enough to check in a second, and its config turns on what its family changes (sliding
windows short enough to bite within 64 positions, soft-caps low enough to clip, multipliers far from 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

SEED = 0
# Shared by every tiny checkpoint; architectures with other key names (GPT-2) override them.
BASE: dict[str, Any] = {
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 256,
    "initializer_range": 0.1,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
}
GQA = {"num_key_value_heads": 2}
MOE = {"num_experts_per_tok": 2, **GQA}
WINDOW = 16  # below the 88 positions a parity run reaches
GEMMA = {"head_dim": 16, "query_pre_attn_scalar": 16, "tie_word_embeddings": True, **GQA}  # tied, as Gemma ships

# name -> (transformers model_type, config overrides)
TINY: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", GQA),
    "llama-bias-tied": ("llama", {**GQA, "attention_bias": True, "tie_word_embeddings": True}),
    "llama-mqa": ("llama", {"num_key_value_heads": 1}),
    "llama-rope-llama3": (
        "llama",
        {
            **GQA,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        },
    ),
    "llama-rope-yarn": (
        "llama",
        {
            **GQA,
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        },
    ),
    "llama-rope-linear": (
        "llama",
        {**GQA, "rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}},
    ),
    "mistral-sliding": ("mistral", {**GQA, "sliding_window": WINDOW}),
    "qwen2": ("qwen2", GQA),
    "helium": ("helium", {**GQA, "head_dim": 16}),
    "smollm3-nope": ("smollm3", {**GQA, "no_rope_layers": [1, 0]}),
    "granite": (
        "granite",
        {
            **GQA,
            "embedding_multiplier": 4.0,
            "residual_multiplier": 0.5,
            "attention_multiplier": 0.5,
            "logits_scaling": 2.0,
        },
    ),
    "qwen3": ("qwen3", {**GQA, "head_dim": 16}),
    "qwen3-moe": ("qwen3_moe", {**MOE, "head_dim": 16, "num_experts": 4, "moe_intermediate_size": 32}),
    "mixtral": ("mixtral", {**MOE, "num_local_experts": 4}),
    "olmoe": ("olmoe", {**MOE, "num_experts": 4}),
    "gemma": ("gemma", {**GQA, "head_dim": 16, "tie_word_embeddings": True}),
    "gemma2": (
        "gemma2",
        {**GEMMA, "sliding_window": WINDOW, "attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0},
    ),
    "gemma3": (
        "gemma3_text",
        {
            **GEMMA,
            "sliding_window": WINDOW,
            "layer_types": ["sliding_attention", "full_attention"],
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 2.0},
            },
        },
    ),
    "olmo": ("olmo", GQA),
    "olmo2": ("olmo2", GQA),
    "stablelm": ("stablelm", {**GQA, "use_qkv_bias": True}),
    "starcoder2-sliding": ("starcoder2", {**GQA, "sliding_window": WINDOW}),
    "phi3": ("phi3", GQA),
    "phi": ("phi", {"partial_rotary_factor": 0.5}),
    "gpt-neox": ("gpt_neox", {"rotary_pct": 0.25}),
    "gpt2": (
        "gpt2",
        {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256, "n_inner": 128, "tie_word_embeddings": True},
    ),
}
NOT_LLAMA_KEYS = {"gpt2": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                           "max_position_embeddings")}  # fmt: skip


def byte_tokenizer() -> Any:
    """A 256-token byte-level tokenizer: any text round-trips, and no vocabulary file is needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    byte = list(vocab)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=byte[1], eos_token=byte[2], pad_token=byte[0])


def tiny_config(name: str) -> Any:
    """transformers' config object of a tiny checkpoint."""
    from transformers import AutoConfig

    model_type, overrides = TINY[name]
    base = {k: v for k, v in BASE.items() if k not in NOT_LLAMA_KEYS.get(model_type, ())}
    return AutoConfig.for_model(model_type, **{**base, **overrides})


def build_tiny(name: str, directory: str | Path, seed: int = SEED) -> Path:
    """Save the tiny checkpoint `name` (random weights from `seed`, norms and biases randomised too)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    if name not in TINY:
        raise KeyError(f"no tiny checkpoint {name!r}; known: {', '.join(TINY)}")
    directory = Path(directory)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(name)).eval()
    with torch.no_grad():  # HF starts biases at 0 and norms at 1: randomise them so parity sees them
        for pname, param in model.named_parameters():
            if pname.endswith("bias") or "norm" in pname or "ln_" in pname:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(directory)
    byte_tokenizer().save_pretrained(directory)
    return directory
