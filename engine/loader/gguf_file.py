"""Read a GGUF file (via the `gguf` package) into an HF-style config, state dict and tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from transformers import AutoTokenizer

from engine.errors import CheckpointError

GGUF_MAGIC = b"GGUF"

# GGUF architecture → (HF architecture, HF model_type, q/k stored permuted for llama.cpp's rope layout)
ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama", True),
    "mistral": ("MistralForCausalLM", "mistral", True),
    "qwen2": ("Qwen2ForCausalLM", "qwen2", False),
}
# GGUF architectures read through transformers' own GGUF loader (its tensor and config mappings, its Gemma
# norm correction): checked on a real checkpoint (Gemma-3-270M Q4_K_M, the `models` stage's weekly profile).
VIA_TRANSFORMERS = {"gemma3": "Gemma3ForCausalLM"}
CONFIG_KEYS = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "vocab_size": "vocab_size",
}
TENSOR_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_norm": "post_attention_layernorm",
}


def _open(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise CheckpointError(path, f"not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, IndexError, OSError) as exc:
        raise CheckpointError(path, f"corrupt or truncated GGUF file ({exc})") from None


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def _hf_name(gguf_name: str) -> str:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{TENSOR_NAMES[parts[2]]}.{parts[3]}"
    return f"{TENSOR_NAMES[parts[0]]}.{parts[1]}"


def _unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's interleaved-rope row order so q/k match the HF half-split convention."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _config(reader: Any, arch: str) -> dict[str, Any]:
    hf_arch, model_type, _ = ARCHITECTURES[arch]
    config: dict[str, Any] = {"architectures": [hf_arch], "model_type": model_type, "torch_dtype": "float32"}
    for key, hf_key in CONFIG_KEYS.items():
        value = _field(reader, f"{arch}.{key}")
        if value is not None:
            config[hf_key] = value
    if "vocab_size" not in config:
        config["vocab_size"] = len(_field(reader, "tokenizer.ggml.tokens") or [])
    for key in ("bos_token_id", "eos_token_id"):
        value = _field(reader, f"tokenizer.ggml.{key}")
        if value is not None:
            config[key] = int(value)
    config["head_dim"] = config["hidden_size"] // config["num_attention_heads"]
    return config


def _tensors(reader: Any, path: Path, arch: str) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        try:
            name = _hf_name(t.name)
        except (KeyError, IndexError):
            raise CheckpointError(path, f"unexpected tensor {t.name!r} for architecture {arch!r}") from None
        try:
            data = gguf.quants.dequantize(t.data, t.tensor_type)
        except (NotImplementedError, ValueError) as exc:
            raise CheckpointError(path, f"cannot read tensor {t.name!r} ({t.tensor_type.name}): {exc}") from None
        state[name] = torch.from_numpy(np.array(data, dtype=np.float32))
    return state


def read_gguf(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """HF `config.json` contents and fp32 HF-named weights of a GGUF file (quantized types dequantized)."""
    path = Path(path)
    reader = _open(path)
    arch = _field(reader, "general.architecture")
    if arch in VIA_TRANSFORMERS:
        return _read_via_transformers(path, VIA_TRANSFORMERS[arch])
    if arch not in ARCHITECTURES:
        supported = ", ".join([*ARCHITECTURES, *VIA_TRANSFORMERS])
        raise CheckpointError(path, f"unknown GGUF architecture {arch!r}; supported: {supported}")
    config, state = _config(reader, arch), _tensors(reader, path, arch)
    config["tie_word_embeddings"] = "lm_head.weight" not in state
    if ARCHITECTURES[arch][2]:
        kv_heads = config.get("num_key_value_heads") or config["num_attention_heads"]
        for name in [n for n in state if n.endswith(("q_proj.weight", "k_proj.weight"))]:
            state[name] = _unpermute(state[name], config["num_attention_heads"] if "q_proj" in name else kv_heads)
    return config, state


def _read_via_transformers(path: Path, architecture: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and fp32 weights as transformers reads the file (k-quants dequantized by the `gguf` package)."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise CheckpointError(path, f"transformers could not read it ({type(exc).__name__}: {exc})") from None
    config = {**model.config.to_dict(), "architectures": [architecture], "torch_dtype": "float32"}
    return config, {k: v.detach().clone() for k, v in model.state_dict().items()}


def read_gguf_tokenizer(path: str | Path) -> Any:
    """The tokenizer stored in GGUF metadata, rebuilt by transformers' GGUF converter."""
    path = Path(path)
    _open(path)
    try:
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (KeyError, ValueError, OSError) as exc:
        raise CheckpointError(path, f"tokenizer metadata could not be read ({type(exc).__name__}: {exc})") from None
