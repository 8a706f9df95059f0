"""The evidence profiles as declared in conf/profile/: what exists, and what a run changed from the declaration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path("conf/profile")


class UnknownProfileError(ValueError):
    """A profile name that conf/profile/ does not declare (it would gate nothing)."""


def known_profiles(folder: Path = PROFILE_DIR) -> list[str]:
    """Profile names: the stems of conf/profile/*.yaml."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def declared_profile(name: str, folder: Path = PROFILE_DIR) -> dict[str, Any]:
    """conf/profile/<name>.yaml as data; UnknownProfileError naming the known ones otherwise."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise UnknownProfileError(
            f"unknown profile {name!r}: conf/profile/ declares {known_profiles(folder)} "
            '(choose one with `make params ARGS="profile=NAME"`)'
        )
    return yaml.safe_load(path.read_text()) or {}


def _differences(declared: Any, used: Any, prefix: str) -> list[str]:
    if isinstance(declared, dict) and isinstance(used, dict):
        out: list[str] = []
        for key in sorted({*declared, *used}, key=str):
            out += _differences(declared.get(key), used.get(key), f"{prefix}.{key}")
        return out
    return [] if declared == used else [f"{prefix}={used!r} (declared {declared!r})"]


def profile_overrides(name: str, used: dict[str, Any], folder: Path = PROFILE_DIR) -> list[str]:
    """Every setting of the composed profile that differs from its declaration, as `profile.x=used (declared d)`."""
    return _differences(declared_profile(name, folder), used, "profile")
