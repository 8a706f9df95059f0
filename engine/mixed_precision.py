"""Mixed precision: rank the decoder blocks by how much KL divergence quantizing each one alone adds, then keep
the most sensitive ones at 8 bits until a loss or KL budget is met at the smallest size.

Plans are composed from two whole quantized models (a 4-bit one and an int8 one) by taking each block from one
or the other, so measuring a plan costs one evaluation, not one calibration.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import nn

from engine.eval import Reference, evaluate
from engine.progress import progress


@contextmanager
def blocks_from(target: nn.Module, source: nn.Module, blocks: Sequence[int]) -> Iterator[nn.Module]:
    """`target` with the decoder blocks `blocks` taken from `source` (same architecture) while inside."""
    originals = {i: target.layers[i] for i in blocks}
    try:
        for i in blocks:
            target.layers[i] = source.layers[i]
        yield target
    finally:
        for i, layer in originals.items():
            target.layers[i] = layer


def sensitivity(
    fp32: nn.Module, quantized: nn.Module, reference: Reference, ids: list[int], context: int
) -> list[float]:
    """Per block: the mean KL (nats/token) against the reference when only that block is quantized."""
    out = []
    for i in progress(range(len(fp32.layers)), desc="sensitivity", unit="block", leave=False):
        with blocks_from(fp32, quantized, [i]) as model:
            out.append(evaluate(model, reference, ids, context)["kl_mean"])
    return out


def most_sensitive(scores: list[float], k: int) -> list[int]:
    """The k blocks with the largest sensitivity, in block order."""
    return sorted(sorted(range(len(scores)), key=lambda i: -scores[i])[:k])


def within(row: dict[str, Any], max_loss_pct: float | None, max_kl_mean: float | None) -> bool:
    """Whether a measured row (worst over domains) meets the budget; a budget of None is no limit."""
    return (max_loss_pct is None or row["accuracy_loss_pct"] <= max_loss_pct) and (
        max_kl_mean is None or row["kl_mean"] <= max_kl_mean
    )
