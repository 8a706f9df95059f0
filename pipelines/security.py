"""Stage `security`: known vulnerabilities in the pinned dependencies and bandit-style findings in our code
(`python -m pipelines security`).

`pip-audit` checks every pin of requirements.lock against its vulnerability service. It reports "No known
vulnerabilities found" and exits 0 even when it could audit nothing (a package the service does not know is
skipped, and an unreachable or proxied index makes every package unknown), so the stage counts what was
audited: only a complete audit yields `security.vulnerabilities`; an incomplete one leaves it unmeasured, with
the reason in `security.audit`, and the release gate cannot pass it. Ruff's `S` rules (the project's own
selection in pyproject.toml) count `security.static_findings`. Writes metrics/security.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from pipelines.common import now_utc, stage_run_name, write_metrics

LOCK = Path("requirements.lock")
CODE = ["engine", "gates", "pipelines"]
AUDIT_TIMEOUT_S = 180  # 18 s here; a network that drops packets would make it wait 30 s per pin


def audit_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Counts from pip-audit's JSON; `vulnerabilities` only when every dependency was audited."""
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    found = {d["name"]: [v["id"] for v in d.get("vulns", [])] for d in deps if d.get("vulns")}
    out: dict[str, Any] = {"audit": {"dependencies": len(deps), "audited": len(deps) - len(skipped),
                                     "skipped": len(skipped), "found": found}}  # fmt: skip
    if deps and not skipped:
        out["vulnerabilities"] = sum(map(len, found.values()))
    else:
        reason = skipped[0]["skip_reason"] if skipped else "pip-audit listed no dependencies"
        out["audit"]["incomplete"] = f"{len(skipped)} of {len(deps)} not audited, e.g. {reason}"
    return out


@task
def dependency_audit(lock: Path) -> dict[str, Any]:
    """pip-audit over the exact pins (no resolution, no install), torch's included (the Makefile installs it
    apart from the lock, to get the CPU build)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as pins:
        pins.write(lock.read_text() + f"torch=={version('torch').split('+')[0]}\n")
        pins.flush()
        command = [sys.executable, "-m", "pip_audit", "-r", pins.name, "--no-deps", "--disable-pip", "--format",
                   "json", "--progress-spinner", "off", "--timeout", "30"]  # fmt: skip
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=AUDIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"audit": {"incomplete": f"pip-audit did not finish in {AUDIT_TIMEOUT_S} s"}}
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"audit": {"incomplete": f"pip-audit exited {proc.returncode}: {tail[0]}"}}
    return audit_summary(report)


@task
def static_findings(paths: list[str]) -> dict[str, Any]:
    """Ruff's S rules over the shipped code as the project selects them (pyproject.toml says which it leaves out
    and why; a `--select S` here would bring those back)."""
    command = [sys.executable, "-m", "ruff", "check", "--output-format", "json", *paths]
    findings = json.loads(subprocess.run(command, capture_output=True, text=True, check=False).stdout or "[]")
    findings = [f for f in findings if f["code"] and f["code"].startswith("S")]
    by_rule: dict[str, int] = {}
    for f in findings:
        by_rule[f["code"]] = by_rule.get(f["code"], 0) + 1
    return {"static_findings": len(findings), "static_by_rule": by_rule}


@flow(name="security", flow_run_name=stage_run_name)
def security_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Audit the pins and the code; write the evidence."""
    started = now_utc()
    metrics = {"security": {**dependency_audit(LOCK), **static_findings(CODE)}}
    if "vulnerabilities" not in metrics["security"]:
        get_run_logger().warning("dependency audit incomplete: %s", metrics["security"]["audit"]["incomplete"])
    write_metrics("security", metrics, params_path, started)
    return metrics
