"""The pipeline's one declaration: dvc.yaml names each stage, its evidence file and the metric keys it owns.

A stage's `meta.owns` lists dotted key prefixes (`bench`, `faults.quantization`); every key in its evidence file
must fall under one of them, and no two stages may own overlapping prefixes, so each metric has one producer.
`meta.basis` marks keys that are not plain measurements (`derived`, `formula`, `declared`), by prefix or glob.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from gates.provenance import BASES

DVC_YAML = Path("dvc.yaml")


class StageRegistryError(ValueError):
    """dvc.yaml's stage declarations are inconsistent (overlapping owners, missing evidence file, bad basis)."""


def under(key: str, prefix: str) -> bool:
    """`bench.batch1.x` is under `bench` and `bench.batch1`, not under `ben`."""
    return key == prefix or key.startswith(prefix + ".")


@dataclass(frozen=True)
class Stage:
    """One dvc.yaml stage as the gate sees it."""

    name: str
    evidence: Path | None
    owns: tuple[str, ...] = ()
    basis: dict[str, str] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    params: tuple[str, ...] = ()  # the params.yaml keys the stage declares (what DVC reruns it for)

    def owner_of(self, key: str) -> bool:
        """Whether this stage may produce `key`."""
        return any(under(key, prefix) for prefix in self.owns)

    def basis_of(self, key: str) -> str:
        """How this stage obtained `key`: the longest matching `meta.basis` prefix or glob, else measured."""
        matches = [p for p in self.basis if under(key, p) or fnmatchcase(key, p)]
        return self.basis[max(matches, key=len)] if matches else "measured"


def _evidence(name: str, body: dict[str, Any]) -> Path | None:
    outputs = [next(iter(m)) if isinstance(m, dict) else m for m in body.get("metrics", [])]
    evidence = [str(e) for e in outputs if str(e).startswith("metrics/")]
    if len(evidence) > 1:
        raise StageRegistryError(f"dvc.yaml stage {name!r}: more than one metrics/ file {evidence}")
    return Path(evidence[0]) if evidence else None


def _basis(name: str, meta: dict[str, Any]) -> dict[str, str]:
    basis = {str(k): str(v) for k, v in (meta.get("basis") or {}).items()}
    bad = {k: v for k, v in basis.items() if v not in BASES}
    if bad:
        raise StageRegistryError(f"dvc.yaml stage {name!r}: unknown basis {bad}; use one of {BASES}")
    return basis


def _stage(name: str, body: dict[str, Any]) -> Stage:
    meta = body.get("meta") or {}
    evidence = _evidence(name, body)
    owns = tuple(str(p) for p in meta.get("owns") or ())
    if evidence and not owns:
        raise StageRegistryError(f"dvc.yaml stage {name!r} writes {evidence} but declares no meta.owns")
    deps = tuple(str(d) for d in body.get("deps", []))
    params = tuple(str(p) for p in body.get("params", []) if isinstance(p, str))
    return Stage(name, evidence, owns, _basis(name, meta), deps, params)


def param_value(params: dict[str, Any], key: str) -> Any:
    """`profile.stress` of a params dict (None when absent)."""
    node: Any = params
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def load_stages(path: Path = DVC_YAML) -> list[Stage]:
    """Every stage of dvc.yaml in order; raises when two stages claim overlapping keys."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise StageRegistryError(f"{path}: cannot read the pipeline declaration ({exc})") from None
    stages = [_stage(name, body) for name, body in (doc.get("stages") or {}).items()]
    claims = [(prefix, s.name) for s in stages for prefix in s.owns]
    for i, (a, sa) in enumerate(claims):
        for b, sb in claims[i + 1 :]:
            if under(a, b) or under(b, a):
                raise StageRegistryError(f"dvc.yaml: stages {sa!r} ({a}) and {sb!r} ({b}) claim the same keys")
    return stages


def evidence_stages(path: Path = DVC_YAML) -> list[Stage]:
    """The stages that write an evidence file the gate reads."""
    return [s for s in load_stages(path) if s.evidence is not None]


def stage_named(name: str, path: Path = DVC_YAML) -> Stage:
    """One stage by name; KeyError naming the known ones otherwise."""
    stages = {s.name: s for s in load_stages(path)}
    if name not in stages:
        raise KeyError(f"no stage {name!r} in {path}; stages: {sorted(stages)}")
    return stages[name]
