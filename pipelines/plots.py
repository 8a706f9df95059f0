"""Charts and tables the stages write for `dvc plots` (CSV) and the report (PNG)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

Series = tuple[list[Any], list[Any]]


def write_csv(path: Path, header: list[str], rows: Iterable[list[Any]]) -> Path:
    """A CSV with a header row (the folder is made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def chart(
    path: Path, series: dict[str, Series], xlabel: str, ylabel: str, title: str, marker: str = "", log_y: bool = False
) -> Path:
    """Lines (one per series; a legend when they are named) as PNG; a bare Figure needs no GUI backend."""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    for label, xy in series.items():
        ax.plot(*xy, marker=marker or None, label=label or None)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if log_y:
        ax.set_yscale("log")
    if any(series):
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
