"""Fold an adapter into its base and save a plain checkpoint (peft's merge_and_unload), tokenizer included."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def merge(base: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """base + adapter as one fp32 checkpoint the engine (or transformers) loads like any other."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out = Path(out)
    merged.save_pretrained(str(out))
    for name in TOKENIZER_FILES:
        if (Path(base) / name).is_file():
            shutil.copy2(Path(base) / name, out / name)
    return out
