"""A miniature project for gate tests: dvc.yaml, conf/, evidence files with provenance, a git commit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from gates.__main__ import main
from gates.provenance import git_head

SPEC = """name: t
source: t
max_minor_issues: 2
profiles: [ci, weekly]
signoff: {roles: [pm, eng], min_approvals: 2, required: [pm]}
criteria:
  - {id: correct, part: '2.0', dimension: correctness, description: greedy agreement,
     metric: quality.greedy.token_agreement_pct, comparator: '>=', acceptance: 99, unit: '%', profiles: [ci, weekly]}
  - {id: speed, part: '1.1', dimension: performance, description: speed, metric: bench.batch1.decode_tok_s,
     comparator: '>=', acceptance: 10, unit: tok/s, severity: minor, profiles: [ci, weekly]}
  - {id: p95, part: '1.2', dimension: performance, description: latency, metric: latency.itl_ms.p95,
     comparator: '<', acceptance: 100, unit: ms, kind: percentile, severity: minor, profiles: [ci, weekly]}
  - {id: big, part: '1.1', dimension: performance, description: batch 8, metric: bench.batch8.decode_tok_s,
     comparator: '>=', acceptance: 1, unit: tok/s, severity: minor, profiles: [weekly]}
  - {id: signed, part: '6', dimension: release, description: sign-off, metric: signoff.approved,
     comparator: '==', acceptance: 1, unit: bool, severity: major, profiles: [weekly]}
"""
DVC_YAML = """stages:
  bench:
    cmd: python -m pipelines bench
    metrics: [metrics/bench.json: {cache: false}]
    meta: {owns: [bench, latency], basis: {bench.*_vs_batch1: derived}}
  quality:
    cmd: python -m pipelines quality
    metrics: [metrics/quality.json: {cache: false}]
    meta: {owns: [quality]}
"""
PROFILES = {
    "ci": "name: ci\nmin_samples: 10\nmin_evaluated_pct: 40\n",
    "weekly": "name: weekly\nmin_samples: 100\nmin_evaluated_pct: 50\n",
}
HARDWARE = {"cpu": "test cpu", "cores": "2"}
GOOD = {
    "bench": {"bench": {"batch1": {"decode_tok_s": 12.0}}, "latency": {"itl_ms": {"p95": 50.0, "n": 30}}},
    "quality": {"quality": {"greedy": {"token_agreement_pct": 100.0}}},
}


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)  # fmt: skip


class MiniProject:
    """A throw-away project root (the current directory while a test runs)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "conf" / "gates").mkdir(parents=True)
        (root / "conf" / "profile").mkdir()
        (root / "conf" / "gates" / "phase3.yaml").write_text(SPEC)
        for name, text in PROFILES.items():
            (root / "conf" / "profile" / f"{name}.yaml").write_text(text)
        (root / "dvc.yaml").write_text(DVC_YAML)
        (root / ".gitignore").write_text("metrics/\nreports/\n")
        git(root, "init", "-q")
        self.commit("project")

    def commit(self, message: str) -> None:
        """Commit every tracked-to-be file (evidence and reports are ignored, as in the real project)."""
        git(self.root, "add", "-A")
        git(self.root, "commit", "-qm", message, "--allow-empty")

    def write_metrics(self, stage: str, data: dict[str, Any], **provenance: Any) -> Path:
        """An evidence file as the stage would write it, produced at HEAD unless provenance says otherwise."""
        path = self.root / "metrics" / f"{stage}.json"
        path.parent.mkdir(exist_ok=True)
        prov = {"stage": stage, "git_sha": git_head(), "git_dirty": False, "hardware": HARDWARE, **provenance}
        path.write_text(json.dumps({"_provenance": prov, **data}))
        return path

    def write_good_evidence(self) -> None:
        """Evidence on which every ci criterion passes."""
        for stage, data in GOOD.items():
            self.write_metrics(stage, data)

    def evaluate(self, *extra: str) -> dict[str, Any]:
        """`python -m gates evaluate` (GX validation off unless asked: it is slow) and the decision it wrote."""
        args = ["evaluate", "--profile", "ci", *extra] if "--profile" not in extra else ["evaluate", *extra]
        assert main(args) == 0
        return json.loads((self.root / "reports" / "decision.json").read_text())

    def check(self, *extra: str) -> int:
        """`python -m gates check reports/decision.json`'s exit code."""
        return main(["check", "reports/decision.json", *extra])
