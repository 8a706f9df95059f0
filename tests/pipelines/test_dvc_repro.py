"""`dvc repro` end to end on the tiny model, in a throw-away copy of the project (marker: integration)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gates.criteria import DIMENSIONS, load_spec
from gates.evidence import flatten, read_metrics_file
from pipelines.pytest_evidence import FEATURE_PATHS
from tests.conftest import ROOT
from tests.gates.test_report_browser import BROWSERS, headless

pytestmark = pytest.mark.integration

OVERRIDES = [
    "model=tiny-random",
    "scenario.throughput.batch_sizes=[1,4,8,16]",
    "profile.bench.new_tokens=8",
    "profile.bench.prompt_len=16",
    "profile.latency.requests=4",
    "profile.latency.new_tokens=8",
    "profile.quality.max_tokens=512",
    "profile.quality.lm_eval.documents=1",
    "profile.calibrate.calibration_tokens=256",
    "profile.calibrate.eval_tokens=256",
    "profile.calibrate.context=128",
    "profile.calibrate.sensitivity_tokens=128",
    "profile.calibrate.int8_blocks=[1]",
    "profile.finetune.max_steps=2",
    "profile.finetune.batch_size=4",
    "profile.finetune.test_examples=4",
    "profile.finetune.ppl_tokens=128",
    "profile.finetune.context=64",
    "profile.finetune.decode_tokens=4",
    "profile.finetune.decode_batch=2",
    "profile.long_context.lengths=[256,512]",
    "profile.long_context.compression_context=256",
    "profile.long_context.compressed_dtypes=[bf16,int8]",  # int4 groups need head_dim 32: the tiny one has 16
    "profile.long_context.window=128",
    "profile.long_context.baseline_window=128",
    "profile.long_context.chunk=128",
    "profile.long_context.passkey_depths=[0.5]",
    "profile.long_context.decode_tokens=4",
    "profile.stress.duration_s=8",
    "profile.serve.requests=4",
    "profile.serve.concurrency=2",
    "profile.serve.prompt_len=16",
    "profile.serve.max_tokens=4",
    "profile.serve.mlperf.min_duration_s=3",
    "profile.serve.mlperf.min_queries=6",
    "profile.serve.sweep.rates=2",
    "profile.serve.sweep.repetitions=2",
    "profile.serve.sweep.duration_s=1.5",
    "profile.serve.sweep.max_concurrency=4",
    "profile.cluster.requests=4",
    "profile.cluster.concurrency=2",
    "profile.cluster.prompt_len=16",
    "profile.cluster.max_tokens=4",
    "profile.tests.paths=[tests/gates/test_decision.py]",  # the full suite runs this very test: no recursion
]


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def repro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("tollgate")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, work / name)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PREFECT_HOME": str(work / ".prefect"),
    }
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"],
    ):
        run(cmd, work, env)
    run([sys.executable, "-m", "pipelines", "config", *OVERRIDES], work, env)
    proc = run(["dvc", "repro"], work, env)
    (work / "repro.log").write_text(proc.stdout + proc.stderr)
    return work


def test_dvc_repro_writes_a_decision_with_every_criterion(repro: Path) -> None:
    doc = json.loads((repro / "reports" / "decision.json").read_text())
    assert doc["scenario"] in {"A", "B", "C", "INVALID"}
    assert len(doc["checks"]) == 124 and doc["context"]["model"] == "tiny-random"
    statuses = {c["id"]: c["status"] for c in doc["checks"]}
    assert statuses["quality.static_analysis"] in {"PASS", "FAIL"}  # measured by the codecheck stage
    assert statuses["compat.openai_parameters"] == "PASS"  # probed on the live server by the serve stage
    assert statuses["reliability.errors.model_load"] == "PASS"
    assert statuses["perf.throughput.two_node"] == "NOT_IN_PROFILE"
    assert statuses["correctness.served_matches_offline"] == "PASS"  # the API gives the offline engine's text
    assert statuses["correctness.lm_eval_agreement"] == "PASS"  # lm-eval through the API = the engine offline
    assert statuses["quality.tests_passing"] == "PASS" and statuses["quality.unit_tests.coverage"] in {"PASS", "FAIL"}
    assert "Scenario" in (repro / "repro.log").read_text()
    stages = ("bench", "quality", "calibrate", "finetune", "long_context", "serve", "faults", "stress", "security")
    for name in (*stages, "code", "tests"):
        prov = json.loads((repro / "metrics" / f"{name}.json").read_text())["_provenance"]
        assert doc["evidence"][f"metrics/{name}.json"]["sha256"] and prov["git_sha"] == doc["gate"]["git_sha"]
    quant = json.loads((repro / "metrics" / "calibrate.json").read_text())
    assert {"int8", "int4", "gptq", "awq", "bitnet", "mixed"} <= quant["quant"].keys()
    assert statuses["reliability.errors.quantization"] == statuses["reliability.errors.quantization_kl"] == "PASS"
    faults = json.loads((repro / "metrics" / "faults.json").read_text())["faults"]
    kinds = ("invalid_input", "rate_limiting", "node_failure", "model_load", "out_of_memory", "network_timeout")
    for kind in (*kinds, "quantization"):
        assert faults[kind]["n"] >= 3 and statuses[f"reliability.errors.{kind}"] in {"PASS", "FAIL"}, kind
    assert statuses["reliability.errors.invalid_input"] == statuses["reliability.errors.rate_limiting"] == "PASS"
    assert (repro / "models" / "quant" / "tiny-random-gptq" / "quantization.json").is_file()
    assert "| gptq |" in (repro / "reports" / "quant_head_to_head.md").read_text()
    assert (repro / "reports" / "release_report.html").stat().st_size > 1000
    assert statuses["compat.openai_endpoints"] == "PASS"  # the fine-tunes endpoints count now
    finetune = json.loads((repro / "metrics" / "finetune.json").read_text())
    assert {"lora", "qlora", "base", "merge", "decode"} <= finetune["finetune"].keys()
    assert statuses["features.2_5.qlora_memory"] == "NOT_IN_PROFILE" and "qlora.peak_memory_gb" in finetune["_invalid"]
    long = json.loads((repro / "metrics" / "long_context.json").read_text())
    assert long["long_context"]["max_tokens"] == 512 and {"ctx0k", "ctx1k"}.isdisjoint(long["long_context"])
    assert statuses["features.2_4.kv_compression_memory"] == "PASS"  # int8 vs bf16, from the two pools' bytes
    mlperf = json.loads((repro / "metrics" / "serve.json").read_text())["serve"]["mlperf"]
    assert mlperf["loadgen_result"] in {"VALID", "INVALID"} and mlperf["queries"] >= 6  # LoadGen ran the server
    assert (repro / "reports" / "mlperf" / "server" / "mlperf_log_summary.txt").is_file()


def test_the_pipeline_s_own_report_renders_in_a_browser_with_every_dimension(repro: Path, tmp_path: Path) -> None:
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if browser is None:
        pytest.skip("no headless Chromium: `make browser` installs it")
    dom = headless(browser, repro / "reports" / "release_report.html", tmp_path / "profile", "--dump-dom")
    scenario = json.loads((repro / "reports" / "decision.json").read_text())["scenario"]
    assert f'id="verdict">Scenario {scenario}<' in dom
    assert all(f'id="{d}">{d.capitalize()}</h2>' in dom for d in DIMENSIONS)


PIPELINE_RUNS = """
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as c:
    for r in c.read_flow_runs(limit=50):
        parent = c.read_task_run(r.parent_task_run_id).flow_run_id if r.parent_task_run_id else None
        print(r.id, parent, r.state.type.value, r.name, sep="|")
