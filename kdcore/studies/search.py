"""Hyperparameter search on Optuna: its TPE sampler and pruners, its storage in the run store's database.

Every trial is an ordinary run in the store, executed by whichever worker claims it (any number, on any
machine). A driver (`drive_search`) asks Optuna for parameters, queues the trial's run, feeds the run's
validation accuracy to the trial after each epoch and cancels the run when the pruner says so; a completed
trial's value is its validation accuracy at the selected epoch (kdcore.summary) — never test accuracy.
The driver keeps nothing of its own: a new driver on the same study id carries on where one stopped."""
from __future__ import annotations

import copy
import logging
import math
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from kdcore.errors import KDError
from kdcore.spec import RunSpec, SpecError
from kdcore.studies.expand import CONFIG_TAG, STUDY_TAG, set_field
from kdcore.studies.spec import ParamSpace, StudySpec
from kdcore.summary import SELECTION_METRICS, VAL_METRIC, summarize_points

RUN_ATTR = "kd_run_id"


def optuna_name(study_id: str) -> str:
    return f"kd-{study_id}"


def _optuna():
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    return optuna


def optuna_storage(url: str):
    """Optuna's RDB storage on the run store's database (its own tables beside the store's kd_* ones)."""
    optuna = _optuna()
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def _sampler_and_pruner(study: StudySpec):
    optuna = _optuna()
    s = study.search
    sampler = optuna.samplers.TPESampler(seed=s.sampler_seed, n_startup_trials=s.startup_trials)
    if s.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=min(2, s.trials), n_warmup_steps=s.warmup_epochs)
    elif s.pruner == "successive_halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, s.warmup_epochs))
    else:
        pruner = optuna.pruners.NopPruner()
    return sampler, pruner


def _suggest(trial, field: str, space: ParamSpace) -> Any:
    if space.choices is not None:
        return trial.suggest_categorical(field, space.choices)
    if space.int:
        return trial.suggest_int(field, int(space.low), int(space.high), log=space.log)
    return trial.suggest_float(field, space.low, space.high, log=space.log)


def _trial_spec(base: dict[str, Any], study: StudySpec, params: dict[str, Any], number: int) -> RunSpec:
    data = copy.deepcopy(base)
    for field, value in params.items():
        set_field(data, field, value)
    name = study.name or base.get("name") or "search"
    shown = ", ".join(f"{f}={v:.4g}" if isinstance(v, float) else f"{f}={v}" for f, v in params.items())
    label = f"trial {number}"
    data.update(seed=study.seeds[0], name=f"{name} [{label}: {shown}]"[:200],
                tags=[*data.get("tags", []), f"{STUDY_TAG}{name}"[:100], f"{CONFIG_TAG}{label}"])
    return RunSpec.from_dict(data)


def create_search(store: Any, base: dict[str, Any], study: StudySpec, *, owner: str | None = None,
                  check: bool = True) -> str:
    """Create the Optuna study for a `study.search` block; returns the study id (its trials' group id).
    Every searched field is tried at both ends of its range first, so a bad field fails here, not mid-search."""
    if study.search is None:
        raise SpecError(["study.search: this study has no search block"])
    for field, space in study.search.space.items():
        for value in (space.choices or [space.low, space.high]):
            value = int(value) if space.int else value
            try:
                _trial_spec(base, study, {field: value}, 0)
            except SpecError as err:
                raise SpecError([f"study.search.space.{field}={value}: {p}" for p in err.problems]) from None
    if check:
        from kdcore.train.checks import check_spec

        problems = check_spec(_trial_spec(base, study, {}, 0), teacher_model=None)
        if problems:
            raise SpecError(problems)
    study_id = secrets.token_hex(4)
    sampler, pruner = _sampler_and_pruner(study)
    created = _optuna().create_study(study_name=optuna_name(study_id), storage=optuna_storage(store.url),
                                     direction="maximize", sampler=sampler, pruner=pruner)
    created.set_user_attr("kd_base", {k: v for k, v in base.items() if k != "study"})
    created.set_user_attr("kd_study", study.model_dump(mode="json"))
    created.set_user_attr("kd_owner", owner)
    return study_id


