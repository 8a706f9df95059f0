"""`mlflow.tracking_uri` set to a tracking server (`mlflow server` on loopback here): the gate's runs and their
artifacts land on the server, nothing in the local SQLite store; `gates diff`-style reads find them there."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from gates.history import load_decision
from gates.provenance import now_utc
from pipelines.common import write_metrics
from pipelines.config import compose
from pipelines.live_server import running_command
from tests.conftest import ROOT
from tests.pipelines.test_flows import METRICS


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--workers", "1"]
    cmd += ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
    with running_command([*cmd, "--artifacts-destination", str(tmp_path / "art")]) as (url, _):
        yield url


def test_the_gate_logs_to_a_tracking_server_when_configured(
    prefect_harness, mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.gate import gate_flow

    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    shutil.copytree(ROOT / "conf", "conf")
    shutil.copy(ROOT / "dvc.yaml", "dvc.yaml")
    Path("params.yaml").write_text(
        yaml.safe_dump(compose(["model=tiny-random", f"mlflow.tracking_uri={mlflow_server}"]))
    )
    for stage, data in METRICS.items():
        write_metrics(stage, data, "params.yaml", now_utc())
    out = gate_flow("params.yaml")
    assert not Path("mlruns").exists(), "a run went to the local store"
    decision = load_decision(out["mlflow_run_id"])  # params.yaml names the server: the default store is it
    assert decision["scenario"] == out["scenario"]
    runs = httpx.post(f"{mlflow_server}/api/2.0/mlflow/runs/search", json={"experiment_ids": ["1"]}).json()["runs"]
    assert out["mlflow_run_id"] in {r["info"]["run_id"] for r in runs}
