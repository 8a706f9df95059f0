"""Stage `gate`: validate the evidence, judge it against the criteria, write the report, log it all to MLflow.

`python -m pipelines gate` writes reports/decision.json, reports/release_report.{md,html} and one MLflow parent
run (params, tags, the report) with a nested run per stage holding that stage's metrics, and a Prefect markdown
artifact `release-decision` with the summary table. The report says what changed since the previous gate run of
the same profile and model in the MLflow store, and links to both runs. It exits 0 whatever the scenario:
`python -m gates check reports/decision.json` is the pass/fail step.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Run
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from gates.evidence import flatten, read_metrics_file
from gates.github import summary_markdown
from gates.history import GATE_RUN_TAG, artifact_location, latest_decision, open_store
from gates.report import summary_lines
from gates.run import GateInputs, default_evidence, run_gate
from pipelines.common import REPORTS, stage_run_name
from pipelines.config import TollgateConf, load_params


def tracking_uri(p: TollgateConf) -> str:
    """The pipeline's MLflow store (a tracking server, or a folder created on first use)."""
    return open_store(p.mlflow.store)


@task
def decide(p: TollgateConf, params_path: str, links: dict[str, str], previous: dict[str, Any] | None) -> dict[str, Any]:
    """Evaluate with the pipeline's parameters; settings that differ from conf/ are stamped as overrides."""
    inputs = GateInputs(
        profile=p.profile.name,
        model=p.model.name,
        spec=Path(p.gate_spec),
        params=yaml.safe_load(Path(params_path).read_text()),
        context={"model": p.model.name, "quant": p.quant.name, "cluster": p.cluster.name, "links": links},
        previous=previous,
    )
    doc = run_gate(inputs)
    if doc["gate"]["rejected_by_validation"]:
        get_run_logger().warning("metrics failed validation: %s", doc["gate"]["rejected_by_validation"])
    for override in doc["gate"]["overrides"]:
        get_run_logger().warning("override: %s", override)
    return doc


def flat_params(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested parameters as MLflow's flat `a.b.c` keys."""
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(flat_params(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): str(obj)}


# MLflow 3 opens an experiment of this kind on its runs table (its default for an untagged one is the GenAI view).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
BATCH = 1000  # MLflow's most metrics per log_batch call
MLFLOW_UI, PREFECT_UI = "http://127.0.0.1:5000", "http://127.0.0.1:4200"  # `mlflow ui`, `prefect server start`


def _epoch_ms(iso: str | None) -> int | None:
    return None if not iso else int(datetime.fromisoformat(iso).timestamp() * 1000)


def repetitions(obj: Any, prefix: str = "") -> list[tuple[str, int, float]]:
    """(key, step, value) for each number in a list of repetitions or trials, so MLflow draws them as a series."""
    out: list[tuple[str, int, float]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not str(key).startswith("_"):
                out += repetitions(value, f"{prefix}{key}.")
    elif isinstance(obj, list):
        for step, item in enumerate(obj):
            if isinstance(item, dict):
                out += [(f"{prefix}{k}", step, float(v)) for k, v in item.items() if _number(v)]
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def log_stage_run(client: MlflowClient, parent: Run, path: Path, tags: dict[str, str]) -> None:
    """A nested run for one stage's evidence, spanning the stage's own start and end (from its provenance)."""
    prov = json.loads(path.read_text()).get("_provenance", {})
    run = client.create_run(
        parent.info.experiment_id,
        start_time=_epoch_ms(prov.get("started")),
        run_name=path.stem,
        tags={**tags, "stage": path.stem, MLFLOW_PARENT_RUN_ID: parent.info.run_id},
    )
    stamp = _epoch_ms(prov.get("finished")) or int(time.time() * 1000)
    doc = read_metrics_file(path)
    metrics = [Metric(k, e.value, stamp, 0) for k, e in flatten(doc).items() if e.value is not None]
    metrics += [Metric(k, v, stamp, step) for k, step, v in repetitions(doc)]
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run.info.run_id, metrics=metrics[i : i + BATCH])
    client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, end_time=_epoch_ms(prov.get("finished")))


def open_experiment(p: TollgateConf) -> tuple[MlflowClient, str]:
    """The project's MLflow experiment (created on first use), opening on its runs table."""
    mlflow.set_tracking_uri(tracking_uri(p))
    if mlflow.get_experiment_by_name(p.mlflow.experiment) is None:
        mlflow.create_experiment(p.mlflow.experiment, artifact_location=artifact_location(p.mlflow.store))
    experiment = mlflow.set_experiment(p.mlflow.experiment)
    client = MlflowClient()
    client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
    return client, experiment.experiment_id


def run_links(experiment_id: str, run_id: str) -> dict[str, str]:
    """Where the decision's runs open: `mlflow ui` and `prefect server start` on their default ports."""
    pipeline = flow_run.root_flow_run_id or flow_run.id
    return {
        "MLflow run (mlflow ui)": f"{MLFLOW_UI}/#/experiments/{experiment_id}/runs/{run_id}",
        "Prefect pipeline run (prefect server start)": f"{PREFECT_UI}/runs/flow-run/{pipeline}",
    }


@task(retries=2, retry_delay_seconds=exponential_backoff(3), cache_policy=NO_CACHE)
def log_to_mlflow(client: MlflowClient, run_id: str, doc: dict[str, Any], params_path: str) -> None:
    """Fill the gate's parent run: params, counts, the report, and a nested run per stage with its metrics."""
    ctx, g = doc["context"], doc["gate"]
    hardware = next((e["provenance"].get("hardware") or {} for e in doc["evidence"].values()), {})
    tags = {
        "git_sha": g["git_sha"],
        "profile": g["profile"],
        "model": ctx["model"],
        "quant": ctx["quant"],
        "scenario": doc["scenario"],
        "overrides": str(len(g["overrides"])),
        **{f"hardware.{k}": v for k, v in hardware.items()},
    }
    description = {"mlflow.note.content": "\n".join(summary_lines(doc))}  # the run page's description
    with mlflow.start_run(run_id=run_id) as parent:
        mlflow.set_tags({**tags, **description, GATE_RUN_TAG: "true"})
        mlflow.log_params(flat_params(yaml.safe_load(Path(params_path).read_text())))
        mlflow.log_metrics({f"gate.{k}": v for k, v in doc["counts"].items()})
        for path in default_evidence():
            if path.is_file():
                log_stage_run(client, parent, path, tags)
        for name in ("decision.json", "release_report.md", "release_report.html", "quant_head_to_head.md"):
            if (REPORTS / name).is_file():
                mlflow.log_artifact(str(REPORTS / name), artifact_path="report")


@flow(name="gate", flow_run_name=stage_run_name)
def gate_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Evaluate the release criteria on the collected metrics and record the decision."""
    p = load_params(Path(params_path))
    client, experiment_id = open_experiment(p)
    previous = latest_decision(client, experiment_id, p.profile.name, p.model.name)
    run = client.create_run(experiment_id, run_name=f"release-gate-{p.profile.name}-{p.model.name}")
    doc = decide(p, params_path, run_links(experiment_id, run.info.run_id), previous)
    log_to_mlflow(client, run.info.run_id, doc, params_path)
    create_markdown_artifact(summary_markdown(doc), key="release-decision", description=doc["summary"])
    print("\n".join(summary_lines(doc)))
    print(f"report: {REPORTS / 'release_report.html'} · MLflow run {run.info.run_id} ({tracking_uri(p)})")
    return {"scenario": doc["scenario"], "mlflow_run_id": run.info.run_id}
