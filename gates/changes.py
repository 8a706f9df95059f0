"""What changed between two decisions: new failures, fixed checks, and metric moves beyond the noise band.

A release manager reads a red gate by what broke since the last green one. `changes(previous, current)` compares
two decision.json documents criterion by criterion; `python -m gates compare A B` prints it for two decision files
or two MLflow gate runs. The noise band is declared, not measured: 5% by default (one ci repetition of a speed
benchmark on a shared 2-core machine moves by about that much), `--noise-pct` to change it.
"""

from __future__ import annotations

from typing import Any

NOISE_PCT = 5.0
BAD = ("FAIL", "INVALID")


def _delta(before: dict[str, Any], after: dict[str, Any], noise_pct: float) -> dict[str, Any] | None:
    """A metric's move between two decisions when it exceeds the band (relative to the earlier value)."""
    a, b = before["value"], after["value"]
    if a is None or b is None or a == b:
        return None
    pct = None if a == 0 else (b - a) / abs(a) * 100
    if pct is not None and abs(pct) <= noise_pct:
        return None
    return {"id": after["id"], "before": a, "after": b, "change_pct": pct, "unit": after["unit"]}


def changes(previous: dict[str, Any], current: dict[str, Any], noise_pct: float = NOISE_PCT) -> dict[str, Any]:
    """New failures, fixed checks and metric deltas beyond `noise_pct`, from `previous` to `current`."""
    before = {c["id"]: c for c in previous["checks"]}
    new_failures, fixed, deltas = [], [], []
    for now in current["checks"]:
        then = before.get(now["id"])
        if then is None:
            continue
        step = {"id": now["id"], "before": then["status"], "after": now["status"]}
        if now["status"] in BAD and then["status"] not in BAD:
            new_failures.append(step)
        elif then["status"] in BAD and now["status"] == "PASS":
            fixed.append(step)
        if (moved := _delta(then, now, noise_pct)) is not None:
            deltas.append(moved)
    g = previous["gate"]
    return {
        "previous": {"scenario": previous["scenario"], "created": g.get("created"), "git_sha": g.get("git_sha")},
        "noise_pct": noise_pct,
        "new_failures": new_failures,
        "fixed": fixed,
        "deltas": deltas,
    }


def change_lines(diff: dict[str, Any] | None) -> list[str]:
    """The comparison as plain lines (report sections, `gates compare`)."""
    if diff is None:
        return ["no previous decision to compare with"]
    prev = diff["previous"]
    lines = [f"since Scenario {prev['scenario']} at git {str(prev['git_sha'])[:10]} ({prev['created']}):"]
    lines += [f"new failure: {c['id']} ({c['before']} -> {c['after']})" for c in diff["new_failures"]]
    lines += [f"fixed: {c['id']} ({c['before']} -> {c['after']})" for c in diff["fixed"]]
    for d in diff["deltas"]:
        pct = "from 0" if d["change_pct"] is None else f"{d['change_pct']:+.1f}%"
        lines.append(f"moved: {d['id']} {d['before']:.4g} -> {d['after']:.4g} {d['unit']} ({pct})".rstrip())
    if len(lines) == 1:
        lines.append(f"no status changes, no metric moved beyond ±{diff['noise_pct']:g}%")
    return lines
