"""The `study:` block of a YAML spec: a grid over spec fields × seeds, or an Optuna search.

    study:
      name: rho on fashion-mnist
      seeds: [0, 1, 2]              # or a count: 3 -> seeds 0, 1, 2
      baseline: true                # add a scratch configuration (no teacher, no hints) to compare against
      variants:                     # named sets of overrides, one more grid axis (e.g. the method)
        KD: {}
        FitNets: {hints: [...], hint_stage_epochs: 2}
      grid:                         # cartesian product over dotted spec fields
        logit.rho: [1, 4]
        logit.alpha: [0.1, 0.5]
      select: best-val              # how each run's epoch is selected: best-val or last (never test)

A search replaces `grid`/`variants`; its space names dotted spec fields (see SearchSpec)."""
from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdcore.spec import SpecError, format_validation_error, parse_spec_yaml

MAX_RUNS = 500  # a study larger than this is almost certainly a typo in a grid


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpace(_Strict):
    """One searched field: a float range (`low`, `high`, `log`), an integer range (`int: true`), or `choices`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    int: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> "ParamSpace":
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices must list at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a searched field needs `low` and `high`, or `choices`")
        if self.low >= self.high:
            raise ValueError("low must be below high")
        if self.log and self.low <= 0:
            raise ValueError("a log-uniform range needs low > 0")
        return self


class SearchSpec(_Strict):
    """Optuna: TPE sampler, a pruner fed with validation accuracy each epoch, trials run by the workers."""

    trials: int = Field(20, ge=1, le=MAX_RUNS)
    parallel: int = Field(2, ge=1, le=64, description="trials queued at once (as many workers can run them)")
    space: dict[str, ParamSpace] = Field(min_length=1)
    pruner: Literal["median", "successive_halving", "none"] = "median"
    startup_trials: int = Field(4, ge=0, description="random trials before TPE models the space")
    warmup_epochs: int = Field(1, ge=0, description="epochs a trial always runs before it can be pruned")
    sampler_seed: int | None = 0


class StudySpec(_Strict):
    name: str | None = Field(None, max_length=80)
    seeds: list[int] = Field(default_factory=lambda: [0])
    baseline: bool = False
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    select: Literal["best-val", "last"] = "best-val"
    search: SearchSpec | None = None

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, v: Any) -> Any:
        return list(range(v)) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError("seeds must list at least one seed, each once")
        return v

    @model_validator(mode="after")
    def _shape(self) -> "StudySpec":
        for field, values in self.grid.items():
            if not values:
                raise ValueError(f"grid.{field} lists no value")
        if self.search is not None and (self.grid or self.variants or self.baseline):
            raise ValueError("a search explores its space itself: leave out grid, variants and baseline")
        return self


def split_study(data: dict[str, Any]) -> tuple[dict[str, Any], StudySpec]:
    """A spec mapping with a `study:` block -> (the base RunSpec mapping, the study)."""
    data = copy.deepcopy(data)
    raw = data.pop("study", None)
    if raw is None:
        raise SpecError(["study: the spec has no `study:` block (a grid or a search)"])
    if "sweep" in data:
        raise SpecError(["sweep: a study spec uses study.grid instead of a sweep block"])
    try:
        return data, StudySpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(["study." + p for p in format_validation_error(err)]) from None


def parse_study_yaml(text: str) -> tuple[dict[str, Any], StudySpec]:
    return split_study(parse_spec_yaml(text))
