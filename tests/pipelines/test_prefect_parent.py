"""What ties the stages of one `dvc repro` together: the `dvc` process above them, or TOLLGATE_PIPELINE_RUN."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.prefect_parent import KEY_ENV, pipeline_key
from tests.conftest import ROOT

PRINT_KEY = "from pipelines.prefect_parent import pipeline_key; print(pipeline_key())"


def test_stages_started_by_one_dvc_process_share_its_key_and_another_dvc_gets_another(tmp_path: Path) -> None:
    dvc = tmp_path / "dvc"  # stands in for DVC: a process named dvc starting two stage commands through a shell
    dvc.write_text(
        f"#!{sys.executable}\nimport subprocess, sys\n"
        f"for _ in range(2):\n    subprocess.run(['/bin/sh', '-c', sys.argv[1] + ' && true'], check=True)\n"
    )
    dvc.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV} | {"DVC_STAGE": "bench", "PYTHONPATH": str(ROOT)}
    command = f"{sys.executable} -c '{PRINT_KEY}'"
    first = subprocess.run([str(dvc), command], env=env, capture_output=True, text=True, check=True).stdout.split()
    second = subprocess.run([str(dvc), command], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert len(first) == 2 and first[0] == first[1] and first[0].startswith("dvc")
    assert second[0] != first[0]


def test_the_environment_names_the_pipeline_and_a_hand_run_stage_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert pipeline_key() is None
    monkeypatch.setenv(KEY_ENV, "gh-123-1")
    assert pipeline_key() == "gh-123-1"


def test_a_flow_run_in_another_process_hangs_under_the_flow_that_started_it() -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    from pipelines.prefect_parent import run_in_parent

    @flow(name="child-of-test")
    def child(x: int) -> tuple[int, str]:
        return x + 1, str(flow_run.id)

    @flow(name="parent-of-test")
    def parent() -> tuple[tuple[int, str], str]:
        return run_in_parent(child, {"x": 1}, flow_run.id), str(flow_run.id)

    (result, child_id), parent_id = parent()
    assert result == 2
    with get_client(sync_client=True) as client:
        tracker = client.read_task_run(client.read_flow_run(child_id).parent_task_run_id)
    assert str(tracker.flow_run_id) == parent_id