def load_search(store: Any, study_id: str):
    """(the Optuna study, the StudySpec) of a search, or None when `study_id` is not a search."""
    optuna = _optuna()
    storage = optuna_storage(store.url)
    try:
        names = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    except Exception:  # noqa: BLE001 - no Optuna tables in this database yet
        return None
    if optuna_name(study_id) not in names:
        return None
    probe = optuna.load_study(study_name=optuna_name(study_id), storage=storage)
    spec = StudySpec.model_validate(probe.user_attrs["kd_study"])
    sampler, pruner = _sampler_and_pruner(spec)
    return optuna.load_study(study_name=optuna_name(study_id), storage=storage, sampler=sampler, pruner=pruner), spec


def drive_search(store: Any, study_id: str, *, poll_s: float = 1.0,
                 progress: Callable[[str], None] | None = None, timeout_s: float | None = None):
    """Run a search to its end: keep `parallel` trials queued, report each epoch's validation accuracy,
    cancel the runs the pruner stops. Returns the Optuna study."""
    from kdcore.jobs.store import RunStateError

    loaded = load_search(store, study_id)
    if loaded is None:
        raise KDError(f"there is no search {study_id!r} in the store")
    study, spec = loaded
    optuna = _optuna()
    State = optuna.trial.TrialState
    base, owner, search = study.user_attrs["kd_base"], study.user_attrs.get("kd_owner"), spec.search
    say = progress or (lambda line: None)
    active: dict[int, tuple[Any, str, set[int]]] = {}
    for frozen in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        if RUN_ATTR in frozen.user_attrs:  # a driver that stopped left these running: carry on with them
            active[frozen.number] = (optuna.trial.Trial(study, frozen._trial_id), frozen.user_attrs[RUN_ATTR],
                                     set(frozen.intermediate_values))
        else:
            study.tell(frozen.number, state=State.FAIL)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        created = len(study.get_trials(deepcopy=False))
        while len(active) < search.parallel and created < search.trials:
            trial = study.ask()
            created += 1
            params = {field: _suggest(trial, field, space) for field, space in search.space.items()}
            try:
                run_id = store.submit(_trial_spec(base, spec, params, trial.number), sweep_id=study_id,
                                      owner=owner, check=False)
            except SpecError as err:
                say(f"trial {trial.number} {params}: not a valid spec ({err}); counted as failed")
                study.tell(trial, state=State.FAIL)
                continue
            trial.set_user_attr(RUN_ATTR, run_id)
            active[trial.number] = (trial, run_id, set())
            say(f"trial {trial.number}: run {run_id} queued with {params}")
        for number, (trial, run_id, reported) in list(active.items()):
            record = store.get(run_id)
            pruned = False
            for point in store.metrics(run_id, names=[VAL_METRIC], kind="epoch"):
                if point.epoch in reported or not math.isfinite(point.value):
                    continue
                trial.report(point.value, point.epoch)
                reported.add(point.epoch)
                if not record.is_terminal and point.epoch < record.spec.epochs and trial.should_prune():
                    try:
                        store.cancel(run_id, by="optuna pruner")
                    except RunStateError:
                        break  # it finished meanwhile: judged as finished on the next look
                    study.tell(trial, state=State.PRUNED)
                    say(f"trial {number}: pruned after epoch {point.epoch} (val acc {point.value:.4f})")
                    pruned = True
                    break
            if pruned:
                del active[number]
                continue
            if record.is_terminal:
                summary = summarize_points(store.metrics(run_id, names=SELECTION_METRICS, kind="epoch"),
                                           spec.select)
                if record.status.value == "completed" and summary is not None and math.isfinite(summary.val_acc):
                    study.tell(trial, summary.val_acc)
                    say(f"trial {number}: val acc {summary.val_acc:.4f} (epoch {summary.selected_epoch})")
                else:
                    study.tell(trial, state=State.FAIL)
                    say(f"trial {number}: run {run_id} {record.status.value}, counted as failed")
                del active[number]
        if not active and created >= search.trials:
            return study
        if deadline is not None and time.monotonic() > deadline:
            raise KDError(f"search {study_id} did not finish within {timeout_s:g} s; run the driver again to go on")
        time.sleep(poll_s)


def start_driver(url: str, study_id: str) -> int:
    """Drive a search from a background process (`python -m kdcore study --drive ID`); returns its pid."""
    from kdcore.paths import kd_home

    log = kd_home() / f"search-{study_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kdcore", "study", "--drive", study_id, "--db", url],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=dict(os.environ))
    return proc.pid
