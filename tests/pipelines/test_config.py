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


def test_an_unknown_profile_name_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    from gates.profiles import UnknownProfileError
    from pipelines.config import main

    with pytest.raises(UnknownProfileError, match="unknown profile 'bogus'"):
        compose(["profile.name=bogus"])
    assert main(["profile.name=bogus"]) == 2
    assert "conf/profile/ declares ['ci', 'release', 'weekly']" in capsys.readouterr().err


def test_params_yaml_with_an_unknown_profile_is_refused_by_every_stage(tmp_path) -> None:
    from gates.profiles import UnknownProfileError
    from pipelines.config import load_params

    params = compose([])
    params["profile"]["name"] = "bogus"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(UnknownProfileError):
        load_params(tmp_path / "params.yaml")


def test_make_test_runs_the_ci_profiles_test_selection() -> None:
    ci = yaml.safe_load((ROOT / "conf" / "profile" / "ci.yaml").read_text())["tests"]
    makefile = (ROOT / "Makefile").read_text()
    assert f'pytest -m "{ci["markers"]}" -q' in makefile and ci["paths"] == ["tests"]


def test_a_stage_refuses_an_unknown_profile_in_one_line(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.common import stage_cli

    params = compose([])
    params["profile"]["name"] = "bogus"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ran = []
    assert stage_cli("a-stage", ran.append, "a stage", ["--params", str(tmp_path / "params.yaml")]) == 2
    assert ran == [] and "unknown profile 'bogus'" in capsys.readouterr().err
