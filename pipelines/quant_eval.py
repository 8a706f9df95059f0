"""What the calibrate stage measures of one model: accuracy against fp32 on every evaluation domain (KL, top-1,
perplexity change) and batch-1 decode speed.

A domain is held out when no calibration source comes from it (its folder differs from every source's); the
criteria read the held-out numbers, since the calibration domain flatters the strategies that fit it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from engine.bench import run_one
from engine.eval import Reference, compare, domain_name, evaluate
from engine.loader import load_tokenizer
from engine.quant.calibration_mix import overlap, read_mix
from pipelines.common import bench_args
from pipelines.config import TollgateConf

WORST = {"accuracy_loss_pct": max, "kl_mean": max, "kl_p99": max, "top1_agreement": min}


@dataclass
class Domain:
    """An evaluation text's tokens, whether it is held out from calibration, and the fp32 reference on it."""

    name: str
    ids: list[int]
    heldout: bool
    reference: Reference | None = None


def is_heldout(p: TollgateConf, text: Path) -> bool:
    """Whether no calibration source comes from this text's domain."""
    return domain_name(text) not in {domain_name(s.text) for s in read_mix(p.data.calibration_text)}


def heldout_ids(p: TollgateConf, tokens: int) -> list[int]:
    """The first tokens of the first held-out evaluation text (what a check that needs only one domain reads)."""
    text = next(Path(t) for t in p.data.eval_domains if is_heldout(p, Path(t)))
    ids = load_tokenizer(p.model.path).encode(text.read_text(encoding="utf-8"), add_special_tokens=False)
    return ids[:tokens]


def eval_domains(p: TollgateConf) -> list[Domain]:
    """The configured evaluation texts, each checked for leaks from the calibration set."""
    tokenizer = load_tokenizer(p.model.path)
    domains = []
    for text in map(Path, p.data.eval_domains):
        leaked = overlap(p.data.calibration_text, text)
        if leaked:
            raise ValueError(
                f"{text} shares {leaked} word 13-grams with the calibration set {p.data.calibration_text}: "
                "its scores would reward memorising the calibration text; evaluate on another text"
            )
        ids = tokenizer.encode(text.read_text(encoding="utf-8"), add_special_tokens=False)
        domains.append(Domain(domain_name(text), ids[: p.profile.calibrate.eval_tokens], is_heldout(p, text)))
    if not any(d.heldout for d in domains):
        raise ValueError(
            f"data.eval_domains {p.data.eval_domains}: every domain is a calibration domain; add a held-out text"
        )
    return domains


def set_references(domains: list[Domain], fp32: nn.Module, context: int) -> None:
    """Score the fp32 model once per domain; every later comparison reads its kept log-probabilities."""
    for d in domains:
        d.reference = Reference(fp32, d.ids, context)


def worst(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The worst of each accuracy number over some domains."""
    return {key: pick(r[key] for r in rows) for key, pick in WORST.items()}


def summarize(per: dict[str, dict[str, Any]], domains: list[Domain]) -> dict[str, Any]:
    """Per domain; at the top level the worst over every domain, under `heldout` the worst over held-out ones."""
    heldout = [per[d.name] for d in domains if d.heldout]
    return {**worst(list(per.values())), "heldout": worst(heldout), "domains": per}


def accuracy(model: nn.Module, domains: list[Domain], context: int) -> dict[str, Any]:
    """A model against the fp32 references of every domain."""
    return summarize({d.name: evaluate(model, d.reference, d.ids, context) for d in domains}, domains)


def reference_row(domains: list[Domain]) -> dict[str, Any]:
    """The fp32 model against itself (zero loss, zero KL), from the references already scored."""
    return summarize({d.name: compare(d.reference.scores, d.reference.scores) for d in domains}, domains)


def bench_decode(p: TollgateConf, checkpoint: Path) -> dict[str, Any]:
    """Batch-1 decode of a checkpoint (fp32 or quantized) in a fresh process, with the profile's bench sizes."""
    row = run_one("tollgate", bench_args(p, checkpoint), 1)  # quant "none": the checkpoint is already quantized
    if "error" in row:
        raise RuntimeError(f"bench of {checkpoint} failed: {row['error']}")
    return row
