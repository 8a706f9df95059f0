"""Auto-selector: pick a quantization strategy from measured results under memory, accuracy and speed limits.

Among the strategies that meet every limit it picks the most accurate (then the fastest); when none does, it
picks nothing and says which limit each one missed. Measurements come from the `calibrate` stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Measured:
    """One strategy's measured cost and benefit."""

    name: str
    accuracy_loss_pct: float
    decode_tok_s: float
    weight_mb: float


@dataclass
class Limits:
    """What the deployment allows; None means no limit."""

    memory_mb: float | None = None
    max_loss_pct: float | None = None
    min_tok_s: float | None = None


@dataclass
class Selection:
    """The choice (None when nothing fits) and, for every candidate, why it was or was not chosen."""

    choice: str | None
    reasons: dict[str, str] = field(default_factory=dict)

    def explain(self) -> str:
        """A paragraph a person can read."""
        head = f"chose {self.choice}" if self.choice else "no strategy meets every limit"
        return head + "\n" + "\n".join(f"- {name}: {why}" for name, why in self.reasons.items())


def misses(m: Measured, limits: Limits) -> list[str]:
    """The limits this measurement breaks, in words."""
    out = []
    if limits.memory_mb is not None and m.weight_mb > limits.memory_mb:
        out.append(f"weights {m.weight_mb:.0f} MB > budget {limits.memory_mb:.0f} MB")
    if limits.max_loss_pct is not None and m.accuracy_loss_pct > limits.max_loss_pct:
        out.append(f"accuracy loss {m.accuracy_loss_pct:.2f}% > {limits.max_loss_pct:.2f}%")
    if limits.min_tok_s is not None and m.decode_tok_s < limits.min_tok_s:
        out.append(f"decode {m.decode_tok_s:.1f} tok/s < {limits.min_tok_s:.1f} tok/s")
    return out


def select(candidates: list[Measured], limits: Limits) -> Selection:
    """The most accurate strategy within every limit (ties: the fastest)."""
    fits = [m for m in candidates if not misses(m, limits)]
    fits.sort(key=lambda m: (m.accuracy_loss_pct, -m.decode_tok_s))
    choice = fits[0] if fits else None
    reasons = {}
    for m in candidates:
        facts = f"loss {m.accuracy_loss_pct:.2f}%, {m.decode_tok_s:.1f} tok/s, {m.weight_mb:.0f} MB"
        broken = misses(m, limits)
        if broken:
            reasons[m.name] = "rejected: " + "; ".join(broken)
        elif m is choice:
            reasons[m.name] = f"chosen: most accurate within the limits ({facts})"
        else:
            reasons[m.name] = f"fits, but less accurate or slower than {choice.name} ({facts})"  # type: ignore[union-attr]
    return Selection(choice.name if choice else None, reasons)


def from_metrics(doc: dict[str, Any]) -> list[Measured]:
    """Candidates from a calibrate-stage metrics document (`quant.<strategy>.{...}`)."""
    out = []
    for name, row in doc.get("quant", {}).items():
        if isinstance(row, dict) and {"accuracy_loss_pct", "decode_tok_s", "weight_mb"} <= row.keys():
            out.append(Measured(name, row["accuracy_loss_pct"], row["decode_tok_s"], row["weight_mb"]))
    return out
