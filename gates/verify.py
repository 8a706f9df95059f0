"""Re-verify a decision.json before trusting it (`python -m gates check`).

A decision holds only while everything it rests on is unchanged: the spec, every evidence file, the baseline and
sign-offs (by sha256), the commit (HEAD, clean tree, and every evidence file produced at that commit), its age,
a declared profile, no overrides (unless accepted), and the verdict itself, which is evaluated again from the
recorded inputs and must come out the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gates.profiles import known_profiles
from gates.provenance import age_days, git_dirty, git_head, sha256_file
from gates.run import GateInputs, default_evidence, judge
from gates.stages import param_value


@dataclass
class CheckOptions:
    """How strict `gates check` is."""

    allow_other_commit: bool = False
    accept_overrides: bool = False
    max_age_days: float = 7.0


def _hash_problem(label: str, fact: dict[str, Any] | None) -> str | None:
    if fact is None:
        return None
    path = Path(fact["path"])
    if not path.is_file():
        return f"{label} {path} is gone since the decision"
    if sha256_file(path) != fact["sha256"]:
        return f"{label} {path} changed after the decision (sha256 differs)"
    return None


def _evidence_problems(doc: dict[str, Any]) -> list[str]:
    problems = [_hash_problem("evidence file", {"path": p, **e}) for p, e in doc["evidence"].items()]
    g = doc["gate"]
    problems.append(_hash_problem("spec", {"path": g["spec"], "sha256": g["spec_sha256"]}))
    problems += [_hash_problem(name, g.get(name)) for name in ("baseline", "signoff", "dvc_yaml")]
    new = [str(p) for p in default_evidence() if p.is_file() and str(p) not in doc["evidence"]]
    if new and not any(o.startswith("evidence files chosen by hand") for o in g["overrides"]):
        problems.append(f"evidence file(s) {new} appeared after the decision")
    return [p for p in problems if p]


def _commit_problems(doc: dict[str, Any]) -> list[str]:
    g, head = doc["gate"], git_head()
    problems = []
    if g.get("git_sha") != head:
        problems.append(f"decision made at git {str(g.get('git_sha'))[:10]}, HEAD is {head[:10]}")
    if g.get("git_dirty") or git_dirty():
        problems.append("the decision or the working tree has uncommitted changes")
    for path, e in doc["evidence"].items():
        prov = e["provenance"]
        if prov.get("git_sha") != g.get("git_sha") or prov.get("git_dirty"):
            problems.append(f"{path} produced at git {str(prov.get('git_sha'))[:10]}"
                            f"{' (dirty)' if prov.get('git_dirty') else ''}, not the decision's commit")  # fmt: skip
    return problems


def _params_problems(doc: dict[str, Any]) -> list[str]:
    """Each evidence file was made with the recorded parameters, as far as its stage depends on them."""
    recorded = doc["gate"].get("params")
    problems = []
    for path, e in doc["evidence"].items():
        used = e["provenance"].get("params") or {}
        if used and recorded is None:
            problems.append(f"the decision does not record the parameters {path} was made with")
            continue
        changed = sorted(k for k, v in used.items() if param_value(recorded, k) != v)
        if changed:
            problems.append(f"{path} was made with other {', '.join(changed)} than the decision records")
    return problems


def _verdict_problems(doc: dict[str, Any]) -> list[str]:
    g = doc["gate"]
    forced = any(o.startswith("evidence files chosen by hand") for o in g["overrides"])
    j = judge(
        GateInputs(
            profile=g["profile"],
            model=g.get("model", ""),
            spec=Path(g["spec"]),
            min_samples=g["min_samples"],
            metrics=[Path(p) for p in doc["evidence"]] if forced else None,
            baseline=Path(g["baseline_path"]),
            signoff=Path(g["signoff"]["path"]) if g.get("signoff") else None,
            validate=g["validated"],
            params=g.get("params"),
        )
    )
    problems = []
    if sorted(j.gate["overrides"]) != sorted(g["overrides"]):
        problems.append(f"the decision's overrides {g['overrides']} are not its inputs' {j.gate['overrides']}")
    if j.decision.scenario != doc["scenario"]:
        problems.append(f"the evidence gives Scenario {j.decision.scenario}, the decision says {doc['scenario']}")
    recorded = {c["id"]: c["status"] for c in doc["checks"]}
    changed = [r.id for r in j.results if recorded.get(r.id) != r.status]
    if changed or len(recorded) != len(j.results):
        problems.append(f"check statuses differ from a re-evaluation: {changed[:5]}")
    return problems


def verify(doc: dict[str, Any], options: CheckOptions) -> list[str]:
    """Every reason not to trust this decision (empty: it stands)."""
    g = doc.get("gate")
    if not isinstance(g, dict) or "evidence" not in doc:
        return ["not a decision written by this gate (no `gate` / `evidence` record)"]
    if g["profile"] not in known_profiles():
        return [f"profile {g['profile']!r} is not declared in conf/profile/ ({known_profiles()})"]
    problems = _evidence_problems(doc) + _params_problems(doc)
    if not options.allow_other_commit:
        problems += _commit_problems(doc)
    if g.get("created") is None or age_days(g["created"]) > options.max_age_days:
        problems.append(f"decision older than {options.max_age_days:g} days (made {g.get('created')})")
    if g["overrides"] and not options.accept_overrides:
        problems.append(f"made with overrides (pass --accept-overrides to accept): {'; '.join(g['overrides'])}")
    if not problems:  # re-evaluating changed files would only repeat what the hashes said
        problems += _verdict_problems(doc)
    return problems
