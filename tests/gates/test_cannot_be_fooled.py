"""Every way we found to make the gate say A while the engine is broken, each tried and refused.

Each test attacks the gate the way a hurried (or adversarial) user could: an unknown profile, evidence edited
after the decision, a decision edited itself, evidence from another commit, weakening overrides, injected keys,
sign-offs that only look true, missing critical evidence. None may end in Scenario A or a `gates check` exit 0.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gates.__main__ import main
from gates.evaluate import PASS
from gates.evidence import signoff_evidence
from gates.run import GateInputs, judge
from gates.stages import StageRegistryError, load_stages
from tests.gates.project import GOOD, MiniProject
from tests.gates.test_decision import RULE

TRUSTED, NOT_A, UNTRUSTED, BAD_INPUT = 0, 1, 3, 2


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MiniProject:
    monkeypatch.chdir(tmp_path)
    return MiniProject(tmp_path)


@pytest.fixture
def green(project: MiniProject) -> MiniProject:
    """A trusted Scenario A, the starting point of every attack on `gates check`."""
    project.write_good_evidence()
    assert project.evaluate()["scenario"] == "A" and project.check() == TRUSTED
    return project


def edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


# -- profiles --------------------------------------------------------------------------------------------------


def test_an_unknown_profile_is_an_error_not_an_empty_green(project: MiniProject, capsys) -> None:
    project.write_good_evidence()
    assert main(["evaluate", "--profile", "bogus"]) == BAD_INPUT
    assert "unknown profile 'bogus'" in capsys.readouterr().err


def test_a_declared_profile_the_spec_does_not_know_is_refused(project: MiniProject, capsys) -> None:
    (project.root / "conf" / "profile" / "nightly.yaml").write_text("name: nightly\nmin_samples: 1\n")
    project.write_good_evidence()
    assert main(["evaluate", "--profile", "nightly"]) == BAD_INPUT
    assert "not one of" in capsys.readouterr().err


def test_a_decision_relabelled_with_another_profile_is_not_trusted(green: MiniProject, capsys) -> None:
    edit(green.root / "reports" / "decision.json", lambda d: d["gate"].update(profile="bogus"))
    assert green.check() == UNTRUSTED and "not declared in conf/profile" in capsys.readouterr().err


def test_a_profile_that_judges_nothing_is_invalid_not_a(project: MiniProject) -> None:
    doc = project.evaluate()  # no evidence at all: every criterion INVALID or NOT_IN_PROFILE
    assert doc["scenario"] == "INVALID" and project.check() == NOT_A


def test_a_partial_profile_never_reads_all_criteria_met(green: MiniProject) -> None:
    doc = json.loads((green.root / "reports" / "decision.json").read_text())
    report = (green.root / "reports" / "release_report.md").read_text()
    assert "3 of 5 criteria judged" in doc["summary"] and "all criteria met" not in report.lower()
    assert "NOT_IN_PROFILE | big: batch 8" in report  # every criterion is listed, gated here or not


# -- evidence and decision integrity ----------------------------------------------------------------------------


def test_editing_a_metric_after_the_decision_is_caught_naming_the_file(green: MiniProject, capsys) -> None:
    edit(green.root / "metrics" / "bench.json", lambda d: d["bench"]["batch1"].update(decode_tok_s=12.5))
    assert green.check() == UNTRUSTED
    assert "metrics/bench.json changed after the decision" in capsys.readouterr().err


def test_deleting_or_adding_evidence_is_caught(green: MiniProject, capsys) -> None:
    (green.root / "metrics" / "quality.json").unlink()
    assert green.check() == UNTRUSTED and "metrics/quality.json is gone" in capsys.readouterr().err


def test_editing_the_decision_itself_is_caught_by_re_evaluation(project: MiniProject, capsys) -> None:
    project.write_metrics("bench", {"bench": {"batch1": {"decode_tok_s": 2.0}}, "latency": {"itl_ms": {"p95": 500.0,
                                    "n": 30}}})  # fmt: skip
    project.write_metrics("quality", {"quality": {"greedy": {"token_agreement_pct": 3.0}}})
    assert project.evaluate()["scenario"] == "C"

    def forge(doc: dict) -> None:
        doc["scenario"] = "A"
        for check in doc["checks"]:
            check["status"] = PASS if check["status"] != "NOT_IN_PROFILE" else check["status"]

    edit(project.root / "reports" / "decision.json", forge)
    assert project.check() == UNTRUSTED
    assert "the evidence gives Scenario C, the decision says A" in capsys.readouterr().err


def test_a_decision_from_another_commit_is_not_trusted_unless_allowed(green: MiniProject, capsys) -> None:
    (green.root / "engine.py").write_text("broken = True\n")
    green.commit("change the engine after the decision")
    assert green.check() == UNTRUSTED and "HEAD is" in capsys.readouterr().err
    assert green.check("--allow-other-commit") == TRUSTED


def test_evidence_produced_at_another_commit_or_a_dirty_tree_is_not_trusted(project: MiniProject, capsys) -> None:
    project.write_good_evidence()
    project.write_metrics("quality", {"quality": {"greedy": {"token_agreement_pct": 100.0}}}, git_sha="0" * 40)
    project.evaluate()
    assert project.check() == UNTRUSTED and "metrics/quality.json produced at git 0000000000" in capsys.readouterr().err
    project.write_metrics("quality", {"quality": {"greedy": {"token_agreement_pct": 100.0}}}, git_dirty=True)
    project.evaluate()
    assert project.check() == UNTRUSTED and "(dirty)" in capsys.readouterr().err


def test_an_old_decision_is_not_trusted(green: MiniProject, capsys) -> None:
    old = (datetime.now(UTC) - timedelta(days=8)).replace(microsecond=0).isoformat()
    edit(green.root / "reports" / "decision.json", lambda d: d["gate"].update(created=old))
    assert green.check() == UNTRUSTED and "older than 7 days" in capsys.readouterr().err
    assert green.check("--max-age", "10") == TRUSTED


def test_a_named_evidence_file_that_does_not_exist_is_an_error(project: MiniProject, capsys) -> None:
    assert main(["evaluate", "--profile", "ci", "--metrics", "metrics/nope.json"]) == BAD_INPUT
    assert "metrics/nope.json" in capsys.readouterr().err


def test_a_file_that_is_not_a_decision_is_not_trusted(project: MiniProject) -> None:
    (project.root / "reports").mkdir()
    (project.root / "reports" / "decision.json").write_text(json.dumps({"scenario": "A", "checks": []}))
    assert project.check() == UNTRUSTED


# -- overrides ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "stamp"),
    [
        (["--no-validate"], "validation off"),
        (["--min-samples", "1"], "min_samples=1 (declared 10)"),
        (["--metrics", "metrics/bench.json", "copy/quality.json"], "evidence files chosen by hand"),
        (["--spec", "other.yaml"], "spec=other.yaml"),
        (["--baseline", "mine.json"], "baseline=mine.json"),
    ],
)
def test_overrides_are_stamped_and_refused_unless_accepted(project: MiniProject, flags, stamp, capsys) -> None:
    (project.root / "other.yaml").write_text((project.root / "conf" / "gates" / "phase3.yaml").read_text())
    project.commit("a second spec")
    project.write_good_evidence()
    (project.root / "copy").mkdir()
    (project.root / "copy" / "quality.json").write_text((project.root / "metrics" / "quality.json").read_text())
    doc = project.evaluate(*flags)
    assert any(stamp in o for o in doc["gate"]["overrides"]), doc["gate"]["overrides"]
    assert stamp in (project.root / "reports" / "release_report.md").read_text()
    assert project.check() == UNTRUSTED and "--accept-overrides" in capsys.readouterr().err
    assert project.check("--accept-overrides") == TRUSTED


def test_a_profile_setting_changed_from_its_declaration_is_an_override(project: MiniProject) -> None:
    project.write_good_evidence()
    params = {"profile": {"name": "ci", "min_samples": 2, "min_evaluated_pct": 40}}
    j = judge(GateInputs(profile="ci", params=params))
    assert j.gate["overrides"] == ["profile.min_samples=2 (declared 10)"]
    other = judge(GateInputs(profile="weekly", params=params))
    assert other.gate["overrides"] == ["profile=weekly (the evidence was made with profile 'ci')"]


def test_deleting_an_override_from_the_decision_is_caught(project: MiniProject, capsys) -> None:
    project.write_good_evidence()
    project.evaluate("--min-samples", "1")
    edit(project.root / "reports" / "decision.json", lambda d: d["gate"].update(overrides=[]))
    assert project.check() == UNTRUSTED and "are not its inputs'" in capsys.readouterr().err


def test_recorded_parameters_must_be_the_evidences(project: MiniProject, capsys) -> None:
    (project.root / "params.yaml").write_text(json.dumps({"profile": {"name": "ci", "min_samples": 10,
                                                                     "min_evaluated_pct": 40}}))  # fmt: skip
    project.write_good_evidence()
    project.write_metrics("bench", GOOD["bench"], params={"profile.min_samples": 10})
    project.evaluate()
    assert project.check() == TRUSTED
    project.write_metrics("bench", GOOD["bench"], params={"profile.min_samples": 1})  # made with tiny sizes
    project.evaluate()
    assert project.check() == UNTRUSTED and "made with other profile.min_samples" in capsys.readouterr().err


# -- who may produce a key ---------------------------------------------------------------------------------------


def test_a_metrics_file_cannot_inject_a_key_it_does_not_own(project: MiniProject, capsys) -> None:
    project.write_good_evidence()
    project.write_metrics("bench", {"bench": {"batch1": {"decode_tok_s": 12.0}}, "signoff": {"approved": True}})
    assert main(["evaluate", "--profile", "ci"]) == BAD_INPUT
    assert "does not own ['signoff.approved']" in capsys.readouterr().err


def test_a_file_cannot_claim_another_stage(project: MiniProject, capsys) -> None:
    project.write_good_evidence()
    path = project.write_metrics("quality", {"quality": {"greedy": {"token_agreement_pct": 100.0}}})
    edit(path, lambda d: d["_provenance"].update(stage="bench"))
    assert main(["evaluate", "--profile", "ci"]) == BAD_INPUT
    assert "dvc.yaml gives it to 'quality'" in capsys.readouterr().err


def test_a_stage_declaring_its_run_invalid_turns_its_checks_invalid_with_the_reason(project: MiniProject) -> None:
    project.write_good_evidence()
    latency = {"latency": {"itl_ms": {"p95": 50.0, "n": 30}}}
    why = "MLPerf LoadGen INVALID: TPOT early stopping: Run unsuccessful."
    project.write_metrics("bench", {**GOOD["bench"], **latency, "_invalid": {"latency": why}})
    checks = {c["id"]: c for c in project.evaluate()["checks"]}
    assert checks["p95"]["status"] == "INVALID" and why in checks["p95"]["note"]
    assert checks["speed"]["status"] == PASS  # only the keys under the declared prefix


def test_a_stage_cannot_invalidate_another_stage_s_evidence_or_send_garbage(project: MiniProject, capsys) -> None:
    project.write_good_evidence()
    project.write_metrics("quality", {**GOOD["quality"], "_invalid": {"bench": "sabotage"}})
    checks = {c["id"]: c for c in project.evaluate()["checks"]}
    assert checks["speed"]["status"] == PASS and checks["p95"]["status"] == PASS
    project.write_metrics("quality", {**GOOD["quality"], "_invalid": ["quality"]})
    assert main(["evaluate", "--profile", "ci"]) == BAD_INPUT
    assert "_invalid must map key prefixes to reasons" in capsys.readouterr().err


def test_two_stages_cannot_own_the_same_keys(project: MiniProject) -> None:
    dvc = project.root / "dvc.yaml"
    dvc.write_text(dvc.read_text().replace("owns: [quality]", "owns: [quality, bench.batch1]"))
    with pytest.raises(StageRegistryError, match="claim the same keys"):
        load_stages()


def test_evidence_without_provenance_is_invalid(project: MiniProject) -> None:
    project.write_good_evidence()
    (project.root / "metrics" / "quality.json").write_text(json.dumps(GOOD_QUALITY))
    doc = project.evaluate()
    correct = next(c for c in doc["checks"] if c["id"] == "correct")
    assert correct["status"] == "INVALID" and "no _provenance" in correct["note"] and doc["scenario"] == "C"


GOOD_QUALITY = {"quality": {"greedy": {"token_agreement_pct": 100.0}}}


# -- sign-offs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "invalid"),
    [
        ("product_manager: true\nengineering_lead: true\nqa_lead: true\nrelease_manager: true\n", 1.0, False),
        ("product_manager: 'false'\nengineering_lead: true\nqa_lead: true\nrelease_manager: true\n", 0.0, True),
        ("product_manager: yes\nengineering_lead: true\nqa_lead: true\nrelease_manager: true\n", 0.0, True),
        ("product_manager: true\nproduct_manager: true\nqa_lead: true\nrelease_manager: true\n", 0.0, True),
        ("# nobody yet\nproduct_manager: false\n", 0.0, False),
    ],
)
def test_signoffs_parse_strictly(tmp_path: Path, text: str, value: float, invalid: bool) -> None:
    path = tmp_path / "signoff.yaml"
    path.write_text(text)
    ev = signoff_evidence(path, RULE)["signoff.approved"]
    assert ev.value == value and (ev.invalid_reason is not None) == invalid
    if invalid:
        assert f"{path}:" in ev.invalid_reason


# -- verdict rules -----------------------------------------------------------------------------------------------


def test_a_wrong_engine_is_scenario_c_with_correctness_named_first(project: MiniProject) -> None:
    project.write_metrics("bench", {"bench": {"batch1": {"decode_tok_s": 2.0}}, "latency": {"itl_ms": {"p95": 50.0,
                                    "n": 30}}})  # fmt: skip
    project.write_metrics("quality", {"quality": {"greedy": {"token_agreement_pct": 3.1}}})
    doc = project.evaluate()
    assert doc["scenario"] == "C" and doc["top_reasons"][0].startswith("FAIL correct (major)")
