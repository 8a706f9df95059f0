"""Errors that name what is wrong as data: the checkpoint file, the request parameter, or a dead engine."""

from __future__ import annotations

from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or of an unsupported kind."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ParameterError(ValueError):
    """A request parameter with a bad value; `param` (and `code`, if any) as data, for OpenAI's error body."""

    def __init__(self, param: str, message: str, code: str | None = None) -> None:
        self.param = param
        self.code = code
        super().__init__(message)


class EngineDeadError(RuntimeError):
    """The engine cannot step any more (a tensor-parallel rank is gone): its requests fail, the process must restart."""
