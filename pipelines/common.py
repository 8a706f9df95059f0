"""Helpers every stage shares: metrics files with their provenance, the hardware fingerprint, the stage CLI."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import torch
import yaml
from omegaconf.errors import OmegaConfBaseException
from prefect import tags
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from engine.router.replicas import ServerStartError
from engine.stats import cpu_name
from gates.provenance import git_dirty, git_head, now_utc, sha256_file, sha256_json, sha256_tree
from gates.stages import param_value, stage_named
from pipelines.config import PARAMS, TollgateConf, load_params
from pipelines.prefect_parent import label_tags, run_stage_flow

# Stage inputs and outputs are relative to the working directory: the project root where `dvc repro` runs.
PLOTS = Path("plots")
REPORTS = Path("reports")


def save_report(name: str, lines: list[str]) -> str:
    """reports/NAME as Markdown lines; returns the text, which stages also log."""
    REPORTS.mkdir(exist_ok=True)
    text = "\n".join(lines) + "\n"
    (REPORTS / name).write_text(text)
    return text


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write atomically, so a crashed stage never leaves half a metrics file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def hardware_fingerprint() -> dict[str, str]:
    """Facts that tie a number to the machine that produced it."""
    mem_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return {
        "cpu": cpu_name(),
        "cores": str(os.cpu_count()),
        "ram_gb": f"{mem_kb / 2**20:.1f}",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _resolve(dep: str, params: dict[str, Any]) -> str:
    """A dvc.yaml dep with its `${a.b}` interpolations filled from params.yaml."""

    def lookup(match: re.Match) -> str:
        node: Any = params
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([\w.]+)\}", lookup, dep)


def provenance(stage: str, params_path: str, started: str) -> dict[str, Any]:
    """Who produced a metrics file: stage, commit, params and spec hashes, hardware, times, inputs' sha256."""
    params = yaml.safe_load(Path(params_path).read_text())
    declared = stage_named(stage)
    inputs = {}
    for dep in declared.deps:
        path = Path(_resolve(dep, params))
        inputs[str(path)] = sha256_tree(path) if path.exists() else "missing"
    spec = Path(params.get("gate_spec", ""))
    return {
        "stage": stage,
        "git_sha": git_head(),
        "git_dirty": git_dirty(),
        "params_sha256": sha256_json(params),
        "params": {key: param_value(params, key) for key in declared.params},  # what DVC reruns this stage for
        "spec_sha256": sha256_file(spec) if spec.is_file() else None,
        "profile": params["profile"]["name"],
        "hardware": hardware_fingerprint(),
        "started": started,
        "finished": now_utc(),
        "inputs": inputs,
    }


def write_metrics(stage: str, data: dict[str, Any], params_path: str, started: str) -> Path:
    """A stage's evidence file (dvc.yaml's metrics output) with its `_provenance`, written atomically."""
    target = stage_named(stage).evidence
    if target is None:
        raise ValueError(f"dvc.yaml stage {stage!r} declares no metrics/ file")
    return write_json(target, {"_provenance": provenance(stage, params_path, started), **data})


def bench_args(p: TollgateConf, checkpoint: Path) -> argparse.Namespace:
    """engine.bench's options for a checkpoint, with the profile's sizes and the configured quantization."""
    return argparse.Namespace(
        model=str(checkpoint),
        threads=p.profile.threads,
        prompt_len=p.profile.bench.prompt_len,
        new_tokens=p.profile.bench.new_tokens,
        repeats=p.profile.repetitions,
        warmup=p.profile.bench.warmup,
        quant_options=dict(p.quant.options),
        calibration_text=p.data.calibration_text,
    )


# What a second try can fix: a server that did not come up, a connection that broke.
TRANSIENT_ERRORS = (ConnectionError, TimeoutError, httpx.TransportError, ServerStartError)


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: retry a transient failure only, so a wrong answer or a crash fails at once."""
    return isinstance(state.data, TRANSIENT_ERRORS)


# Task options for the steps that start servers or talk to them: two more tries, 5 s then 10 s (+-50% jitter).
TRANSIENT_RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": transient_only,
}


def cli_args(*flags: str, **options: Any) -> list[str]:
    """A tool's command line from keyword values (`prompt_len=64` -> `--prompt-len 64`; None left out), so a
    stage gets the tool's own defaults and checks by going through its parser."""
    argv = [f"--{flag.replace('_', '-')}" for flag in flags]
    for key, value in options.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def run_labels(p: TollgateConf) -> list[str]:
    """What a run served: profile, model, quantization, cluster scenario and short commit."""
    return [p.profile.name, p.model.name, p.quant.name, p.cluster.name, git_head()[:7]]


def stage_run_name() -> str:
    """A stage's flow-run name in the Prefect UI, `bench · ci · smollm2-135m · none · single · 3e4213d`, in
    place of Prefect's random one."""
    try:
        p = load_params(Path(flow_run.parameters.get("params_path", PARAMS)))
    except (ValueError, FileNotFoundError, OmegaConfBaseException):
        return f"{flow_run.flow_name} · unreadable parameters"
    return " · ".join([flow_run.flow_name, *run_labels(p)])


def stage_cli(name: str, flow: Callable[[str], Any], description: str, argv: list[str] | None = None) -> int:
    """Run a stage's flow from the command line with the parameters in params.yaml, on the profile's threads."""
    parser = argparse.ArgumentParser(prog=f"python -m pipelines {name}", description=description)
    parser.add_argument("--params", default=str(PARAMS), help="composed parameters (default: params.yaml)")
    args = parser.parse_args(argv)
    try:  # bad parameters (an unknown profile, a wrong type) are one line before any flow starts
        p = load_params(Path(args.params))
    except (ValueError, FileNotFoundError, OmegaConfBaseException) as exc:
        print(f"error: {args.params}: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(p.profile.threads)
    labels = run_labels(p)
    try:
        with tags(*label_tags(labels)):
            run_stage_flow(flow, args.params, labels)
    except Exception as exc:  # the flow already logged the traceback: end with one clear line and exit 1
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
