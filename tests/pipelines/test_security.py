"""The security stage: a dependency audit that audited nothing must not read as "no vulnerabilities"."""

from __future__ import annotations

from pipelines.security import audit_summary, static_findings


def dep(name: str, vulns: int = 0, skipped: bool = False) -> dict:
    if skipped:
        return {"name": name, "skip_reason": f"Dependency not found on PyPI and could not be audited: {name} (1.0)"}
    return {"name": name, "version": "1.0", "vulns": [{"id": f"PYSEC-{name}-{i}"} for i in range(vulns)]}


def test_pip_audits_all_skipped_answer_is_not_a_pass() -> None:
    """pip-audit says "No known vulnerabilities found" and exits 0 when every package was skipped."""
    out = audit_summary({"dependencies": [dep("a", skipped=True), dep("b", skipped=True)], "fixes": []})
    assert "vulnerabilities" not in out and out["audit"]["audited"] == 0
    assert out["audit"]["incomplete"].startswith("2 of 2 not audited, e.g. Dependency not found on PyPI")


def test_one_skipped_pin_is_enough_to_leave_it_unmeasured() -> None:
    out = audit_summary({"dependencies": [dep("a"), dep("b", skipped=True)]})
    assert "vulnerabilities" not in out and out["audit"]["skipped"] == 1


def test_a_complete_audit_counts_every_vulnerability() -> None:
    out = audit_summary({"dependencies": [dep("a", vulns=2), dep("b"), dep("c", vulns=1)]})
    assert out["vulnerabilities"] == 3 and out["audit"]["found"] == {
        "a": ["PYSEC-a-0", "PYSEC-a-1"],
        "c": ["PYSEC-c-0"],
    }
    assert audit_summary({"dependencies": [dep("a")]})["vulnerabilities"] == 0
    assert "vulnerabilities" not in audit_summary({"dependencies": []})  # nothing listed is nothing audited


def test_static_findings_count_what_ruff_s_rules_flag(tmp_path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.ruff.lint]\nselect = ["S", "F"]\nignore = ["S105", "S607"]\n')
    (tmp_path / "bad.py").write_text(
        'import subprocess\nsubprocess.run("ls", shell=True)\npassword = "hunter2"\nimport os\n'
    )
    out = static_findings.fn([str(tmp_path)])
    assert out["static_by_rule"] == {"S602": 1}  # the project's own ignore holds; F401 (not S) is not counted
