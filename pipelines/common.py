"""Helpers every stage shares: metrics files, the hardware fingerprint, git facts, the stage CLI."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.config import PARAMS

# Stage inputs and outputs are relative to the working directory: the project root where `dvc repro` runs.
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write atomically, so a crashed stage never leaves half a metrics file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def hardware_fingerprint() -> dict[str, str]:
    """Facts that tie a number to the machine that produced it."""
    import torch

    from engine.bench import cpu_name

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


def git_sha() -> str:
    """Commit of the working tree ("unknown" outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=".", capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stage_cli(flow: Callable[[str], Any], description: str, argv: list[str] | None = None) -> int:
    """Run a stage's flow from the command line with the parameters in params.yaml."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default=str(PARAMS), help="composed parameters (default: params.yaml)")
    args = parser.parse_args(argv)
    try:
        flow(args.params)
    except Exception as exc:  # the flow already logged the traceback: end with one clear line and exit 1
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
