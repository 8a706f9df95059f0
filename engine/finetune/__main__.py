"""Fine-tuning from the command line.

    python -m engine.finetune task --out data/finetune            # the project's task: train/valid/test JSONL
    python -m engine.finetune train --base models/smollm2-135m-instruct --train data/finetune/train.jsonl \\
        --valid data/finetune/valid.jsonl --out runs/card --method qlora --max-steps 40
    python -m engine.finetune merge --base models/smollm2-135m-instruct --adapter runs/card/adapter --out m/card

`train` resumes from the newest checkpoint in --out; the adapter (peft format) lands in OUT/adapter and the run's
numbers in OUT/result.json. Serve an adapter with `python -m engine.server --lora card=runs/card/adapter`.
"""

from __future__ import annotations

import argparse
import sys

from engine.finetune.data import DataError, read_jsonl
from engine.finetune.options import add_train_arguments, settings_from
from engine.finetune.task import examples, write_jsonl
from engine.finetune.train import Trainer, write_result

SPLITS = {"train": (512, False, 1), "valid": (32, False, 2), "test": (64, True, 3)}


def _task(args: argparse.Namespace) -> int:
    for split, (count, heldout, seed) in SPLITS.items():
        print(f"wrote {write_jsonl(f'{args.out}/{split}.jsonl', examples(count, heldout, seed))}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from engine.loader import load_tokenizer

    try:
        train, valid = read_jsonl(args.train), read_jsonl(args.valid) if args.valid else []
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lora, settings = settings_from(args)
    trainer = Trainer(args.base, lora, settings, train, valid, args.out, load_tokenizer(args.base))
    result = trainer.run(on_event=lambda message, _data: print(message, file=sys.stderr))
    write_result(result, f"{args.out}/result.json")
    print(f"adapter: {result.adapter} ({result.steps} steps, {result.tokens_per_s:.0f} tok/s, "
          f"peak RSS {result.peak_rss_mb:.0f} MiB)")  # fmt: skip
    return 0


def _merge(args: argparse.Namespace) -> int:
    from engine.finetune.merge import merge

    print(f"wrote {merge(args.base, args.adapter, args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine.finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    task = sub.add_parser("task", help="write the contact-card task's train/valid/test JSONL")
    task.add_argument("--out", default="data/finetune")
    add_train_arguments(sub.add_parser("train", help="train a LoRA or QLoRA adapter on OpenAI fine-tuning JSONL"))
    merge = sub.add_parser("merge", help="fold an adapter into its base and save the checkpoint")
    merge.add_argument("--base", required=True)
    merge.add_argument("--adapter", required=True)
    merge.add_argument("--out", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"task": _task, "train": _train, "merge": _merge}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
