"""Prefect flows on synthetic evidence: the gate flow decides, reports and logs to a real MLflow store."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from gates.provenance import now_utc
from pipelines.common import write_metrics
from pipelines.config import compose
from pipelines.stress import rss_trend
from tests.conftest import ROOT

METRICS = {  # stage -> its evidence
    "bench": {"bench": {"batch1": {"decode_tok_s": 20.0}, "batch4_vs_batch1": 3.2, "batch8_vs_batch1": 5.5}},
    "codecheck": {"code": {"compile_warnings": 0, "static_analysis_violations": 0, "complexity_max": 9}},
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "conf", "conf")
    shutil.copy(ROOT / "dvc.yaml", "dvc.yaml")
    params = compose(["model=tiny-random"])
    Path("params.yaml").write_text(yaml.safe_dump(params))
    for stage, data in METRICS.items():
        write_metrics(stage, data, "params.yaml", now_utc())
    return tmp_path


def test_gate_flow_writes_the_decision_and_an_mlflow_run(prefect_harness, project: Path) -> None:
    import mlflow

    from pipelines.gate import gate_flow

    state = gate_flow("params.yaml", return_state=True)
    assert state.is_completed()
    out = state.result()
    doc = json.loads(Path("reports/decision.json").read_text())
    assert out["scenario"] == doc["scenario"] == "INVALID"  # most ci checks have no evidence here: too little
    statuses = {c["id"]: c["status"] for c in doc["checks"]}
    assert statuses["perf.batching.batch4_vs_batch1"] == "PASS"
    assert statuses["quality.tests_passing"] == "INVALID"
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tollgate-release-gate"], output_format="list")
    parent = next(r for r in runs if r.info.run_id == out["mlflow_run_id"])
    assert parent.data.tags["profile"] == "ci" and parent.data.tags["model"] == "tiny-random"
    assert "hardware.cpu" in parent.data.tags and parent.data.params["profile.name"] == "ci"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {r.data.tags["stage"] for r in children} == {"bench", "code"}
    assert doc["evidence"]["metrics/bench.json"]["stage"] == "bench"
    bench = next(r for r in children if r.data.tags["stage"] == "bench")
    assert bench.data.metrics["bench.batch1.decode_tok_s"] == 20.0
    prov = json.loads(Path("metrics/bench.json").read_text())["_provenance"]
    span = [datetime.fromisoformat(prov[k]).timestamp() * 1000 for k in ("started", "finished")]
    assert [bench.info.start_time, bench.info.end_time] == [int(t) for t in span]  # the stage's own times
    assert "INVALID" in parent.data.tags["mlflow.note.content"]  # the run page's description: the verdict
    experiment = mlflow.get_experiment_by_name("tollgate-release-gate")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs table


def test_a_failing_task_fails_its_flow(prefect_harness, project: Path) -> None:
    from pipelines.gate import gate_flow

    Path("params.yaml").write_text("model: {name: broken}\n")
    state = gate_flow("params.yaml", return_state=True)
    assert state.is_failed()


def test_written_metrics_carry_their_provenance(project: Path) -> None:
    prov = json.loads(Path("metrics/bench.json").read_text())["_provenance"]
    assert prov["stage"] == "bench" and prov["profile"] == "ci" and "cpu" in prov["hardware"]
    assert len(prov["params_sha256"]) == 64 and len(prov["spec_sha256"]) == 64
    assert set(prov["inputs"]) == {"models/tiny-random", "engine", "pipelines/bench.py"}
    assert prov["params"]["model.name"] == "tiny-random" and prov["params"]["profile.bench"]["new_tokens"] == 32


def test_rss_trend_is_a_slope_with_its_interval() -> None:
    flat = [(t * 10.0, 1000.0 + (t % 3)) for t in range(80)]
    trend = rss_trend(flat)
    assert trend["n"] == 60 and trend["ci_low_mb_per_hour"] < 0 < trend["ci_high_mb_per_hour"]
    growing = [(t * 10.0, 1000.0 + 5 * t + (t % 3)) for t in range(80)]
    trend = rss_trend(growing)
    assert trend["mb_per_hour"] == pytest.approx(5 * 360, rel=0.01) and trend["ci_low_mb_per_hour"] > 0
    assert rss_trend(growing[:2]) == {"n": 2}  # no slope from two points; the gate wants the profile's min_samples


def test_calibrate_flow_measures_every_strategy_and_the_fallback(
    prefect_harness, tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.calibrate import calibrate_flow

    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "dvc.yaml", "dvc.yaml")  # the stage's evidence file and keys are declared there
    params = compose(
        [
            "model=tiny-random",
            f"model.path={tiny_llama}",
            f"data.eval_text={ROOT / 'data/wikitext-2/test.txt'}",
            f"data.calibration_text={ROOT / 'data/wikitext-2/valid.txt'}",
            "profile.calibrate.calibration_tokens=128",
            "profile.calibrate.eval_tokens=128",
            "profile.calibrate.context=64",
            "profile.bench.prompt_len=8",
            "profile.bench.new_tokens=4",
            "profile.bench.warmup=0",
            "calibrate.limits.max_loss_pct=5",
        ]
    )
    Path("params.yaml").write_text(yaml.safe_dump(params))
    state = calibrate_flow("params.yaml", return_state=True)
    assert state.is_completed()
    doc = json.loads(Path("metrics/calibrate.json").read_text())
    quant = doc["quant"]
    assert {"none", "int8", "int4", "gptq", "awq", "bitnet"} <= quant.keys()
    for name in ("int8", "int4", "gptq", "awq", "bitnet"):
        row = quant[name]
        assert row["decode_tok_s"] > 0 and row["fallback_layers"] == 0 and 0 <= row["top1_agreement"] <= 1
        assert Path("models/quant", f"tiny-random-{name}", "quantization.json").is_file()
    assert quant["gptq"]["calibration_s"] > 0 and quant["none"]["accuracy_loss_pct"] == 0
    assert quant["selected"] in quant and quant[quant["selected"]]["accuracy_loss_pct"] <= 5
    assert doc["features"]["quantization"]["complete"] == 1
    assert "faults" not in doc  # the quantization fault is the faults stage's (tests/pipelines/test_faults.py)
    table = Path("reports/quant_head_to_head.md").read_text()
    assert "| awq |" in table and "Auto-selector" in table
    assert Path("plots/quant_head_to_head.csv").read_text().startswith("strategy,perplexity")


def test_stage_runs_are_named_and_tagged_for_what_they_served(prefect_harness, project: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    from pipelines.common import stage_cli
    from pipelines.gate import gate_flow

    assert stage_cli("gate", gate_flow, "", ["--params", "params.yaml"]) == 0
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(limit=1, sort=FlowRunSort.START_TIME_DESC)
    assert run.name.startswith("gate · ci · tiny-random · ")  # not Prefect's random "hospitable-galago"
    assert {"profile:ci", "model:tiny-random"} <= set(run.tags)
