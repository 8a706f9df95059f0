"""Write an HF checkpoint as a GGUF file with the `gguf` package's writer: weights, hyper-parameters, tokenizer
(BPE vocabulary, merges, special tokens) and chat template, so llama.cpp and transformers can both load it.

Types: F32, F16, BF16 (lossless or rounding only), Q8_0 and Q4_0 (block quantized: 2-D weights whose rows are a
multiple of 32; norms and odd shapes stay F32, as llama.cpp's converter keeps them). Only the architectures
`gguf_file` reads back (Llama, Mistral, Qwen2) are written, so every file written here round-trips.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from engine.errors import CheckpointError
from engine.loader.gguf_file import ARCHITECTURES, CONFIG_KEYS, TENSOR_NAMES

GGUF_TYPES = {
    "F32": gguf.GGMLQuantizationType.F32,
    "F16": gguf.GGMLQuantizationType.F16,
    "BF16": gguf.GGMLQuantizationType.BF16,
    "Q8_0": gguf.GGMLQuantizationType.Q8_0,
    "Q4_0": gguf.GGMLQuantizationType.Q4_0,
}
FILE_TYPES = {
    "F32": gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "BF16": gguf.LlamaFileType.MOSTLY_BF16,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
}
HF_TO_GGUF_ARCH = {hf: (arch, permuted) for arch, (hf, _, permuted) in ARCHITECTURES.items()}
HF_TENSOR_NAMES = {hf: g for g, hf in TENSOR_NAMES.items()}


def gguf_name(hf_name: str) -> str:
    """`model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight`."""
    parts = hf_name.split(".")
    if parts[0] == "model" and parts[1] == "layers":
        return f"blk.{parts[2]}.{HF_TENSOR_NAMES['.'.join(parts[3:-1])]}.{parts[-1]}"
    module = ".".join(parts[:-1])
    return f"{HF_TENSOR_NAMES[module]}.{parts[-1]}"


def _permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's interleaved rope row order for q/k (the inverse of `gguf_file._unpermute`)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _vocabulary(src: Path) -> tuple[list[str], list[int], bool]:
    """Every token string by id, its GGUF token type (normal, control for special added tokens), whether the
    BPE model has merges."""
    path = src / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(src, "no tokenizer.json: GGUF needs the BPE vocabulary")
    tok = json.loads(path.read_text())
    if tok.get("model", {}).get("type") != "BPE":
        raise CheckpointError(
            path, f"only BPE tokenizers are written to GGUF, found {tok.get('model', {}).get('type')}"
        )
    by_id = {i: t for t, i in tok["model"]["vocab"].items()}
    kinds = dict.fromkeys(by_id, gguf.TokenType.NORMAL)
    for added in tok.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        kinds[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    size = max(by_id) + 1
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    types = [int(kinds.get(i, gguf.TokenType.UNUSED)) for i in range(size)]
    return tokens, types, bool(tok["model"].get("merges"))


def _encode(w: torch.Tensor, kind: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """The tensor in the file's type; 1-D tensors and rows not a multiple of the block stay F32."""
    data = w.detach().to(torch.float32).numpy()
    qtype = GGUF_TYPES[kind]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if data.ndim < 2 or data.shape[-1] % block:
        return data, gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.F32:
        return data, qtype
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16), qtype
    return gguf.quants.quantize(data, qtype), qtype


def write_gguf(src: Path, config: dict[str, Any], state: Mapping[str, torch.Tensor], out: Path, kind: str) -> Path:
    """Write `state` (HF names) with `config` and the tokenizer in `src` as one GGUF file of type `kind`."""
    if kind not in GGUF_TYPES:
        raise ValueError(f"GGUF type {kind!r} is not supported; choose one of {', '.join(GGUF_TYPES)}")
    arch_name = next((a for a in config.get("architectures", []) if a in HF_TO_GGUF_ARCH), None)
    if arch_name is None:
        supported = ", ".join(HF_TO_GGUF_ARCH)
        raise CheckpointError(src, f"GGUF export supports {supported}; this is {config.get('architectures')}")
    arch, permuted = HF_TO_GGUF_ARCH[arch_name]
    tmp = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        _write_metadata(writer, src, config, arch, kind)
        heads = config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads
        for name in state:
            w = state[name]
            if permuted and name.endswith(("q_proj.weight", "k_proj.weight")):
                w = _permute(w, heads if "q_proj" in name else kv_heads)
            data, qtype = _encode(w, kind)
            raw = qtype if qtype != gguf.GGMLQuantizationType.F32 else None
            writer.add_tensor(gguf_name(name), data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return out


def _write_metadata(writer: gguf.GGUFWriter, src: Path, config: dict[str, Any], arch: str, kind: str) -> None:
    """Hyper-parameters under the architecture's keys, then the tokenizer (vocabulary, merges, special tokens)."""
    tokens, types, has_merges = _vocabulary(src)
    writer.add_name(src.name)
    writer.add_file_type(FILE_TYPES[kind])
    for key, hf_key in CONFIG_KEYS.items():
        if config.get(hf_key) is not None:
            writer.add_key_value(f"{arch}.{key}", config[hf_key], _value_type(config[hf_key]))
    writer.add_rope_dimension_count(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores([0.0] * len(tokens))  # readers rebuild merges from scores when a vocabulary has none
    gguf.SpecialVocab(src, load_merges=has_merges, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


def _value_type(value: Any) -> gguf.GGUFValueType:
    if isinstance(value, bool):
        return gguf.GGUFValueType.BOOL
    return gguf.GGUFValueType.UINT32 if isinstance(value, int) else gguf.GGUFValueType.FLOAT32
