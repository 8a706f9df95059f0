"""`python -m engine.loader list`: every architecture with its parity status."""

from __future__ import annotations

import pytest

from engine.architectures import ARCHITECTURES
from engine.loader.__main__ import main


def test_list_checks_the_named_checkpoints(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "gpt2", "gemma2"]) == 0
    out = capsys.readouterr().out
    assert "GPT2LMHeadModel" in out and "Gemma2ForCausalLM" in out and out.count("PASS") == 2
    assert f"2 of {len(ARCHITECTURES)} architectures (2 families) pass parity" in out


def test_list_without_checking_names_every_architecture(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "--no-check"]) == 0
    out = capsys.readouterr().out
    assert all(arch in out for arch in ARCHITECTURES) and "not checked" in out


def test_list_refuses_an_unknown_checkpoint_name() -> None:
    with pytest.raises(SystemExit):
        main(["list", "bert"])
