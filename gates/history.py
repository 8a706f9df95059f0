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


def is_server(store: str | Path) -> bool:
    """An MLflow tracking server's URL (`mlflow server`, shared between machines), not a local folder."""
    return str(store).startswith(("http://", "https://"))


def tracking_uri(store: str | Path) -> str:
    """The tracking URI of a store: a server's URL as it is; a folder's SQLite file as an absolute URI (a relative
    sqlite:/// URI would follow the working directory)."""
    return str(store) if is_server(store) else f"sqlite:///{Path(store).resolve() / 'mlflow.db'}"


def open_store(store: str | Path) -> str:
    """`tracking_uri`, with a folder store's folder created first."""
    if not is_server(store):
        Path(store).mkdir(parents=True, exist_ok=True)
    return tracking_uri(store)


def artifact_location(store: str | Path) -> str | None:
    """Where a new experiment keeps its artifacts: the folder's artifacts/, or wherever the server keeps them."""
    return None if is_server(store) else (Path(store) / "artifacts").resolve().as_uri()


def default_tracking_uri() -> str:
    """The project's MLflow store: params.yaml's `mlflow.tracking_uri` if set, else `mlflow.tracking_dir`."""
    params = yaml.safe_load(Path("params.yaml").read_text()) if Path("params.yaml").is_file() else {}
    conf = params.get("mlflow") or {}
    return tracking_uri(conf.get("tracking_uri") or conf.get("tracking_dir", "mlruns"))


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
