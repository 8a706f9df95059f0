"""The error a bad checkpoint raises (loader, config, quantized checkpoints): it names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or of an unsupported kind."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