"""


def test_prefect_holds_the_repro_as_one_pipeline_run_with_every_stage_under_it(repro: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(repro / ".prefect")}
    out = subprocess.run([sys.executable, "-c", PIPELINE_RUNS], env=env, capture_output=True, text=True, check=True)
    runs = [line.split("|") for line in out.stdout.splitlines() if line.count("|") == 3]
    (parent,) = [r for r in runs if r[1] == "None"]
    assert parent[3].startswith("release_gate · ci · tiny-random · ") and parent[2] == "COMPLETED"
    stages = {name.split(" · ")[0] for _, up, _, name in runs if up == parent[0]}
    assert {"convert", "bench", "quality", "serve", "gate"} <= stages


def test_every_criterion_is_measured_by_a_stage_or_listed_as_unmeasured(repro: Path) -> None:
    produced = set()
    for path in (repro / "metrics").glob("*.json"):
        produced |= set(flatten(read_metrics_file(path)))
    produced |= {f"tests.by_feature.{f}" for f in FEATURE_PATHS.values()}  # the full suite has them
    produced.add("signoff.approved")  # from release/signoff.yaml, not a stage
    if "long_context.max_tokens" in produced:  # the stage names ctxNk after each length it runs: release's lengths
        release = yaml.safe_load((ROOT / "conf" / "profile" / "release.yaml").read_text())["long_context"]
        row = ("quality_pct", "kv_mb", "perplexity", "retrieval_pct", "peak_rss_mb", "decode_tok_s")
        produced |= {f"long_context.ctx{n // 1024}k.{key}" for n in release["lengths"] for key in row}
    if "cluster.max_nodes" in produced:  # release adds scenarios with more nodes: each fault-free one, its row
        for name in yaml.safe_load((ROOT / "conf" / "profile" / "release.yaml").read_text())["cluster"]["scenarios"]:
            scenario = yaml.safe_load((ROOT / "conf" / "cluster" / f"{name}.yaml").read_text())
            if scenario["nodes"] > 1 and not scenario["faults"]:
                produced |= {f"cluster.nodes{scenario['nodes']}.{key}" for key in ("decode_tok_s", "speedup")}
    spec = load_spec(repro / "conf" / "gates" / "phase3.yaml")
    metrics = {c.metric for c in spec.criteria}
    audit_complete = "security.vulnerabilities" in produced  # only where pip-audit's service answers for every pin
    expected = set(spec.unmeasured) - ({"security.vulnerabilities"} if audit_complete else set())
    assert metrics - produced == expected, "a criterion lost its producer, or gained one"
    assert set(spec.unmeasured) <= metrics


def test_the_tiny_sizes_are_stamped_as_overrides_and_check_refuses_them(repro: Path) -> None:
    doc = json.loads((repro / "reports" / "decision.json").read_text())
    assert "profile.stress.duration_s=8 (declared 15)" in doc["gate"]["overrides"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    check = [sys.executable, "-m", "gates", "check", "reports/decision.json"]
    proc = subprocess.run(check, cwd=repro, env=env, capture_output=True, text=True)
    assert proc.returncode == 3 and "--accept-overrides" in proc.stderr
    proc = subprocess.run([*check, "--accept-overrides"], cwd=repro, env=env, capture_output=True, text=True)
    assert proc.returncode == (0 if doc["scenario"] == "A" else 1), proc.stderr


def test_an_engine_that_answers_garbage_gets_c_with_correctness_first(repro: Path, tmp_path: Path) -> None:
    work = tmp_path / "faulty"
    shutil.copytree(repro, work, symlinks=True)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PREFECT_HOME": str(work / ".prefect"),
        "TOLLGATE_FAULT": "constant_token",
    }
    run(["dvc", "repro", "--force", "--single-item", "quality"], work, env)
    run(["dvc", "repro", "--single-item", "gate"], work, env)
    doc = json.loads((work / "reports" / "decision.json").read_text())
    statuses = {c["id"]: c["status"] for c in doc["checks"]}
    assert statuses["correctness.greedy_agreement"] == "FAIL"
    assert doc["scenario"] == "C" and doc["top_reasons"][0].startswith("FAIL correctness.greedy_agreement")


def test_mlflow_holds_the_run_with_its_metrics(repro: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repro / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tollgate-release-gate"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    stages = {r.data.tags["stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert {"bench", "quality", "serve", "stress", "code"} <= set(stages)
    assert stages["bench"].data.metrics["bench.batch1.decode_tok_s"] > 0
    assert stages["quality"].data.metrics["quality.perplexity"] > 1


def test_second_repro_is_a_no_op(repro: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = run(["dvc", "status"], repro, env)
    assert "up to date" in proc.stdout.lower() or proc.stdout.strip() == ""
