"""The release gate's stages on a Dask cluster: DVC's order, measuring stages alone on a worker, one Prefect run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.dask_stages import ALONE, SHARED, stage_specs
from tests.conftest import ROOT

TIMED = {"bench", "calibrate", "finetune", "long_context", "serve", "faults", "stress", "models", "cluster", "tests"}

# A stage of the test project: a flow run through run_stage_flow, as `python -m pipelines STAGE` does, that
# records where and when it ran, then touches its output.
PROBE = """
import json, os, sys, time
from pathlib import Path
from prefect import flow
from pipelines.prefect_parent import PARENT_ENV, run_stage_flow

name, seconds = sys.argv[1], float(sys.argv[2])

@flow(name="probe-" + name)
def probe(params_path: str) -> None:
    start = time.time()
    time.sleep(seconds)
    record = {"node": os.environ["TOLLGATE_NODE"], "start": start, "end": time.time()}
    record["inherits"] = PARENT_ENV in os.environ
    Path("log").mkdir(exist_ok=True)
    Path("log", name + ".json").write_text(json.dumps(record))
    if name.startswith("broken"):
        raise RuntimeError("this stage fails")
    Path("out").mkdir(exist_ok=True)
    Path("out", name).write_text("done")

run_stage_flow(probe, "params.yaml", ["ci", "tiny", "none", "single", "abc1234"])
"""


def dvc_project(root: Path, stages: dict[str, dict]) -> Path:
    """A DVC project of probe stages: {name: {"after": [...], "alone": bool, "seconds": s}}."""
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    (root / "probe.py").write_text(PROBE)
    doc = {
        name: {
            "cmd": f"python probe.py {name} {spec.get('seconds', 0)}",
            "deps": ["probe.py", *(f"out/{up}" for up in spec.get("after", []))],
            "outs": [{f"out/{name}": {"cache": False}}],
            "meta": {"node": "alone" if spec.get("alone") else "shared"},
        }
        for name, spec in stages.items()
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": doc}))
    return root


def records(root: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (root / "log").glob("*.json")}


def overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_the_projects_stages_follow_dvcs_graph_and_timing_stages_hold_a_worker_alone() -> None:
    specs = stage_specs(ROOT)
    names = [s.name for s in specs]
    assert set(names) == set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    for spec in specs:
        assert all(names.index(up) < names.index(spec.name) for up in spec.after)
        assert spec.node_share == (ALONE if spec.name in TIMED else SHARED), spec.name
        assert spec.cmd == f"python -m pipelines {spec.name}" and spec.wdir == "."
    assert names[-1] == "gate" and set(specs[-1].after) == set(names) - {"gate", "convert"}
    assert "convert" in {s.name: s for s in specs}["bench"].after


def test_an_unknown_node_share_is_refused(tmp_path: Path) -> None:
    dvc_project(tmp_path, {"a": {}})
    doc = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    doc["stages"]["a"]["meta"]["node"] = "exclusive"
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match=r"meta\.node is 'alone' or 'shared'"):
        stage_specs(tmp_path)


def run_pipeline(root: Path, workers: int) -> dict[str, str]:
    """The release gate's Dask path (run_on_dask in a flow on a LocalCluster) over the project at `root`."""
    from prefect import flow

    from pipelines.dask_stages import run_on_dask, task_runner

    @flow(name="release_gate_test", task_runner=task_runner(None, workers))
    def pipeline() -> dict[str, str]:
        return run_on_dask(root)

    return pipeline()


@pytest.mark.integration
def test_stages_run_in_parallel_after_their_inputs_and_a_timing_stage_shares_no_worker(
    prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    monkeypatch.chdir(tmp_path)  # a worker runs each stage in the project root: its working directory
    stages = {
        "light1": {"seconds": 6},
        "light2": {"seconds": 6},
        "timed1": {"after": ["light1"], "alone": True, "seconds": 3},
        "timed2": {"after": ["light1"], "alone": True, "seconds": 3},
        "last": {"after": ["light1", "light2", "timed1", "timed2"]},
    }
    dvc_project(tmp_path, stages)
    nodes = run_pipeline(tmp_path, workers=2)
    ran = records(tmp_path)
    assert set(ran) == set(stages) and nodes == {name: r["node"] for name, r in ran.items()}
    assert overlap(ran["light1"], ran["light2"])  # nothing orders them: they run at once
    for name, spec in stages.items():
        assert all(ran[up]["end"] <= ran[name]["start"] for up in spec.get("after", [])), name
    for timed in ("timed1", "timed2"):
        beside = [n for n in ran if n != timed and ran[n]["node"] == ran[timed]["node"]]
        assert not any(overlap(ran[timed], ran[n]) for n in beside), (timed, ran)
    assert not any(r["inherits"] for r in ran.values())  # the stage took the parent id out of its environment
    with get_client(sync_client=True) as client:
        probes = [r for r in client.read_flow_runs(limit=200) if r.flow_id and r.name and r.parent_task_run_id]
        parents = {
            client.read_task_run(r.parent_task_run_id).flow_run_id
            for r in probes
            if client.read_flow(r.flow_id).name.startswith("probe-")
        }
    assert len(parents) == 1  # every stage's flow run hangs under the one pipeline run


@pytest.mark.integration
def test_a_failed_stage_fails_the_pipeline_and_nothing_after_it_runs(
    prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    dvc_project(tmp_path, {"broken": {}, "after": {"after": ["broken"]}, "aside": {}})
    with pytest.raises(Exception, match="broken"):
        run_pipeline(tmp_path, workers=1)
    assert set(records(tmp_path)) == {"broken", "aside"}


def test_the_executor_is_checked_when_params_are_composed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.config import compose
    from pipelines.release_gate import release_gate

    with pytest.raises(Exception, match=r"executor\.local_workers must be >= 0"):
        compose(["executor.local_workers=-1"])
    monkeypatch.chdir(tmp_path)
    Path("other.yaml").write_text(yaml.safe_dump(compose(["executor.local_workers=2"])))
    with pytest.raises(ValueError, match=r"which read params\.yaml, not other\.yaml"):
        release_gate("other.yaml")
