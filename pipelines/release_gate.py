"""The whole release gate as one Prefect flow: every dvc.yaml stage in its order, the gate last.

    python -m pipelines release_gate [--params params.yaml]

Each stage is also its own flow and CLI (what `dvc repro` runs); this flow runs them in dvc.yaml's order as
subflows, so one Prefect run (visible in the UI under `prefect server start`) holds the whole execution. The
stage list is read from dvc.yaml (stage `X` runs `python -m pipelines.X`, whose flow is `X_flow`), so it cannot
drift from the pipeline. A failing stage fails this flow.

With `executor.local_workers` or `executor.dask_address` set, the stages run as tasks on a Dask cluster instead,
each as soon as the stages it needs are done (pipelines.dask_stages).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow

from gates.stages import load_stages
from pipelines.common import stage_cli, stage_run_name
from pipelines.config import PARAMS, load_params
from pipelines.dask_stages import run_on_dask, task_runner
from pipelines.prefect_parent import PIPELINE_FLOW


def stage_flows() -> list[tuple[str, Callable[[str], Any]]]:
    """(stage, flow) for every dvc.yaml stage, in order."""
    flows = []
    for stage in load_stages():
        module = importlib.import_module(f"pipelines.{stage.name}")
        flows.append((stage.name, getattr(module, f"{stage.name}_flow")))
    return flows


@flow(name=PIPELINE_FLOW, flow_run_name=stage_run_name)
def release_gate_flow(params_path: str = "params.yaml", on_dask: bool = False) -> Any:
    """Run every stage of the pipeline; returns the gate's result (in order) or each stage's worker (on Dask)."""
    if on_dask:
        return run_on_dask()
    result: Any = None
    for _, stage_flow in stage_flows():
        result = stage_flow(params_path)
    return result


def release_gate(params_path: str) -> Any:
    """The flow on the executor that params.yaml names."""
    executor = load_params(Path(params_path)).executor
    if not executor.on_dask:
        return release_gate_flow(params_path)
    if Path(params_path).resolve() != PARAMS.resolve():
        raise ValueError(f"on Dask the stages run their dvc.yaml commands, which read {PARAMS}, not {params_path}")
    runner = task_runner(executor.dask_address, executor.local_workers)
    return release_gate_flow.with_options(task_runner=runner)(params_path, on_dask=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines release_gate`: the whole pipeline as one Prefect run."""
    return stage_cli("release_gate", release_gate, __doc__ or "", argv)
