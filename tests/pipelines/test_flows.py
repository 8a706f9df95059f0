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
    "bench": {
        "bench": {
            "batch1": {"decode_tok_s": 20.0, "runs": [{"decode_tok_s": v} for v in (19.0, 20.0, 21.0)]},
            "batch4_vs_batch1": 3.2,
            "batch8_vs_batch1": 5.5,
        }
    },
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
    history = mlflow.MlflowClient().get_metric_history(bench.info.run_id, "bench.batch1.runs.decode_tok_s")
    assert [(m.step, m.value) for m in history] == [(0, 19.0), (1, 20.0), (2, 21.0)]  # repetitions as steps
    assert f"/runs/{parent.info.run_id}" in Path("reports/release_report.html").read_text()  # linked back


def test_the_next_gate_run_reports_what_changed_since_the_last(prefect_harness, project: Path) -> None:
    from prefect.client.orchestration import get_client

    from pipelines.gate import gate_flow

    first = gate_flow("params.yaml")
    assert json.loads(Path("reports/decision.json").read_text())["changes"] is None  # nothing before it
    slower = {"bench": {**METRICS["bench"]["bench"], "batch4_vs_batch1": 1.5}}
    write_metrics("bench", slower, "params.yaml", now_utc())
    gate_flow("params.yaml")
    diff = json.loads(Path("reports/decision.json").read_text())["changes"]
    assert {"id": "perf.batching.batch4_vs_batch1", "before": "PASS", "after": "FAIL"} in diff["new_failures"]
    assert diff["previous"]["scenario"] == first["scenario"]
    html = Path("reports/release_report.html").read_text()
    assert "new failure: perf.batching.batch4_vs_batch1 (PASS -&gt; FAIL)" in html
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts(limit=50)
    decision = next(a for a in artifact if a.key == "release-decision")
    assert decision.type == "markdown" and "perf.batching.batch4_vs_batch1" in decision.data


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
            f"data.eval_domains=[{ROOT / 'data/wikitext-2/test.txt'},{ROOT / 'data/python-docs/test.txt'}]",
            "profile.calibrate.calibration_tokens=128",
            "profile.calibrate.eval_tokens=128",
            "profile.calibrate.context=64",
            "profile.calibrate.sensitivity_tokens=64",
            "profile.calibrate.int8_blocks=[1,5]",
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
    for name in ("int8", "int4", "gptq", "awq", "bitnet", "mixed"):
        row = quant[name]
        assert row["decode_tok_s"] > 0 and row["fallback_layers"] == 0 and 0 <= row["top1_agreement"] <= 1
        assert set(row["domains"]) == {"wikitext-2", "python-docs"} and row["kl_mean"] > 0
        assert row["heldout"] == {k: row["domains"]["python-docs"][k] for k in row["heldout"]}  # valid.txt: wikitext
        assert Path("models/quant", f"tiny-random-{name}", "quantization.json").is_file()
    plan = quant["mixed"]["options"]
    assert plan["base"] in ("int4", "gptq", "awq") and 1 <= len(plan["int8_blocks"]) <= 5
    assert quant["mixed"]["weight_mb"] > quant[plan["base"]]["weight_mb"]
    frontier = Path("plots/quant_frontier.csv").read_text().splitlines()
    assert frontier[0].startswith("plan,weight_mb") and any("+1xint8" in line for line in frontier)
    assert Path("plots/quant_frontier.png").stat().st_size > 1000
    assert quant["gptq"]["calibration_s"] > 0 and quant["none"]["accuracy_loss_pct"] == 0
    assert quant["selected"] in quant and quant[quant["selected"]]["accuracy_loss_pct"] <= 5
    assert doc["features"]["quantization"]["complete"] == 1
    assert "faults" not in doc  # the quantization fault is the faults stage's (tests/pipelines/test_faults.py)
    table = Path("reports/quant_head_to_head.md").read_text()
    assert "| awq |" in table and "Auto-selector" in table
    assert Path("plots/quant_head_to_head.csv").read_text().startswith("strategy,accuracy_loss_pct,kl_mean")
    assert "### python-docs" in table


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


def test_the_stages_of_one_repro_are_subflows_of_one_pipeline_run(
    prefect_harness, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    from pipelines.common import stage_cli
    from pipelines.gate import gate_flow

    monkeypatch.setenv("TOLLGATE_PIPELINE_RUN", "test-repro-1")
    for _ in range(2):  # two stages of one repro (the gate twice: the cheapest stage to run here)
        assert stage_cli("gate", gate_flow, "", ["--params", "params.yaml"]) == 0
    with get_client(sync_client=True) as client:
        tagged = FlowRunFilter(tags=FlowRunFilterTags(all_=["pipeline:test-repro-1"]))
        (parent,) = client.read_flow_runs(flow_run_filter=tagged)
        children = [
            r
            for r in client.read_flow_runs(limit=200)
            if r.parent_task_run_id and client.read_task_run(r.parent_task_run_id).flow_run_id == parent.id
        ]
    assert parent.name.startswith("release_gate · ci · tiny-random · ") and parent.state.is_completed()
    assert len(children) == 2
    assert all(r.name.startswith("gate · ci · tiny-random · ") and r.state.is_completed() for r in children)
    assert {"profile:ci", "model:tiny-random"} <= set(parent.tags) & set(children[0].tags)


def test_a_failing_stage_fails_the_pipeline_run(
    prefect_harness, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    from pipelines.common import stage_cli

    @flow(name="broken")
    def broken_flow(params_path: str = "params.yaml") -> None:
        raise ConnectionError("the server went away")

    monkeypatch.setenv("TOLLGATE_PIPELINE_RUN", "test-repro-2")
    assert stage_cli("broken", broken_flow, "", ["--params", "params.yaml"]) == 1
    with get_client(sync_client=True) as client:
        tagged = FlowRunFilter(tags=FlowRunFilterTags(all_=["pipeline:test-repro-2"]))
        (parent,) = client.read_flow_runs(flow_run_filter=tagged)
    assert parent.state.is_failed() and "the server went away" in parent.state.message


def test_server_steps_retry_a_transient_failure_and_nothing_else(prefect_harness) -> None:
    from prefect import flow, task

    from pipelines.common import TRANSIENT_RETRIES

    calls: list[str] = []

    @task(**{**TRANSIENT_RETRIES, "retry_delay_seconds": 0})
    def flaky(error: type[Exception]) -> str:
        calls.append(error.__name__)
        if len(calls) == 1:
            raise error("first try")
        return "ok"

    @flow
    def run(error: type[Exception]) -> str:
        return flaky(error)

    assert run(ConnectionError) == "ok" and calls == ["ConnectionError", "ConnectionError"]
    calls.clear()
    with pytest.raises(ValueError, match="first try"):  # a wrong answer is not retried until it passes
        run(ValueError)
    assert calls == ["ValueError"]
