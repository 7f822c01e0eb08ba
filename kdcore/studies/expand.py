"""A study's grid × seeds as concrete RunSpecs, and its submission to the run store as one group.

A configuration is everything about a run but its seed, name and tags; its `key` is a hash of exactly that,
so the table groups runs by what was trained, whatever they are called."""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kdcore.spec import RunSpec, SpecError
from kdcore.studies.spec import MAX_RUNS, StudySpec

STUDY_TAG, CONFIG_TAG = "study:", "config:"
BASELINE_LABEL = "scratch"
# What turns a distillation spec into its scratch baseline (same student, data, optimiser and schedule).
SCRATCH_OVERRIDES = {"teacher": None, "hints": [], "hint_stage_epochs": 0}
_NOT_CONFIG = ("seed", "name", "tags")


@dataclass(frozen=True)
class Configuration:
    key: str
    label: str
    values: dict[str, Any] = field(default_factory=dict)  # axis ("variant" or a dotted field) -> value
    is_baseline: bool = False


@dataclass(frozen=True)
class PlannedRun:
    config: Configuration
    seed: int
    spec: RunSpec


def config_key(spec: RunSpec | dict[str, Any]) -> str:
    """A short stable id of what a run trains: its spec without seed, name and tags."""
    data = spec.to_dict() if isinstance(spec, RunSpec) else dict(spec)
    core = {k: v for k, v in data.items() if k not in _NOT_CONFIG}
    return hashlib.sha1(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:10]


def set_field(data: dict[str, Any], dotted: str, value: Any) -> None:
    """data["a"]["b"] = value for "a.b", creating mappings on the way; a non-mapping on the way is an error."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        if node.get(key) is None:
            node[key] = {}
        if not isinstance(node[key], dict):
            raise SpecError([f"study: {dotted} does not name a spec field"])
        node = node[key]
    node[keys[-1]] = copy.deepcopy(value)


def _apply(data: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if "." not in key and isinstance(value, dict) and isinstance(data.get(key), dict):
            _apply(data[key], {k: v for k, v in value.items()})  # nested mapping: merge, not replace
        else:
            set_field(data, key, value)


def _keep_method_fields(block: Any, base_block: Any) -> None:
    """A configuration that switches a block's method (logit: kd -> dkd) keeps only the fields the new
    method has: the base method's own parameters (KD's soft_loss) would be unknown to it."""
    if not (isinstance(block, dict) and isinstance(base_block, dict)):
        return
    from kdcore.methods import get_method
    from kdcore.spec import RunSpec

    method = block.get("method")
    base_method = base_block.get("method") or RunSpec().logit.method
    if method is None or method == base_method:
        return

    try:
        fields = get_method(str(method)).params.model_fields
    except Exception:  # an unknown method is reported by the spec's own validation
        return
    for key in [k for k in block if k not in fields and base_block.get(k) == block[k]]:
        del block[key]


def _label(values: dict[str, Any]) -> str:
    parts = [str(v) if axis == "variant" else f"{axis}={v}" for axis, v in values.items()]
    return ", ".join(parts) or "base"


def expand_study(base: dict[str, Any], study: StudySpec) -> list[PlannedRun]:
    """Every (configuration, seed) of a grid study, configurations in grid order (the baseline first),
    seeds inner. Raises SpecError naming the configuration whose spec is invalid."""
    if study.search is not None:
        raise SpecError(["study.search: a search creates its runs trial by trial, it has no fixed grid"])
    base = {k: v for k, v in copy.deepcopy(base).items() if k != "study"}
    axes: list[tuple[str, list[Any]]] = []
    if study.variants:
        axes.append(("variant", list(study.variants)))
    axes += [(f, list(vs)) for f, vs in study.grid.items()]
    combos: list[tuple[dict[str, Any], dict[str, Any], bool]] = []  # (values, overrides, is_baseline)
    if study.baseline:
        combos.append(({"variant": BASELINE_LABEL}, dict(SCRATCH_OVERRIDES), True))
    for picked in itertools.product(*(vs for _, vs in axes)):
        values = dict(zip((a for a, _ in axes), picked))
        overrides: dict[str, Any] = {}
        if "variant" in values:
            overrides.update(study.variants[values["variant"]] or {})
        overrides.update({a: v for a, v in values.items() if a != "variant"})
        combos.append((values, overrides, False))
    total = len(combos) * len(study.seeds)
    if total > MAX_RUNS:
        raise SpecError([f"study: {total} runs ({len(combos)} configurations × {len(study.seeds)} seeds) is more "
                         f"than the {MAX_RUNS} a study may hold; shrink the grid"])
    name = study.name or base.get("name") or "study"
    planned, seen = [], {}
    for values, overrides, is_baseline in combos:
        label = BASELINE_LABEL if is_baseline else _label(values)
        data = copy.deepcopy(base)
        _apply(data, overrides)
        _keep_method_fields(data.get("logit"), base.get("logit"))
        try:
            first = RunSpec.from_dict({**data, "seed": study.seeds[0]})
        except SpecError as err:
            raise SpecError([f"study configuration {label}: {p}" for p in err.problems]) from None
        key = config_key(first)
        if key in seen:
            raise SpecError([f"study configurations {seen[key]} and {label} train the same spec; "
                             "remove one from the grid"])
        seen[key] = label
        config = Configuration(key=key, label=label, values=values, is_baseline=is_baseline)
        tags = [*first.tags, f"{STUDY_TAG}{name}"[:100], f"{CONFIG_TAG}{label}"[:100]]
        for seed in study.seeds:
            spec = first.model_copy(update={"seed": seed, "name": f"{name} [{label}, seed {seed}]"[:200],
                                            "tags": tags})
            planned.append(PlannedRun(config, seed, spec))
    return planned


def submit_study(store: Any, base: dict[str, Any], study: StudySpec, *, owner: str | None = None,
                 check: bool = True) -> str:
    """Queue a grid study (every run, in one transaction) or create a search; returns the study id."""
    if study.search is not None:
        from kdcore.studies.search import create_search

        return create_search(store, base, study, owner=owner, check=check)
    planned = expand_study(base, study)
    return store.submit_group([p.spec for p in planned], owner=owner, check=check)


def study_runs_tags(tags: Sequence[str]) -> tuple[str | None, str | None]:
    """(study name, configuration label) read from a run's tags."""
    name = next((t[len(STUDY_TAG):] for t in tags if t.startswith(STUDY_TAG)), None)
    label = next((t[len(CONFIG_TAG):] for t in tags if t.startswith(CONFIG_TAG)), None)
    return name, label
