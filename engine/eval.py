"""Model quality on a text: perplexity and next-token top-1 agreement with a reference model.

    python -m engine.eval --model PATH --text data/wikitext-2/test.txt --max-tokens 4096 \\
        [--reference PATH] [--quant gptq] [--context 512] --out metrics/quality.json

The text is tokenized once; its first --max-tokens tokens are scored in consecutive windows of --context tokens
(each window starts fresh, so every model sees exactly the same tokens with the same context length).
With --quant, the model is quantized on load and compared with its own fp32 weights (unless --reference names
another model): accuracy_loss_pct is the relative perplexity increase, top1_agreement the share of positions
where both predict the same next token.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.loader import CheckpointError, load, load_model
from engine.progress import progress
from engine.quant import QuantizationError, available_strategies
from engine.quant.calibration import DEFAULT_CALIBRATION
from engine.report_json import emit_json


def windows(ids: list[int], context: int) -> list[list[int]]:
    """Consecutive windows of at most `context` tokens; a last window of a single token is dropped."""
    return [ids[i : i + context] for i in range(0, len(ids), context) if len(ids[i : i + context]) > 1]


@dataclass
class Scores:
    """One model's pass over the windows: summed NLL and its next-token choices (for agreement)."""

    nll: float
    predicted: int
    argmax: list[torch.Tensor]

    @property
    def perplexity(self) -> float:
        """exp(mean NLL)."""
        return math.exp(self.nll / self.predicted)


@torch.inference_mode()
def score(model: Any, ids: list[int], context: int) -> Scores:
    """Windows scored independently (no state carried over), the way perplexity tables are usually reported."""
    nll, predicted, argmax = 0.0, 0, []
    for window in progress(windows(ids, context), desc="eval", unit="window", leave=False):
        logits = model.score(window)[:-1].float()
        targets = torch.tensor(window[1:])
        nll += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        predicted += len(targets)
        argmax.append(logits.argmax(-1))
    return Scores(nll, predicted, argmax)


def compare(scores: Scores, reference: Scores | None = None) -> dict[str, Any]:
    """Perplexity, and against a reference: its perplexity, top-1 agreement and the accuracy loss."""
    result: dict[str, Any] = {"perplexity": scores.perplexity, "tokens": scores.predicted}
    if reference is not None:
        agree = sum(int((a == b).sum()) for a, b in zip(scores.argmax, reference.argmax, strict=True))
        result["reference_perplexity"] = reference.perplexity
        result["top1_agreement"] = agree / scores.predicted
        result["accuracy_loss_pct"] = accuracy_loss_pct(scores.perplexity, reference.perplexity)
    return result


def evaluate(model: Any, ids: list[int], context: int, reference: Any | None = None) -> dict[str, Any]:
    """Perplexity (and top-1 agreement with `reference`) over `ids` in windows of `context`."""
    return compare(score(model, ids, context), score(reference, ids, context) if reference is not None else None)


def accuracy_loss_pct(perplexity: float, reference_perplexity: float) -> float:
    """Relative perplexity increase over the reference, in percent (DESIGN.md's accuracy loss)."""
    return (perplexity / reference_perplexity - 1) * 100


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exits 1 with a one-line message on a bad checkpoint."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="engine checkpoint to evaluate")
    p.add_argument("--text", required=True, type=Path, help="UTF-8 text file")
    p.add_argument("--max-tokens", type=int, default=4096, help="token budget taken from the start of the text")
    p.add_argument("--context", type=int, default=512, help="tokens per scored window")
    p.add_argument("--reference", help="checkpoint whose argmax is the top-1 reference (e.g. the fp32 model)")
    p.add_argument("--quant", default="none", help="quantization strategy applied on load (see engine.quant list)")
    p.add_argument("--calibration-text", default=DEFAULT_CALIBRATION, help="text GPTQ and AWQ calibrate on")
    p.add_argument("--calibration-tokens", type=int, default=4096, help="calibration token budget")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--out", type=Path, help="write the JSON here (it is printed too)")
    args = p.parse_args(argv)
    if args.quant not in available_strategies():
        p.error(f"--quant {args.quant}: unknown strategy; available: {', '.join(available_strategies())}")
    if args.max_tokens < 2 or args.context < 2:
        p.error("--max-tokens and --context must be >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        text = args.text.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        p.error(f"--text {args.text}: {exc}")
    try:
        model, tokenizer, report = load(
            args.model, args.quant, calibration_text=args.calibration_text, calibration_tokens=args.calibration_tokens
        )
        reference_path = args.reference or (args.model if args.quant != "none" else None)
        reference = load_model(reference_path) if reference_path else None
    except (CheckpointError, QuantizationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ids = tokenizer.encode(text, add_special_tokens=False)[: args.max_tokens]
    if len(ids) < 2:
        p.error(f"--text {args.text}: fewer than 2 tokens")
    start = time.perf_counter()
    result = {
        "model": str(args.model),
        "quant": args.quant,
        "reference": reference_path,
        "context": args.context,
        **evaluate(model, ids, args.context, reference),
        "eval_s": 0.0,
    }
    if report is not None:
        result["quantization"] = report.summary()
    result["eval_s"] = time.perf_counter() - start
    emit_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
