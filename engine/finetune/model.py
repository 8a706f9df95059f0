"""The model a fine-tuning run trains: the base checkpoint in HF transformers, frozen, with peft's LoRA on top.

QLoRA keeps the frozen base in bitsandbytes' NF4 (4-bit, block 64) and LoRA in fp32, as in the QLoRA paper.
bitsandbytes' CPU backend (0.50) trains here, and peft wraps its `Linear4bit` itself, so adapters stay standard;
the engine's own int4 layer (engine.quant) is inference-only, with no backward, so it is not used as the base.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

METHODS = ("lora", "qlora")
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraSettings:
    """What peft's LoraConfig needs, with the project's defaults."""

    method: str = "lora"
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0  # > 0 keeps a dropped-out copy of each adapted layer's input for backward
    targets: tuple[str, ...] = DEFAULT_TARGETS
    gradient_checkpointing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.rank < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1 or not self.targets:
            raise ValueError("need rank >= 1, alpha > 0, 0 <= dropout < 1 and at least one target module")
        self.targets = tuple(self.targets)


def load_base(path: str | Path, method: str) -> Any:
    """The frozen base model: fp32 for LoRA, NF4 weights with fp32 compute for QLoRA."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
        kwargs["device_map"] = "cpu"
    return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)


def trainable(base_path: str | Path, settings: LoraSettings) -> Any:
    """peft's model over the frozen base, with only the LoRA matrices trainable."""
    from peft import LoraConfig, get_peft_model

    base = load_base(base_path, settings.method)
    if settings.gradient_checkpointing:
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        task_type="CAUSAL_LM",
        **settings.extra,
    )
    return get_peft_model(base, config)


def masked_loss(model: Any, ids: torch.Tensor, labels: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over labelled positions, projecting only those rows onto the vocabulary.

    The head over SmolLM2's 49k-token vocabulary is a third of a step when every position gets logits; the
    loss needs only the assistant tokens'."""
    base = model.get_base_model()
    hidden = base.get_decoder()(input_ids=ids, attention_mask=attention).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), target[keep])


def kl_to_base(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """KL(base || adapted) per token on general text: the penalty that keeps the adapted model's predictions off
    the task close to the frozen base's (the base's logits come from the same model with the adapter disabled)."""
    base = model.get_base_model()
    head, decoder = base.get_output_embeddings(), base.get_decoder()
    with torch.no_grad(), model.disable_adapter():
        reference = head(decoder(input_ids=ids).last_hidden_state).float().log_softmax(-1)
    adapted = head(decoder(input_ids=ids).last_hidden_state).float().log_softmax(-1)
    return torch.nn.functional.kl_div(adapted.flatten(0, 1), reference.flatten(0, 1), log_target=True,
                                      reduction="batchmean")  # fmt: skip
