"""One `dvc repro`, one Prefect pipeline run: each stage's flow run becomes a subflow of a shared parent run.

DVC starts every stage as its own process, so Prefect alone would show eight unrelated flow runs. The stages of
one execution share a key: `TOLLGATE_PIPELINE_RUN` when set (the Makefile and the workflow set it), else the
`dvc` process that started them (DVC puts `DVC_STAGE` in each stage's environment). The first stage creates a
`release_gate` flow run tagged `pipeline:<key>`; each stage finds it, adds a subflow-tracking task run to it
(what Prefect itself does for a nested flow call) and runs its flow under that task run, so the UI draws the
stages as one graph. The parent ends each stage Completed (or Failed with the stage's error), so a partial
`dvc repro` leaves no run hanging in Running.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import Task
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun
from prefect.flow_engine import run_flow
from prefect.flows import Flow
from prefect.states import Completed, Failed, Running

KEY_ENV = "TOLLGATE_PIPELINE_RUN"
PARENT_ENV = "TOLLGATE_PARENT_FLOW_RUN"  # a flow run id: a child process's flow runs as its subflow
PIPELINE_FLOW = "release_gate"
LABELS = ("profile", "model", "quant", "cluster", "git")


def label_tags(labels: list[str]) -> list[str]:
    """Prefect tags for what a run served: `profile:ci`, `model:smollm2-135m`, ..., `git:3e4213d`."""
    return [f"{k}:{v}" for k, v in zip(LABELS, labels, strict=True)]


def _dvc_ancestor() -> str | None:
    """`<pid>-<start ticks>` of the nearest `dvc` process above this one (unique while the machine is up)."""
    pid = os.getppid()
    while pid > 1:
        proc = Path(f"/proc/{pid}")
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        if any(Path(a.decode(errors="replace")).name == "dvc" for a in argv[:2]):
            return f"dvc{pid}-{stat[19]}"  # field 22 of /proc/PID/stat: start time
        pid = int(stat[1])  # field 4: parent pid
    return None


def pipeline_key() -> str | None:
    """What ties the stages of one pipeline execution together; None for a stage run by hand."""
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    return _dvc_ancestor() if os.environ.get("DVC_STAGE") else None


def parent_run(client: SyncPrefectClient, parent_flow: Flow, key: str, name: str, tags: list[str]) -> FlowRun:
    """The pipeline's parent flow run, created by the first stage that asks."""
    tag = f"pipeline:{key}"
    found = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])), limit=1)
    if found:
        return found[0]
    return client.create_flow_run(parent_flow, name=name, tags=[*tags, tag], state=Running())


def run_in_parent(flow: Flow, parameters: dict[str, Any], parent_id: Any, tags: list[str] | None = None) -> Any:
    """Run `flow` in this process as a subflow of flow run `parent_id` (another process's): a tracking task
    run in the parent, as Prefect makes for a nested flow call, with the child flow run under it."""
    with get_client(sync_client=True) as client:
        tracker = Task(name=flow.name, fn=flow.fn)
        task_run = client.create_task_run(tracker, parent_id, dynamic_key=f"{flow.name}-{os.getpid()}", state=Running())
        child = client.create_flow_run(flow, parameters=parameters, parent_task_run_id=task_run.id, tags=tags or [])
        try:
            result = run_flow(flow, flow_run=child, parameters=parameters)
        except BaseException as exc:
            client.set_task_run_state(task_run.id, Failed(message=f"{type(exc).__name__}: {exc}"[:500]), force=True)
            raise
        client.set_task_run_state(task_run.id, Completed(), force=True)
        return result


def run_as_subflow(flow: Flow, params_path: str, parent_flow: Flow, key: str, labels: list[str]) -> Any:
    """Run a stage's flow as a subflow of the pipeline's parent run; the parent's state follows the stage."""
    tags = label_tags(labels)
    with get_client(sync_client=True) as client:
        parent = parent_run(client, parent_flow, key, " · ".join([parent_flow.name, *labels]), tags)
        client.set_flow_run_state(parent.id, Running(message=f"stage {flow.name}"), force=True)
        tracker = Task(name=flow.name, fn=flow.fn)
        task_run = client.create_task_run(tracker, parent.id, dynamic_key=flow.name, state=Running())
        child = client.create_flow_run(
            flow, parameters={"params_path": params_path}, parent_task_run_id=task_run.id, tags=tags
        )
        try:
            result = run_flow(flow, flow_run=child, parameters={"params_path": params_path})
        except BaseException as exc:
            failed = f"stage {flow.name}: {type(exc).__name__}: {exc}"[:500]
            client.set_task_run_state(task_run.id, Failed(message=failed), force=True)
            client.set_flow_run_state(parent.id, Failed(message=failed), force=True)
            raise
        client.set_task_run_state(task_run.id, Completed(), force=True)
        client.set_flow_run_state(parent.id, Completed(message=f"through stage {flow.name}"), force=True)
        return result


def _pipeline(params_path: str = "params.yaml") -> None:
    """The parent's flow: its stages run in their own processes (DVC starts them); this run only holds them."""


# Named as `python -m pipelines release_gate`'s flow, so the UI lists both kinds of pipeline run under one flow.
PIPELINE = Flow(fn=_pipeline, name=PIPELINE_FLOW)


def run_stage_flow(flow: Callable[[str], Any], params_path: str, labels: list[str]) -> Any:
    """A stage's flow on its own, as a subflow of the flow run PARENT_ENV names (a task of the pipeline on Dask
    started it; taken out of the environment, so the stage's own children do not inherit it), or as part of the
    pipeline run its key names."""
    parent, key = os.environ.pop(PARENT_ENV, None), pipeline_key()
    if not isinstance(flow, Flow) or (parent is None and key is None):
        return flow(params_path)
    if parent is not None:
        return run_in_parent(flow, {"params_path": params_path}, parent, label_tags(labels))
    return run_as_subflow(flow, params_path, PIPELINE, key, labels)
