"""Model quality on a text: perplexity and next-token top-1 agreement with a reference model.

    python -m engine.eval --model PATH --text data/wikitext-2/test.txt --max-tokens 4096 \\
        [--reference PATH] [--quant none] [--context 512] --out metrics/quality.json

The text is tokenized once; its first --max-tokens tokens are scored in consecutive windows of --context tokens
(each window starts fresh, so every model sees exactly the same tokens with the same context length).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from engine.loader import CheckpointError, load_model, load_tokenizer

SUPPORTED_QUANT = ("none",)


def windows(ids: list[int], context: int) -> list[list[int]]:
    """Consecutive windows of at most `context` tokens; a last window of a single token is dropped."""
    return [ids[i : i + context] for i in range(0, len(ids), context) if len(ids[i : i + context]) > 1]


@torch.inference_mode()
def evaluate(model: Any, ids: list[int], context: int, reference: Any | None = None) -> dict[str, Any]:
    """Perplexity (and top-1 agreement with `reference`) over `ids` in windows of `context`."""
    nll, predicted, agree = 0.0, 0, 0
    for window in tqdm(windows(ids, context), desc="eval", unit="window", leave=False):
        logits = model.score(window)[:-1].float()
        targets = torch.tensor(window[1:])
        nll += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        predicted += len(targets)
        if reference is not None:
            agree += int((logits.argmax(-1) == reference.score(window)[:-1].argmax(-1)).sum())
    result: dict[str, Any] = {"perplexity": math.exp(nll / predicted), "tokens": predicted}
    if reference is not None:
        result["top1_agreement"] = agree / predicted
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exits 1 with a one-line message on a bad checkpoint."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="engine checkpoint to evaluate")
    p.add_argument("--text", required=True, type=Path, help="UTF-8 text file")
    p.add_argument("--max-tokens", type=int, default=4096, help="token budget taken from the start of the text")
    p.add_argument("--context", type=int, default=512, help="tokens per scored window")
    p.add_argument("--reference", help="checkpoint whose argmax is the top-1 reference (e.g. the fp32 model)")
    p.add_argument("--quant", default="none", help=f"quantization strategy ({', '.join(SUPPORTED_QUANT)})")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--out", type=Path, help="write the JSON here (it is printed too)")
    args = p.parse_args(argv)
    if args.quant not in SUPPORTED_QUANT:
        p.error(f"--quant {args.quant}: unknown strategy; available: {', '.join(SUPPORTED_QUANT)}")
    if args.max_tokens < 2 or args.context < 2:
        p.error("--max-tokens and --context must be >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        text = args.text.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        p.error(f"--text {args.text}: {exc}")
    try:
        model, tokenizer = load_model(args.model), load_tokenizer(args.model)
        reference = load_model(args.reference) if args.reference else None
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ids = tokenizer.encode(text, add_special_tokens=False)[: args.max_tokens]
    if len(ids) < 2:
        p.error(f"--text {args.text}: fewer than 2 tokens")
    start = time.perf_counter()
    result = {
        "model": str(args.model),
        "quant": args.quant,
        "reference": args.reference,
        "context": args.context,
        **evaluate(model, ids, args.context, reference),
        "eval_s": 0.0,
    }
    result["eval_s"] = time.perf_counter() - start
    text_out = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text_out + "\n")
    print(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
