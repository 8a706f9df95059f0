"""Release criteria as data: the schema of `conf/gates/*.yaml` and its loader."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Comparator = Literal[">=", ">", "<=", "<", "==", "!="]
Severity = Literal["blocker", "major", "minor"]
Kind = Literal["value", "percentile", "trend", "mtbf", "regression"]
DIMENSIONS = ("correctness", "performance", "quality", "features", "reliability", "compatibility", "release")


class Criterion(BaseModel):
    """One check: a metric, how it compares, the thresholds from the criteria document, where it applies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    part: str = Field(description="section of the criteria document, e.g. '1.1'")
    dimension: Literal[DIMENSIONS]
    description: str
    metric: str = Field(description="dotted key into the collected evidence, e.g. 'bench.batch1.decode_tok_s'")
    comparator: Comparator
    acceptance: float = Field(description="the value that must hold for PASS")
    target: float | None = None
    stretch: float | None = None
    unit: str = ""
    severity: Severity = "major"
    kind: Kind = "value"
    better: Literal["higher", "lower"] = "higher"  # direction of the metric, for regression checks
    profiles: list[str]
    quote: list[str] = Field(
        default_factory=list,
        description="[label, threshold]: fragments of one line of the criteria document that state this check",
    )
    derivation: str | None = Field(None, description="how acceptance follows from the quote when it is not literal")


class SignOff(BaseModel):
    """The approval rule of criteria Part 6."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: list[str]
    min_approvals: int
    required: list[str]


class GateSpec(BaseModel):
    """The whole document: criteria, sign-off rule and the scenario rule's issue limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: str = Field(description="the criteria document, a file beside the spec")
    max_minor_issues: int = Field(description="Scenario B allows this many minor issues; more is Scenario C")
    profiles: list[str] = Field(description="the profiles the criteria may name (conf/profile/*.yaml)")
    signoff: SignOff
    criteria: list[Criterion]
    unmeasured: dict[str, str] = Field(default_factory=dict, description="metric -> what will produce it")

    @model_validator(mode="after")
    def _unique_ids_known_profiles(self) -> GateSpec:
        seen: set[str] = set()
        dupes = {c.id for c in self.criteria if c.id in seen or seen.add(c.id)}
        if dupes:
            raise ValueError(f"duplicate criterion ids: {sorted(dupes)}")
        for c in self.criteria:
            unknown = set(c.profiles) - set(self.profiles)
            if unknown:
                raise ValueError(f"criterion {c.id}: unknown profile(s) {sorted(unknown)}; spec has {self.profiles}")
        return self


class GateSpecError(ValueError):
    """The thresholds file is missing or does not match the schema."""


def load_spec(path: str | Path) -> GateSpec:
    """Read and validate a criteria file; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise GateSpecError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise GateSpecError(f"{path}: not valid YAML ({exc})") from None
    if isinstance(data, dict):  # `x-*` keys hold YAML anchors (shared profile lists), not criteria
        data = {k: v for k, v in data.items() if not str(k).startswith("x-")}
    try:
        return GateSpec.model_validate(data)
    except ValidationError as exc:
        raise GateSpecError(f"{path}: {exc}") from None
