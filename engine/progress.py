"""Progress on long work: tqdm's bar with its ETA on a terminal, the same status as one plain line every 30 s in
a CI log (where a carriage-return bar would be one unreadable line)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

LOG_EVERY_S = 30.0
T = TypeVar("T")


class _Lines:
    """A file for tqdm that turns each carriage-return refresh into one line on stderr."""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            sys.stderr.write(f"progress: {line}\n")

    def flush(self) -> None:
        sys.stderr.flush()


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm:
    """tqdm with `desc`, `total`, `unit` as usual; off a terminal it logs a line per LOG_EVERY_S, and nothing for
    work shorter than that (a loop of many short evaluations would otherwise flood the log with 0% lines)."""
    if sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    return tqdm(iterable, file=_Lines(), mininterval=LOG_EVERY_S, delay=LOG_EVERY_S, ascii=True, ncols=100, **kwargs)
