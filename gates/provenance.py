"""Who produced a piece of evidence: file hashes, the commit and its dirty flag, timestamps (stdlib only)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASES = ("measured", "derived", "formula", "declared")  # how a number was obtained, strongest first


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(path: Path) -> str:
    """A file's sha256, or for a folder the sha256 of its files' relative paths and hashes (sorted)."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(f"{f.relative_to(path)}\0{sha256_file(f)}\n".encode())
    return digest.hexdigest()


def sha256_json(data: Any) -> str:
    """sha256 of a JSON-able value in canonical form (sorted keys), e.g. a params dict."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_head() -> str:
    """Commit of the working tree ("unknown" outside git)."""
    return _git("rev-parse", "HEAD") or "unknown"


# Files the pipeline itself rewrites: params.yaml is composed from conf/ (its hash and every departure from
# conf/profile/ are recorded separately) and dvc.lock is DVC's record of the run.
GENERATED = ("params.yaml", "dvc.lock")


def git_dirty() -> bool:
    """True when tracked source files differ from HEAD (evidence from such a tree belongs to no commit)."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{g}" for g in GENERATED))
    return bool(status) if status is not None else True


def now_utc() -> str:
    """ISO-8601 UTC timestamp, second precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def age_days(timestamp: str) -> float:
    """Days since an ISO-8601 timestamp written by `now_utc`."""
    return (datetime.now(UTC) - datetime.fromisoformat(timestamp)).total_seconds() / 86400
