"""Collect evidence for the gate: every metrics JSON flattened into dotted keys, each tied to its producer.

A metrics file holds `_provenance` (stage, commit, params/spec hashes, hardware, times, input hashes; see
`pipelines.common.write_metrics`) beside its namespaces. Keys starting with `_` are facts, not metrics.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gates.criteria import SignOff
from gates.decision import signoff_ok
from gates.evaluate import Evidence
from gates.provenance import sha256_file
from gates.stages import Stage


class EvidenceError(ValueError):
    """Evidence that cannot be judged at all: unreadable, a key with two producers, a key its stage does not own."""


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Evidence]:
    """Numbers become evidence under their dotted path; a sibling `n` is their sample count."""
    out: dict[str, Evidence] = {}
    n = obj.get("n") if isinstance(obj.get("n"), int) else None
    for key, value in obj.items():
        if str(key).startswith("_"):
            continue
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


@dataclass
class EvidenceFile:
    """What the decision records about one file it read."""

    path: str
    sha256: str
    stage: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The decision.json entry (keys left out: they are in the checks)."""
        return {"sha256": self.sha256, "stage": self.stage, "provenance": self.provenance}


def _owner(path: Path, provenance: dict[str, Any], stages: list[Stage]) -> Stage:
    by_name = {s.name: s for s in stages}
    declared = next((s for s in stages if s.evidence == path), None)
    claimed = by_name.get(str(provenance.get("stage")))
    if claimed is None:
        raise EvidenceError(f"{path}: _provenance names stage {provenance.get('stage')!r}, not a dvc.yaml stage")
    if declared is not None and declared is not claimed:
        raise EvidenceError(f"{path}: written by stage {claimed.name!r} but dvc.yaml gives it to {declared.name!r}")
    return claimed


def read_evidence_file(path: Path, stages: list[Stage]) -> tuple[EvidenceFile, dict[str, Evidence]]:
    """One file's evidence, with its basis and hardware; keys its stage does not own are an EvidenceError."""
    doc = read_metrics_file(path)
    provenance = doc.get("_provenance")
    flat = flatten(doc)
    info = EvidenceFile(str(path), sha256_file(path), None, provenance or {}, sorted(flat))
    if not isinstance(provenance, dict):
        for ev in flat.values():
            ev.invalid_reason = f"{path}: no _provenance (who produced it is unknown)"
            ev.source = str(path)
        return info, flat
    stage = _owner(path, provenance, stages)
    info.stage = stage.name
    foreign = [k for k in flat if not stage.owner_of(k)]
    if foreign:
        raise EvidenceError(f"{path}: stage {stage.name!r} does not own {foreign[:5]} (dvc.yaml meta.owns)")
    invalid = declared_invalid(path, doc)
    for key, ev in flat.items():
        ev.source, ev.basis, ev.hardware = str(path), stage.basis_of(key), provenance.get("hardware")
        reason = next((why for prefix, why in invalid.items() if key == prefix or key.startswith(prefix + ".")), None)
        if reason is not None:
            ev.invalid_reason = f"stage {stage.name} declares it invalid: {reason}"
    return info, flat


def declared_invalid(path: Path, doc: dict[str, Any]) -> dict[str, str]:
    """A stage's own `_invalid: {key prefix: reason}`: measurements it knows not to trust (say, a LoadGen run
    that LoadGen itself ruled INVALID). It can only turn its own evidence INVALID, never make anything pass."""
    invalid = doc.get("_invalid") or {}
    if not isinstance(invalid, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in invalid.items()):
        raise EvidenceError(f"{path}: _invalid must map key prefixes to reasons (strings)")
    return invalid


def collect(files: list[Path], stages: list[Stage]) -> tuple[dict[str, Evidence], list[EvidenceFile]]:
    """Evidence from the files that exist; the same key from two files is an EvidenceError naming both."""
    evidence: dict[str, Evidence] = {}
    read: list[EvidenceFile] = []
    for path in files:
        if not path.is_file():
            continue
        info, flat = read_evidence_file(path, stages)
        twice = sorted(set(flat) & set(evidence))
        if twice:
            raise EvidenceError(f"{twice[:5]} produced by both {evidence[twice[0]].source} and {path}")
        evidence.update(flat)
        read.append(info)
    return evidence, read


def gather(
    files: list[Path], stages: list[Stage], validate: bool
) -> tuple[dict[str, Evidence], list[EvidenceFile], dict[str, str]]:
    """`collect`, then (unless told not to) Great Expectations checks; returns the rejected keys with reasons."""
    evidence, read = collect(files, stages)
    if not validate:
        return evidence, read, {}
    from gates.validate import validate_evidence  # Great Expectations takes ~2.5 s to import: only when asked

    return evidence, read, validate_evidence(evidence, {f.path: f.keys for f in read})


def file_fact(path: Path | None) -> dict[str, str] | None:
    """A file the decision rests on, by path and sha256 (None when there is no such file)."""
    return {"path": str(path), "sha256": sha256_file(path)} if path is not None and path.is_file() else None


SIGNOFF_LINE = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*:\s*(\S+)\s*(#.*)?$")


def signoff_evidence(path: Path | None, rule: SignOff) -> dict[str, Evidence]:
    """`signoff.approved` from lines `role: true|false`; anything else makes it INVALID naming the line."""
    if path is None or not path.is_file():
        return {}
    approvals: dict[str, bool] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = SIGNOFF_LINE.match(line)
        if not match or match.group(2) not in ("true", "false") or match.group(1) in approvals:
            reason = f"{path}:{number}: {line.strip()!r} is not `role: true` or `role: false` (once per role)"
            return {"signoff.approved": Evidence(0.0, invalid_reason=reason, source=str(path), basis="declared")}
        approvals[match.group(1)] = match.group(2) == "true"
    ok, _ = signoff_ok(approvals, rule)
    return {"signoff.approved": Evidence(1.0 if ok else 0.0, source=str(path), basis="declared")}
