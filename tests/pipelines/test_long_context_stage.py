"""The long_context stage refuses dense lengths the model cannot serve before it starts an hour of runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipelines.config import TollgateConf, compose, validate
from pipelines.long_context import check_dense_lengths


def _conf(tmp_path: Path, profile: str, trained: int, dense_lengths: list[int] | None = None) -> TollgateConf:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": trained}))
    params = compose([f"profile={profile}"])
    params["model"]["path"] = str(tmp_path)
    if dense_lengths is not None:
        params["profile"]["long_context"]["dense_lengths"] = dense_lengths
    return validate(OmegaConf.create(params))


@pytest.mark.parametrize("profile", ["ci", "weekly", "release"])
def test_every_profiles_dense_lengths_fit_smollm2s_trained_context(tmp_path: Path, profile: str) -> None:
    check_dense_lengths(_conf(tmp_path, profile, trained=8192))


@pytest.mark.parametrize("length", [8192, 8190])
def test_a_dense_length_with_no_room_to_decode_is_refused_up_front(tmp_path: Path, length: int) -> None:
    with pytest.raises(ValueError, match=rf"dense_lengths \[{length}\]: .* trained on 8192 positions"):
        check_dense_lengths(_conf(tmp_path, "weekly", trained=8192, dense_lengths=[length]))
