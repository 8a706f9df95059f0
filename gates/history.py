"""Earlier decisions, read back from where the gate keeps them: a decision.json file or an MLflow gate run.

Each gate run logs its decision.json as the MLflow artifact `report/decision.json` under a parent run tagged
`profile` and `model`; that store is the gate's history (DVC replaces reports/ on every repro).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from gates.changes import NOISE_PCT, change_lines, changes

ARTIFACT = "report/decision.json"
GATE_RUN_TAG = "gate_run"  # "true" on a gate's parent run only (its stage runs carry the other tags too)


def tracking_uri(folder: str | Path) -> str:
    """Absolute SQLite URI of the MLflow store in `folder` (a relative sqlite:/// URI would follow the working
    directory)."""
    return f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"


def default_tracking_uri() -> str:
    """The project's MLflow store: params.yaml's `mlflow.tracking_dir` (default mlruns/)."""
    params = yaml.safe_load(Path("params.yaml").read_text()) if Path("params.yaml").is_file() else {}
    return tracking_uri((params.get("mlflow") or {}).get("tracking_dir", "mlruns"))


def decision_of_run(client: Any, run_id: str) -> dict[str, Any]:
    """The decision.json a gate run logged; ValueError when the run has none."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, ARTIFACT, tmp)
        except Exception as exc:  # MLflow raises its own types for a missing run or artifact
            raise ValueError(f"MLflow run {run_id} has no {ARTIFACT}: {exc}") from exc
        return json.loads(Path(path).read_text())


def load_decision(ref: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """A decision from a decision.json path, or from an MLflow run id in the project's store."""
    if Path(ref).is_file():
        return json.loads(Path(ref).read_text())
    if Path(ref).suffix == ".json":
        raise ValueError(f"{ref}: no such decision file")
    from mlflow import MlflowClient

    return decision_of_run(MlflowClient(tracking_uri or default_tracking_uri()), ref)


def latest_decision(client: Any, experiment_id: str, profile: str, model: str) -> dict[str, Any] | None:
    """The newest finished gate run's decision for this profile and model, if the store has one."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{GATE_RUN_TAG} = 'true' AND tags.profile = '{profile}' AND tags.model = '{model}' "
        "AND attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=5,
    )
    for run in runs:
        try:
            return decision_of_run(client, run.info.run_id)
        except ValueError:
            continue
    return None


def compare(old: str, new: str, noise_pct: float = NOISE_PCT, tracking_uri: str | None = None) -> list[str]:
    """`gates compare`: the scenario change and what moved, between two decision files or MLflow gate runs."""
    before, after = (load_decision(ref, tracking_uri) for ref in (old, new))
    return [f"Scenario {before['scenario']} -> {after['scenario']}", *change_lines(changes(before, after, noise_pct))]
