"""Progress off a terminal: whole lines with counts and ETA, never a carriage-return bar."""

from __future__ import annotations

import pytest

from engine import progress as progress_module
from engine.progress import progress


def test_a_ci_log_gets_one_line_per_interval_and_a_final_one(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    assert list(progress(range(4), desc="calibrate", unit="batch")) == [0, 1, 2, 3]
    # only this bar's lines: under pytest-xdist a thread an earlier test left (a model loading) may write too
    lines = [line for line in capsys.readouterr().err.split("\n") if "calibrate:" in line]
    assert all(line.startswith("progress: calibrate:") and "\r" not in line for line in lines)
    assert len(lines) >= 2 and "4/4" in lines[-1] and "100%" in lines[-1]


def test_work_shorter_than_the_interval_logs_nothing(capsys) -> None:
    for _ in range(50):  # say, the per-block evaluations of a sensitivity scan
        list(progress(range(1000), desc="eval", unit="window", leave=False))
    assert capsys.readouterr().err == ""
