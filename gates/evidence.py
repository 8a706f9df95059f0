"""Collect evidence for the gate: every metrics JSON flattened into dotted keys, plus sign-off approvals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gates.criteria import SignOff
from gates.decision import signoff_ok
from gates.evaluate import Evidence


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Evidence]:
    """Numbers become evidence under their dotted path; a sibling `n` is their sample count."""
    out: dict[str, Evidence] = {}
    n = obj.get("n") if isinstance(obj.get("n"), int) else None
    for key, value in obj.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        elif isinstance(value, bool) or (isinstance(value, int | float) and key != "n"):
            out[path] = Evidence(float(value), n)
    return out


def read_metrics_file(path: Path) -> dict[str, Any]:
    """A metrics JSON object; a broken file is a ValueError naming it."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable metrics file ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a metrics file must hold a JSON object")
    return data


def collect(files: list[Path]) -> tuple[dict[str, Evidence], dict[str, list[str]]]:
    """Evidence from the metrics files that exist, and which keys each file contributed."""
    evidence: dict[str, Evidence] = {}
    keys_by_file: dict[str, list[str]] = {}
    for path in files:
        if not path.is_file():
            continue
        flat = flatten(read_metrics_file(path))
        evidence.update(flat)
        keys_by_file[str(path)] = sorted(flat)
    return evidence, keys_by_file


def signoff_evidence(path: Path | None, rule: SignOff) -> dict[str, Evidence]:
    """`signoff.approved` from a YAML of role: true/false (absent file: no evidence)."""
    if path is None or not path.is_file():
        return {}
    approvals = yaml.safe_load(path.read_text()) or {}
    ok, _ = signoff_ok({str(k): bool(v) for k, v in approvals.items()}, rule)
    return {"signoff.approved": Evidence(1.0 if ok else 0.0)}


def coverage_evidence(path: Path | None) -> dict[str, Evidence]:
    """`tests.coverage_pct` from a coverage.py JSON report (absent file: no evidence)."""
    if path is None or not path.is_file():
        return {}
    totals = read_metrics_file(path).get("totals", {})
    pct = totals.get("percent_covered")
    return {} if pct is None else {"tests.coverage_pct": Evidence(float(pct), totals.get("num_statements"))}
