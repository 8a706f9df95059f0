"""The whole release gate as one Prefect flow: convert → bench → quality → serve → stress → codecheck → gate.

    python -m pipelines.release_gate [--params params.yaml]

Each stage is also its own flow and CLI (what `dvc repro` runs); this flow runs them in order as subflows, so
one Prefect run (visible in the UI under `prefect server start`) holds the whole execution. A failing stage
fails this flow.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow

from pipelines.bench import bench_flow
from pipelines.codecheck import codecheck_flow
from pipelines.common import stage_cli
from pipelines.convert import convert_flow
from pipelines.gate import gate_flow
from pipelines.quality import quality_flow
from pipelines.serve import serve_flow
from pipelines.stress import stress_flow


@flow(name="release_gate")
def release_gate(params_path: str = "params.yaml") -> dict[str, Any]:
    """Run every stage of the pipeline in order, then the gate."""
    convert_flow(params_path)
    bench_flow(params_path)
    quality_flow(params_path)
    serve_flow(params_path)
    stress_flow(params_path)
    codecheck_flow(params_path)
    return gate_flow(params_path)


if __name__ == "__main__":
    sys.exit(stage_cli(release_gate, __doc__))
