"""Model quality on texts: perplexity, and against a reference model the KL divergence of the next-token
distributions (mean and P99), top-1 agreement and the perplexity change, the way llama.cpp judges a quantization.

    python -m engine.eval --model PATH --quant gptq --option sequential=false --reference fp32 \\
        --text data/wikitext-2/test.txt data/python-docs/test.txt --max-tokens 4096 --out metrics/eval.json

Long context (engine.long_context): with --attention or --kv-cache-dtype, the first --context tokens of the text
run as ONE sequence through the engine's paged cache (chunked prefill, the attention policy, the cache dtype), and
the output adds pass-key retrieval per depth, the KV bytes the pool held, peak RSS and decode tok/s at that context:

    python -m engine.eval --model models/smollm2-135m-instruct --text data/wikitext-2/test.txt --context 32768 \\
        --attention sink-window --kv-cache-dtype int8

Each text is tokenized once; its first --max-tokens tokens are scored in consecutive windows of --context tokens
(each window starts fresh, so every model sees exactly the same tokens with the same context length). The
reference (`fp32`: the model's own unquantized weights, the default with --quant; or a checkpoint path) is run
once per text and its log-probabilities are kept in memory as fp16 (up to --reference-cache-mb, then recomputed
per window), so every comparison reads the same reference logits. accuracy_loss_pct is the relative perplexity
increase, kl_* are KL(reference || model) in nats per token, top1_agreement the share of positions where both
predict the same next token. Results are per text, keyed by the text's folder name (`wikitext-2`, `python-docs`).
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

from engine.kv_cache import KV_CACHE_DTYPES
from engine.loader import CheckpointError, load, load_model
from engine.long_context import DEPTHS, evaluate_long
from engine.progress import progress
from engine.quant import DEFAULT_CALIBRATION, QuantizationError, available_strategies, parse_option
from engine.quant.calibration_mix import windows
from engine.report_json import emit_json

REFERENCE_CACHE_MB = 4096
KEPT_DTYPE = torch.float16  # log-probs kept for KL: half the memory; rounding moves a KL by ~1e-5 nats at most


@dataclass
class Scores:
    """One model's pass over the windows: summed NLL, next-token choices and, against a reference, per-token KL."""

    nll: float
    predicted: int
    argmax: list[torch.Tensor]
    kl: torch.Tensor | None = None  # KL(reference || model) per predicted position
    logprobs: list[torch.Tensor] | None = None  # per window, when kept for use as a reference

    @property
    def perplexity(self) -> float:
        """exp(mean NLL)."""
        return math.exp(self.nll / self.predicted)


def _logprobs(model: Any, window: list[int]) -> torch.Tensor:
    return torch.log_softmax(model.score(window)[:-1].float(), dim=-1)


class Reference:
    """A reference model's scores over the windows, with its log-probabilities kept (fp16) for KL while they fit."""

    def __init__(self, model: Any, ids: list[int], context: int, cache_mb: float = REFERENCE_CACHE_MB) -> None:
        self.model, self.windows = model, windows(ids, context)
        positions = sum(len(w) - 1 for w in self.windows)
        keep = positions * model.config.vocab_size * KEPT_DTYPE.itemsize / 2**20 <= cache_mb
        self.scores = score(model, ids, context, keep=keep)

    def logprobs(self, i: int) -> torch.Tensor:
        """Window i's next-token log-probabilities (kept, or computed again), fp32."""
        if self.scores.logprobs is not None:
            return self.scores.logprobs[i].float()
        return _logprobs(self.model, self.windows[i])


@torch.inference_mode()
def score(model: Any, ids: list[int], context: int, reference: Reference | None = None, keep: bool = False) -> Scores:
    """Windows scored independently (no state carried over), the way perplexity tables are usually reported."""
    nll, predicted, argmax, kl, kept = 0.0, 0, [], [], []
    for i, window in enumerate(progress(windows(ids, context), desc="eval", unit="window", leave=False)):
        lp = _logprobs(model, window)
        targets = torch.tensor(window[1:])
        nll -= lp.gather(1, targets[:, None]).sum().item()
        predicted += len(targets)
        argmax.append(lp.argmax(-1))
        if keep:
            kept.append(lp.to(KEPT_DTYPE))
        if reference is not None:
            ref = reference.logprobs(i)
            kl.append((ref.exp() * (ref - lp)).sum(-1).clamp(min=0))
    return Scores(nll, predicted, argmax, torch.cat(kl) if kl else None, kept if keep else None)


def compare(scores: Scores, reference: Scores | None = None) -> dict[str, Any]:
    """Perplexity, and against a reference: its perplexity, top-1 agreement, KL and the accuracy loss."""
    result: dict[str, Any] = {"perplexity": scores.perplexity, "tokens": scores.predicted}
    if reference is not None:
        agree = sum(int((a == b).sum()) for a, b in zip(scores.argmax, reference.argmax, strict=True))
        result["reference_perplexity"] = reference.perplexity
        result["top1_agreement"] = agree / scores.predicted
        result["accuracy_loss_pct"] = accuracy_loss_pct(scores.perplexity, reference.perplexity)
        kl = scores.kl if scores.kl is not None else torch.zeros(scores.predicted)  # the reference itself
        result["kl_mean"] = float(kl.mean())
        result["kl_p99"] = float(torch.quantile(kl.double(), 0.99))
    return result


