"""The whole release gate as one Prefect flow: every dvc.yaml stage in its order, the gate last.

    python -m pipelines release_gate [--params params.yaml]

Each stage is also its own flow and CLI (what `dvc repro` runs); this flow runs them in dvc.yaml's order as
subflows, so one Prefect run (visible in the UI under `prefect server start`) holds the whole execution. The
stage list is read from dvc.yaml (stage `X` runs `python -m pipelines.X`, whose flow is `X_flow`), so it cannot
drift from the pipeline. A failing stage fails this flow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from prefect import flow

from gates.stages import load_stages
from pipelines.common import stage_run_name
from pipelines.prefect_parent import PIPELINE_FLOW


def stage_flows() -> list[tuple[str, Callable[[str], Any]]]:
    """(stage, flow) for every dvc.yaml stage, in order."""
    flows = []
    for stage in load_stages():
        module = importlib.import_module(f"pipelines.{stage.name}")
        flows.append((stage.name, getattr(module, f"{stage.name}_flow")))
    return flows


@flow(name=PIPELINE_FLOW, flow_run_name=stage_run_name)
def release_gate_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Run every stage of the pipeline in order; returns the gate's result."""
    result: Any = None
    for _, stage_flow in stage_flows():
        result = stage_flow(params_path)
    return result
