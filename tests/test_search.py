"""Hyperparameter search on Optuna: trials are ordinary runs executed by real workers, pruned on validation."""
from __future__ import annotations

import threading
import time

import pytest

from kdcore.jobs import RunStatus, RunStore
from kdcore.jobs.testing import database_url, start_worker, stop_process, wait_until
from kdcore.spec import SpecError
from kdcore.studies import parse_study_yaml, study_table, submit_study
from kdcore.studies.search import RUN_ATTR, drive_search, load_search
from kdcore.summary import SELECTION_METRICS, VAL_METRIC, summarize_points

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
        # The driver is done once every trial is told; a pruned trial's run stops when its worker next
        # reads the cancel flag, so the workers must outlive that.
        wait_until(lambda: all(r.is_terminal for r in store.list_runs(sweep_id=study_id)), 120,
                   "the pruned trials' runs to stop", poll_s=0.2)
    finally:
        for w in workers:
            stop_process(w)
    trials = result.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert len(trials) == 6 and set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    # Which trials are pruned here depends on the learning rates TPE samples after the first trials finish
    # and on how fast the two workers run (test_the_median_pruner_stops_a_trial_below_the_median checks
    # the pruning itself, in an order the test sets); every pruned trial must have stopped before its last epoch.
    runs = {r.id: r for r in store.list_runs(sweep_id=study_id)}
    assert sorted(runs) == sorted(t.user_attrs[RUN_ATTR] for t in trials)  # one run per trial, no other
    for t in trials:
        run = runs[t.user_attrs[RUN_ATTR]]
        claims = [e for e in store.events(run.id) if e.message.startswith("claimed by")]
        assert len(claims) <= 1 and run.attempts <= 1, "a trial's run was executed more than once"
        assert run.spec.optimizer.lr == pytest.approx(t.params["optimizer.lr"])
        if t.state is optuna.trial.TrialState.PRUNED:
            # cancelled, unless its worker finished the last epoch before it read the cancel
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


# Each trial's validation accuracy per epoch, as the scripted worker below reports it.
CURVES = [
    [0.5, 0.6, 0.7, 0.8],
    [0.2, 0.3, 0.4, 0.5],  # below trial 0 throughout, but the pruner waits for two finished trials
    [0.1, 0.1, 0.1, 0.1],  # below the median from the start: pruned once its warm-up (2 epochs) is over
    [0.4, 0.5, 0.9, 0.95],  # above the median at every epoch: runs to the end, and is the best
]


class CountedLooks:
    """The run store as the driver sees it, counting its looks at a run (one per active trial and pass)."""

    def __init__(self, store: RunStore) -> None:
        self.store, self.looks = store, 0

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    def get(self, run_id: str):
        record = self.store.get(run_id)
        self.looks += 1
        return record


def test_the_median_pruner_stops_a_trial_below_the_median(db_url):
    """The real driver and median pruner against a worker the test plays: trials one at a time, and each
    epoch is reported only after the driver has made a whole pass over the one before, so what the pruner
    sees, and when, is fixed (with real workers a short run can end before the driver looks)."""
    optuna = pytest.importorskip("optuna")
    store = RunStore(db_url)
    yaml = (SEARCH.replace("epochs: 8", f"epochs: {len(CURVES[0])}").replace("trials: 6", f"trials: {len(CURVES)}")
            .replace("parallel: 2", "parallel: 1").replace("warmup_epochs: 1", "warmup_epochs: 2"))
    base, study = parse_study_yaml(yaml)
    study_id = submit_study(store, base, study, check=False)
    counted = CountedLooks(RunStore(db_url))
    outcome: dict = {}

    def drive() -> None:
        try:
            outcome["study"] = drive_search(counted, study_id, poll_s=0.02, timeout_s=300)
        except BaseException as err:  # noqa: BLE001 - handed to the test's thread
            outcome["error"] = err

    def driver_has_looked_again() -> None:
        # The pass after this one started after the write: it has read it and acted on it once the next begins.
        seen = counted.looks
        wait_until(lambda: counted.looks >= seen + 2 or not driver.is_alive(), 60, "the driver's next pass",
                   poll_s=0.01, on_timeout=lambda: repr(outcome))

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    store.register_worker("scripted", host="test", pid=0, device="cpu")
    for number, curve in enumerate(CURVES):
        run = wait_until(lambda: store.claim_next("scripted", device="cpu"), 60, f"trial {number}'s run",
                         poll_s=0.02, on_timeout=lambda: repr(outcome))
        assert f"config:trial {number}" in run.spec.tags  # one trial at a time, in order
        for epoch, acc in enumerate(curve, start=1):
            point = {"step": 10 * epoch, "epoch": epoch, "name": VAL_METRIC, "value": acc, "wall_time": time.time(),
                     "kind": "epoch"}
            assert store.record_progress(run.id, "scripted", run.attempts, points=[point], epoch=epoch, step=10 * epoch)
            driver_has_looked_again()
            cancel, _ = store.should_stop(run.id, "scripted", run.attempts)
            if cancel:
                assert store.finish_run(run.id, "scripted", run.attempts, RunStatus.CANCELLED)
                break
        else:
            assert store.finish_run(run.id, "scripted", run.attempts, RunStatus.COMPLETED)
    driver.join(60)
    assert not driver.is_alive() and "error" not in outcome, outcome

    State = optuna.trial.TrialState
    trials = outcome["study"].get_trials(deepcopy=False)
    assert [t.state for t in trials] == [State.COMPLETE, State.COMPLETE, State.PRUNED, State.COMPLETE]
    assert trials[2].intermediate_values == {1: 0.1, 2: 0.1}  # not before the warm-up's end, nor after
    runs = {r.id: r for r in store.list_runs(sweep_id=study_id)}
    assert len(runs) == len(CURVES)
    pruned = runs[trials[2].user_attrs[RUN_ATTR]]
    assert pruned.status is RunStatus.CANCELLED
    assert any(e.message == "cancel requested by optuna pruner" for e in store.events(pruned.id))
    for t in (trials[0], trials[1], trials[3]):
        assert runs[t.user_attrs[RUN_ATTR]].status is RunStatus.COMPLETED
        assert t.intermediate_values == dict(enumerate(CURVES[t.number], start=1))
        assert t.value == max(CURVES[t.number])  # validation accuracy at the best epoch
    assert outcome["study"].best_trial.number == 3


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
