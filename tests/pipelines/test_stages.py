"""dvc.yaml is the one declaration of the pipeline: the Prefect flow, the gate and the stages all follow it."""

from __future__ import annotations

import pytest
import yaml

from gates.stages import evidence_stages, load_stages
from pipelines.__main__ import COMMANDS
from pipelines.release_gate import stage_flows
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_the_release_gate_flow_runs_every_dvc_stage_in_order() -> None:
    assert [name for name, _ in stage_flows()] == [s.name for s in load_stages()]
    assert [s.name for s in load_stages()][-1] == "gate"


def test_the_gate_stage_depends_on_every_evidence_file() -> None:
    gate = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["gate"]
    evidence = {str(s.evidence) for s in evidence_stages()}
    assert evidence <= set(gate["deps"]) and len(evidence) == 13


def test_each_stage_runs_its_own_module_and_writes_metrics_named_for_it() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in load_stages():
        assert stages[stage.name]["cmd"] == f"python -m pipelines {stage.name}" and stage.name in COMMANDS
        if stage.evidence is not None:
            assert stage.evidence.parent.name == "metrics" and stage.owns
