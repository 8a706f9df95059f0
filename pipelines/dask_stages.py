"""The release gate's stages as Prefect tasks on a Dask cluster (prefect-dask), each after the stages it needs.

`python -m pipelines release_gate` runs the stages in order in one process by default. With `executor.local_workers`
N > 0 it starts a `distributed.LocalCluster` of N workers; with `executor.dask_address` it joins a running scheduler
(`dask scheduler`, then on each machine, in a checkout of the same commit whose outputs the others can read:
`dask worker tcp://HOST:8786 --nthreads 4 --resources node=1`).

The graph is DVC's own (`Repo.index.graph`: a stage runs after the stages whose outputs it depends on) and each
task runs the stage's dvc.yaml `cmd` in a process of its own on the worker, so a stage's threads, peak RSS and
timings are its own, as under `dvc repro`. A stage's flow run is a subflow of the release_gate run
(pipelines.prefect_parent), so the Prefect UI shows one pipeline. Stages that time something declare
`meta.node: alone` in dvc.yaml and take a worker's whole `node` resource; every other stage takes a quarter of it.
So a measuring stage never shares its worker, and up to four light ones do. Workers on one machine share its
cores, though: measure with one worker per machine.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import dask
from distributed import get_worker
from dvc.repo import Repo
from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.futures import PrefectFuture, wait
from prefect.runtime import flow_run
from prefect_dask import DaskTaskRunner

from pipelines.prefect_parent import PARENT_ENV

NODE = "node"  # the worker resource: each worker has 1 of it
ALONE = 1.0  # a stage that times something holds the whole worker
SHARED = 0.25  # the others: up to four at once on a worker
NODE_ENV = "TOLLGATE_NODE"  # the worker's address, in each stage process's environment (and its log line)


@dataclass(frozen=True)
class StageSpec:
    """What a task needs of one dvc.yaml stage: its command, its folder (relative to the project root, the
    worker's working directory), the stages before it, its share of a worker."""

    name: str
    cmd: str
    wdir: str
    after: tuple[str, ...]
    node_share: float


def stage_specs(root: Path = Path(".")) -> list[StageSpec]:
    """dvc.yaml's stages in an order that puts each after its upstream stages, from DVC's graph."""
    with Repo(str(root)) as repo:
        graph = repo.index.graph
        specs = {}
        for stage in graph.nodes:
            meta = stage.meta or {}
            if meta.get(NODE, "shared") not in ("alone", "shared"):
                raise ValueError(f"dvc.yaml stage {stage.addressing!r}: meta.node is 'alone' or 'shared'")
            after = tuple(sorted(d.addressing for d in graph.successors(stage)))
            share = ALONE if meta.get(NODE) == "alone" else SHARED
            wdir = os.path.relpath(stage.wdir, repo.root_dir)  # a worker runs in its own checkout of the project
            specs[stage.addressing] = StageSpec(stage.addressing, stage.cmd, wdir, after, share)
    order = TopologicalSorter({name: spec.after for name, spec in specs.items()}).static_order()
    return [specs[name] for name in order]


def task_runner(dask_address: str | None, local_workers: int) -> DaskTaskRunner:
    """The scheduler at `dask_address`, or a LocalCluster of `local_workers` workers with one `node` each."""
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    threads = round(ALONE / SHARED)
    cluster = {"n_workers": local_workers, "threads_per_worker": threads, "resources": {NODE: 1}}
    return DaskTaskRunner(cluster_kwargs=cluster | {"dashboard_address": None})


@task(name="stage", task_run_name="{spec.name}")
def run_stage(spec: StageSpec, parent_id: str, api_url: str) -> str:
    """One stage's command on this worker, its flow a subflow of the pipeline run; returns the worker."""
    node = get_worker().address
    get_run_logger().info("stage %s on %s: %s", spec.name, node, spec.cmd)
    env = {**os.environ, "PREFECT_API_URL": api_url, PARENT_ENV: parent_id, NODE_ENV: node}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # the worker's `python`
    subprocess.run(shlex.split(spec.cmd), check=True, cwd=spec.wdir, env=env)  # dvc.yaml's commands need no shell
    return node


def run_on_dask(root: Path = Path(".")) -> dict[str, str]:
    """Submit every stage with its upstream stages' futures to wait for; each stage's worker, or the first
    failure (stages after a failed one do not start). The commands read params.yaml, as under `dvc repro`."""
    parent, api = str(flow_run.id), str(get_client(sync_client=True).api_url)
    futures: dict[str, PrefectFuture[Any]] = {}
    for spec in stage_specs(root):
        with dask.annotate(resources={NODE: spec.node_share}):
            upstream = [futures[name] for name in spec.after]
            futures[spec.name] = run_stage.submit(spec, parent, api, wait_for=upstream)
    wait(list(futures.values()))
    return {name: future.result() for name, future in futures.items()}
