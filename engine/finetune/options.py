"""The options of a training run, shared by `python -m engine.finetune train` and the Prefect flow's CLI."""

from __future__ import annotations

import argparse
from dataclasses import fields

from engine.finetune.model import METHODS, LoraSettings
from engine.finetune.train import TrainSettings

KL_HELP = {
    "kl_weight": "weight of KL(base || adapted) on general text, which keeps general quality; 0: off; ",
    "kl_tokens": "general-text tokens the KL penalty sees per step; ",
    "kl_text": "the KL penalty's general text (a text file or a calibration mix YAML); ",
}


def settings_from(args: argparse.Namespace) -> tuple[LoraSettings, TrainSettings]:
    """The adapter and optimisation settings `add_train_arguments` parsed (QLoRA checkpoints activations)."""
    lora = LoraSettings(args.method, args.rank, args.alpha, args.dropout, tuple(args.targets), args.method == "qlora")
    known = {f.name for f in fields(TrainSettings)}
    return lora, TrainSettings(**{k: v for k, v in vars(args).items() if k in known and v is not None})


def add_train_arguments(train: argparse.ArgumentParser) -> None:
    """The options of a training run (shared with `python -m pipelines finetune_train`, the Prefect flow)."""
    train.add_argument("--base", required=True, help="HF checkpoint directory")
    train.add_argument("--train", required=True, help="training JSONL (chat or prompt/completion)")
    train.add_argument("--valid", help="validation JSONL (early stopping watches its loss)")
    train.add_argument("--out", required=True, help="run directory: checkpoints/, adapter/, result.json")
    train.add_argument("--method", choices=METHODS, default="lora", help="qlora: frozen NF4 base + checkpointing")
    train.add_argument("--rank", type=int, default=8)
    train.add_argument("--alpha", type=int, default=16)
    train.add_argument("--dropout", type=float, default=0.0)
    train.add_argument("--targets", nargs="+", default=list(LoraSettings().targets), help="HF module names")
    for name in ("learning_rate", "epochs", "batch_size", "max_steps", "max_len", "eval_every", "patience",
                 "checkpoint_every", "seed", "kl_weight", "kl_tokens", "kl_text"):  # fmt: skip
        default = getattr(TrainSettings(), name)
        kind = type(default) if default is not None else int
        why = KL_HELP.get(name, "")
        train.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"{why}default {default}")