def evaluate(model: Any, reference: Reference | None, ids: list[int], context: int) -> dict[str, Any]:
    """Perplexity (and KL, top-1 agreement and loss against `reference`) over `ids` in windows of `context`."""
    if reference is None:
        return compare(score(model, ids, context))
    return compare(score(model, ids, context, reference), reference.scores)


def accuracy_loss_pct(perplexity: float, reference_perplexity: float) -> float:
    """Relative perplexity increase over the reference, in percent (DESIGN.md's accuracy loss)."""
    return (perplexity / reference_perplexity - 1) * 100


def domain_name(text: Path) -> str:
    """A text's evaluation domain: its folder's name (data/python-docs/test.txt -> python-docs)."""
    return text.parent.name or text.stem


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="engine checkpoint to evaluate")
    p.add_argument("--text", required=True, type=Path, nargs="+", help="UTF-8 text file(s), one domain each")
    p.add_argument("--max-tokens", type=int, default=4096, help="token budget taken from the start of each text")
    p.add_argument("--context", type=int, default=512, help="tokens per scored window")
    p.add_argument(
        "--reference", help="`fp32` (the model's own fp32 weights; the default with --quant) or a checkpoint path"
    )
    p.add_argument("--reference-cache-mb", type=float, default=REFERENCE_CACHE_MB, help="reference logits kept")
    p.add_argument("--quant", default="none", help="quantization strategy applied on load (see engine.quant list)")
    p.add_argument("--option", type=parse_option, action="append", default=[], help="strategy option key=value")
    p.add_argument("--calibration-text", default=DEFAULT_CALIBRATION, help="text or mix GPTQ and AWQ calibrate on")
    p.add_argument("--calibration-tokens", type=int, default=4096, help="calibration token budget")
    long = p.add_argument_group("long context (one sequence through the engine's cache)")
    long.add_argument("--attention", choices=["dense", "sink-window"], help="attention policy over the cache")
    long.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, help="KV cache dtype (auto: the model's)")
    long.add_argument("--window", type=int, default=4096, help="sink-window: recent tokens each query sees")
    long.add_argument("--sinks", type=int, default=4, help="sink-window: first tokens every query keeps seeing")
    long.add_argument(
        "--passkey-depths", type=float, nargs="*", default=list(DEPTHS), help="pass-key positions (0-1); none: skip"
    )
    long.add_argument("--chunk", type=int, default=1024, help="prompt tokens per step (chunked prefill)")
    long.add_argument("--decode-tokens", type=int, default=16, help="greedy tokens decoded after the context, timed")
    long.add_argument("--baseline-window", type=int, help="also score the same tokens in dense windows of this size")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--out", type=Path, help="write the JSON here (it is printed too)")
    return p


def _texts(p: argparse.ArgumentParser, paths: list[Path]) -> dict[str, str]:
    out = {}
    for path in paths:
        try:
            out[domain_name(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            p.error(f"--text {path}: {exc}")
    if len(out) < len(paths):
        p.error("--text: two texts share a folder name; each domain needs its own folder")
    return out


def _checked(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """Exit with a usage error on bad arguments; set the threads; the texts by domain."""
    if args.quant not in available_strategies():
        p.error(f"--quant {args.quant}: unknown strategy; available: {', '.join(available_strategies())}")
    if args.max_tokens < 2 or args.context < 2:
        p.error("--max-tokens and --context must be >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    return _texts(p, args.text)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exits 1 with a one-line message on a bad checkpoint."""
    p = build_parser()
    args = p.parse_args(argv)
    texts = _checked(p, args)
    if args.attention or args.kv_cache_dtype:
        return _long_context(args, next(iter(texts.values())))
    try:
        model, tokenizer, report = load(
            args.model, args.quant, dict(args.option), args.calibration_text, args.calibration_tokens
        )
        reference_path = args.reference or (args.model if args.quant != "none" else None)
        if reference_path == "fp32":
            reference_path = args.model
        reference_model = load_model(reference_path) if reference_path else None
    except (CheckpointError, QuantizationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    domains = {}
    for name, text in texts.items():
        ids = tokenizer.encode(text, add_special_tokens=False)[: args.max_tokens]
        if len(ids) < 2:
            p.error(f"--text for {name}: fewer than 2 tokens")
        reference = None
        if reference_model is not None:
            reference = Reference(reference_model, ids, args.context, args.reference_cache_mb)
        domains[name] = evaluate(model, reference, ids, args.context)
    result = {"model": str(args.model), "quant": args.quant, "options": dict(args.option), "reference": reference_path}
    result["context"] = args.context
    result |= {**next(iter(domains.values())), "domains": domains}  # the first text's numbers at the top level
    if report is not None:
        result["quantization"] = report.summary()
    result["eval_s"] = time.perf_counter() - start
    emit_json(result, args.out)
    return 0


def _long_context(args: argparse.Namespace, text: str) -> int:
    options = {"attention": args.attention or "dense", "kv_cache_dtype": args.kv_cache_dtype or "auto"}
    options |= {"window": args.window, "sinks": args.sinks, "max_num_batched_tokens": args.chunk}
    try:
        result = evaluate_long(
            args.model, text, args.context, options, tuple(args.passkey_depths), args.decode_tokens,
            args.baseline_window,
        )  # fmt: skip
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    emit_json({"model": str(args.model), **result}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
