"""Baselines with provenance: the values the regression checks compare with, and the hardware that made them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gates.criteria import load_spec
from gates.evaluate import Evidence
from gates.evidence import collect
from gates.provenance import git_head, now_utc
from gates.run import DEFAULT_SPEC, baseline_for, default_evidence
from gates.stages import load_stages


def nest(flat: dict[str, float]) -> dict[str, Any]:
    """`{"a.b": 1}` -> `{"a": {"b": 1}}`."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _fingerprint(evidence: dict[str, Evidence], metrics: list[str]) -> dict[str, str]:
    """The one hardware fingerprint behind these metrics; a ValueError when there is none or several."""
    missing = [m for m in metrics if m not in evidence or evidence[m].value is None]
    if missing:
        raise ValueError(f"cannot write a baseline: no evidence for {missing} (run `dvc repro` first)")
    prints = {json.dumps(evidence[m].hardware, sort_keys=True) for m in metrics}
    hardware = evidence[metrics[0]].hardware
    if len(prints) != 1 or hardware is None:
        raise ValueError(f"cannot write a baseline: the evidence comes from {len(prints)} hardware fingerprints")
    return hardware


def update_baseline(profile: str, model: str, spec: Path = DEFAULT_SPEC) -> Path:
    """Write baselines/<profile>-<model>.json from the current evidence of every regression criterion."""
    evidence, files = collect(default_evidence(), load_stages())
    metrics = sorted({c.metric for c in load_spec(spec).criteria if c.kind == "regression"})
    sources = {evidence[m].source for m in metrics if m in evidence}
    provenance = {
        "written": now_utc(),
        "git_sha": git_head(),
        "profile": profile,
        "model": model,
        "hardware": _fingerprint(evidence, metrics),
        "sources": {f.path: f.sha256 for f in files if f.path in sources},
    }
    path = baseline_for(profile, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"_provenance": provenance, **nest({m: evidence[m].value for m in metrics})}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
