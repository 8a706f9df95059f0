"""`python -m pipelines COMMAND`: the package's one entry point, which sets the process up before any import."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from pipelines.__main__ import COMMANDS, main
from pipelines.environment import SWITCHES, configure
from tests.conftest import ROOT


def test_no_command_prints_the_list_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "release_gate" in capsys.readouterr().out
    assert main(["--help"]) == 0


def test_an_unknown_command_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchh"]) == 2
    assert "unknown command 'benchh'" in capsys.readouterr().err


def test_every_command_resolves() -> None:  # that each dvc.yaml stage is one: tests/pipelines/test_stages.py
    for name in COMMANDS:
        module = importlib.import_module(f"pipelines.{name}")
        assert hasattr(module, "main") or callable(getattr(module, f"{name}_flow")), name


def test_importing_the_stages_sets_nothing() -> None:
    clean = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    code = "import os, pipelines.bench, pipelines.gate; print(sorted(k for k in {} if k in os.environ))"
    out = subprocess.run([sys.executable, "-c", code.format(list(SWITCHES))], env=clean, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.strip() == "[]"


def test_configure_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in SWITCHES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "DEBUG")
    configure()
    assert os.environ["PREFECT_LOGGING_LEVEL"] == "DEBUG" and os.environ["HF_HUB_OFFLINE"] == "1"


def test_the_entry_point_quiets_prefect_before_it_loads() -> None:
    clean = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    code = (
        "from pipelines.__main__ import main; main(['config', '--help']);"
        "from prefect.settings import get_current_settings as s; import huggingface_hub.constants as h;"
        "print(s().logging.level, s().server.analytics_enabled, h.HF_HUB_OFFLINE)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=clean, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "WARNING False True"
