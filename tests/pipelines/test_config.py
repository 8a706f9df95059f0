"""The Hydra configs compose for every profile and model, and validate against their schemas."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from pipelines.config import compose, validate
from tests.conftest import ROOT


@pytest.mark.parametrize("profile", ["ci", "weekly", "release"])
@pytest.mark.parametrize("model", ["smollm2-135m", "tiny-random"])
def test_every_profile_composes_and_validates(profile: str, model: str) -> None:
    params = compose([f"profile={profile}", f"model={model}"])
    cfg = validate(OmegaConf.create(params))
    assert cfg.profile.name == profile and cfg.model.name == model
    assert cfg.scenario.throughput.batch_sizes == [1, 4, 8, 16]


def test_release_is_the_full_suite() -> None:
    release = validate(OmegaConf.create(compose(["profile=release"]))).profile
    assert release.repetitions == 5 and release.stress.duration_s == 72 * 3600
    ci = validate(OmegaConf.create(compose(["profile=ci"]))).profile
    assert ci.stress.duration_s <= 120 and ci.repetitions == 1


def test_overrides_reach_params() -> None:
    params = compose(["profile.stress.duration_s=5", "scenario.throughput.batch_sizes=[1,2]"])
    assert params["profile"]["stress"]["duration_s"] == 5
    assert params["scenario"]["throughput"]["batch_sizes"] == [1, 2]


def test_wrong_types_fail_validation() -> None:
    params = compose([])
    params["profile"]["repetitions"] = "many"
    with pytest.raises(ValidationError):
        validate(OmegaConf.create(params))


def test_committed_params_yaml_is_the_ci_composition() -> None:
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == compose([])
