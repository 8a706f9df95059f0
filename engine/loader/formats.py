"""Write an HF checkpoint directory as safetensors or PyTorch `.bin`, whole or in shards with the standard index,
and hash tensors so a conversion can prove itself exact.

Shards follow transformers' layout (`model-00001-of-00002.safetensors` + `model.safetensors.index.json`,
`pytorch_model-00001-of-00002.bin` + `pytorch_model.bin.index.json`), so transformers and `engine.loader.hf`
read what is written here. `.bin` files are written with `torch.save` and read back with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "generation_config.json", "vocab.json", "merges.txt", "tokenizer.model",
)  # fmt: skip
LAYOUTS = {
    "safetensors": ("model", ".safetensors", "model.safetensors.index.json"),
    "pytorch": ("pytorch_model", ".bin", "pytorch_model.bin.index.json"),
}


def tensor_hash(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes: equal hashes mean bit-identical tensors."""
    t = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def hashes(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Every tensor's hash by name."""
    return {name: tensor_hash(state[name]) for name in state}


def _shards(state: Mapping[str, torch.Tensor], shard_bytes: int | None) -> Iterator[list[str]]:
    names, size = [], 0
    for name in state:
        nbytes = state[name].numel() * state[name].element_size()
        if names and shard_bytes and size + nbytes > shard_bytes:
            yield names
            names, size = [], 0
        names.append(name)
        size += nbytes
    if names:
        yield names


def copy_side_files(src: Path, out: Path, config: dict[str, Any]) -> None:
    """config.json and the tokenizer files beside the weights."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if src.is_dir() and (src / name).is_file():
            shutil.copy(src / name, out / name)


def write_weights(state: Mapping[str, torch.Tensor], out: Path, fmt: str, shard_bytes: int | None = None) -> list[Path]:
    """The weights in `fmt` (safetensors | pytorch) under `out`, sharded past `shard_bytes`; the files written."""
    stem, suffix, index_name = LAYOUTS[fmt]
    groups = list(_shards(state, shard_bytes))
    files, weight_map = [], {}
    for i, names in enumerate(groups, 1):
        name = f"{stem}{suffix}" if len(groups) == 1 else f"{stem}-{i:05d}-of-{len(groups):05d}{suffix}"
        part = {n: state[n].contiguous() for n in names}
        tmp = out / (name + ".partial")
        if fmt == "safetensors":
            save_file(part, str(tmp), metadata={"format": "pt"})
        else:
            torch.save(part, tmp)
        tmp.replace(out / name)
        files.append(out / name)
        weight_map.update(dict.fromkeys(names, name))
    if len(groups) > 1:
        total = sum(state[n].numel() * state[n].element_size() for n in state)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / index_name).write_text(json.dumps(index, indent=2) + "\n")
    return files
