"""Hyperparameter search on Optuna: trials are ordinary runs executed by real workers, pruned on validation."""
from __future__ import annotations

import pytest

from kdcore.jobs import RunStatus, RunStore
from kdcore.jobs.testing import database_url, start_worker, stop_process
from kdcore.spec import SpecError
from kdcore.studies import parse_study_yaml, study_table, submit_study
from kdcore.studies.search import RUN_ATTR, drive_search, load_search
from kdcore.summary import SELECTION_METRICS, summarize_points

SEARCH = """
name: lr search
dataset: {name: digits}
student: mlp_64
epochs: 8
batch_size: 64
probe_size: 0
optimizer: {name: sgd, lr: 0.05}
study:
  search:
    trials: 6
    parallel: 2
    pruner: median
    startup_trials: 2
    warmup_epochs: 1
    space:
      optimizer.lr: {low: 0.000001, high: 0.5, log: true}
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, kd_home, monkeypatch):
    with database_url(request.param, kd_home) as url:
        monkeypatch.setenv("KD_DATABASE_URL", url)
        yield url


@pytest.mark.slow
def test_six_trials_with_pruning_run_once_each_on_two_workers(db_url, kd_home):
    optuna = pytest.importorskip("optuna")
    store = RunStore(db_url)
    base, study = parse_study_yaml(SEARCH)
    study_id = submit_study(store, base, study, check=False)
    workers = [start_worker(kd_home, db_url, log_name=f"worker{i}.out") for i in range(2)]
    try:
        result = drive_search(store, study_id, poll_s=0.1, timeout_s=400)
    finally:
        for w in workers:
            stop_process(w)
    trials = result.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert len(trials) == 6 and set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    # Whether a trial is pruned depends on which learning rates TPE samples first and on how fast runs
    # finish; every pruned trial below must have been stopped before its last epoch.
    runs = {r.id: r for r in store.list_runs(sweep_id=study_id)}
    assert sorted(runs) == sorted(t.user_attrs[RUN_ATTR] for t in trials)  # one run per trial, no other
    for t in trials:
        run = runs[t.user_attrs[RUN_ATTR]]
        claims = [e for e in store.events(run.id) if e.message.startswith("claimed by")]
        assert len(claims) <= 1 and run.attempts <= 1, "a trial's run was executed more than once"
        assert run.spec.optimizer.lr == pytest.approx(t.params["optimizer.lr"])
        if t.state is optuna.trial.TrialState.PRUNED:
            # cancelled when the decision reached it in time; on a fast machine a short run may finish first
            assert run.status in (RunStatus.CANCELLED, RunStatus.COMPLETED)
            assert max(t.intermediate_values) < run.spec.epochs
        else:
            assert run.status is RunStatus.COMPLETED and len(claims) == 1
            summary = summarize_points(store.metrics(run.id, names=SELECTION_METRICS, kind="epoch"))
            assert t.value == pytest.approx(summary.val_acc)  # the objective is validation, never test
            assert list(t.intermediate_values) == list(range(1, run.spec.epochs + 1))
    assert result.best_value == max(t.value for t in trials if t.value is not None)
    loaded, spec = load_search(store, study_id)
    assert spec.search.trials == 6 and len(loaded.trials) == 6
    table = study_table(store, study_id)
    assert len(table.rows) == 6 and table.best.label == f"trial {result.best_trial.number}"


def test_a_search_with_a_field_outside_the_spec_fails_before_anything_is_queued(kd_home):
    store = RunStore()
    base, study = parse_study_yaml(SEARCH.replace("optimizer.lr: {low: 0.000001, high: 0.5, log: true}",
                                                  "logit.rho: {low: -1, high: 4}"))
    with pytest.raises(SpecError, match="study.search.space.logit.rho=-1"):
        submit_study(store, base, study, check=False)
    assert store.list_runs() == []
    assert load_search(store, "00000000") is None
    with pytest.raises(SpecError, match="log-uniform range needs low > 0"):
        parse_study_yaml(SEARCH.replace("low: 0.000001", "low: 0"))
