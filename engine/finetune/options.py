"""The options of a training run, shared by `python -m engine.finetune train` and the Prefect flow's CLI."""

from __future__ import annotations

import argparse
from dataclasses import fields

from engine.finetune.model import METHODS, LoraSettings
from engine.finetune.train import TrainSettings


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
                 "checkpoint_every", "seed"):  # fmt: skip
        default = getattr(TrainSettings(), name)
        kind = float if name == "learning_rate" else int
        train.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"default {default}")
