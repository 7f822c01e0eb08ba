"""Studies page under AppTest: the table, the figures, selection, a run whose trainer warned (counted, and left out
of the means on request), the start form and a search's Optuna view."""
from __future__ import annotations

import json

from test_app_support import (
    TEACHER,
    WORKER,
    app,
    claim,
    completed_run,
    kd_spec,
    no_exception,
    no_local_worker,  # noqa: F401 - autouse: no real worker
    texts,
)

from app import studies
from kdcore.jobs import RunStatus, RunStore
from kdcore.studies import StudySpec, study_table, submit_study
from kdcore.studies.search import _trial_spec, create_search, load_search


def finish(store: RunStore, run_id: str, val: list[float], test_last: float, warning: str | None = None) -> None:
    """Complete a run with a validation curve; test accuracy where validation improved and at the end; `warning`
    as its trainer's."""
    cb = claim(store, run_id)
    best = -1.0
    for epoch, v in enumerate(val, 1):
        metrics = {"train/loss": 1.0 / epoch, "train/acc": v, "val/acc": v, "epoch_time": 0.1}
        if v > best or epoch == len(val):
            metrics["test/acc"] = test_last if epoch == len(val) else v - 0.01
            metrics["fidelity/agreement"] = v
        best = max(best, v)
        cb.on_epoch(epoch, epoch * 5, metrics)
    if warning:
        cb.on_warning(warning)
    cb.flush()
    assert store.finish_run(run_id, WORKER, cb.attempt, RunStatus.COMPLETED, final=cb.info.get("final"))


COLLAPSE = ("The student stopped learning at epoch 1: it predicts one class for 100% of the validation set "
            "(accuracy 10.0%, chance 10%) while the loss stays finite, so this run's results say nothing about the "
            "method; rerun with a lower learning rate (e.g. optimizer.lr: 0.01) or gradient clipping "
            "(optimizer.clip_grad_norm: 1.0).")


def grid_study(store: RunStore, *, dead_rho4_seed: int | None = None) -> str:
    """ρ ∈ {1, 4} × seeds 0..2 and scratch; with `dead_rho4_seed` that ρ = 4 run's student collapsed (val 0.1,
    test 0.09 at its selected epoch) and its trainer said so."""
    teacher = completed_run(store, TEACHER)
    study = StudySpec(name="rho grid", grid={"logit.rho": [1, 4]}, seeds=[0, 1, 2], baseline=True)
    study_id = submit_study(store, kd_spec(teacher), study, check=False)
    for r in sorted(store.list_runs(sweep_id=study_id), key=lambda r: r.created_at):
        if r.spec.teacher is not None and r.spec.logit.rho == 4 and r.spec.seed == dead_rho4_seed:
            finish(store, r.id, [0.1, 0.1, 0.1], test_last=0.1, warning=COLLAPSE)
            continue
        gain = 0.0 if r.spec.teacher is None else 0.02 * r.spec.logit.rho / 4
        v = 0.6 + gain + 0.01 * r.spec.seed
        finish(store, r.id, [v - 0.1, v, v - 0.05], test_last=v - 0.2)
    return study_id


def test_study_page_shows_the_table_figures_and_switches_selection(kd_home):
    store = RunStore()
    study_id = grid_study(store)
    at = app("study.py", study=study_id)
    no_exception(at)
    table = at.dataframe[0].value
    assert table["configuration"].tolist() == ["scratch", "logit.rho=1", "★ logit.rho=4"]
    assert table["n"].tolist() == ["3/3"] * 3
    assert table.loc[2, "test acc %"] == "62.00 ± 1.00"  # best-val epoch 2: v − 0.01, v = 0.62 + seed/100
    assert "Best on validation: **logit.rho=4**" in texts(at)
    assert {"study_curves", "study_swept", "study_parcoords"} <= _chart_keys(at)
    at.segmented_control(key="study_select").set_value("last").run()
    no_exception(at)
    assert at.dataframe[0].value.loc[2, "test acc %"] == "43.00 ± 1.00"  # the last epoch


def test_a_studys_arm_row_counts_a_collapsed_seed_and_can_leave_it_out(kd_home):
    store = RunStore()
    study_id = grid_study(store, dead_rho4_seed=2)
    at = app("study.py", study=study_id)
    no_exception(at)
    table = at.dataframe[0].value.set_index("configuration")
    assert at.checkbox(key="study_exclude_warned").value is False  # kept by default, and flagged
    assert table.loc["logit.rho=4", "n"] == "3/3, 1 ⚠" and table.loc["★ logit.rho=1", "n"] == "3/3"
    assert table.loc["logit.rho=4", "test acc %"] == "44.00 ± 30.32"  # 0.61, 0.62 and the dead 0.09
    assert "1 such run is kept in the means" in texts(at) and "| logit.rho=4 | 3/3, 1 ⚠ |" in at.code[0].value

    at.checkbox(key="study_exclude_warned").check().run()
    no_exception(at)
    table = at.dataframe[0].value.set_index("configuration")
    assert table.loc["★ logit.rho=4", "n"] == "2/3, 1 ⚠ out"
    assert table.loc["★ logit.rho=4", "test acc %"] == "61.50 ± 0.71"  # the mean of the two others
    assert "1 such run is left out of the means" in texts(at) and "left out of the means" in at.code[0].value
    assert "over 2 seed(s), 1 run with a training warning left out" in texts(at)
    curves = next(c for c in at.get("plotly_chart") if "study_curves" in c.proto.id)
    names = [t.get("name") for t in json.loads(curves.proto.spec)["data"]]
    assert "logit.rho=4 (n=2)" in names  # the band leaves the dead run out too
    kept, left = study_table(store, study_id), study_table(store, study_id, exclude_warned=True)
    assert len(studies.runs_frame(kept)) == 9 and len(studies.runs_frame(left)) == 8  # swept value, parcoords


def test_a_study_without_a_warned_run_offers_no_checkbox(kd_home):
    at = app("study.py", study=grid_study(RunStore()))
    no_exception(at)
    assert not at.checkbox and "⚠" not in texts(at)


def _chart_keys(at) -> set[str]:
    keys = set()
    for chart in at.get("plotly_chart"):
        for key in ("study_curves", "study_swept", "study_parcoords", "study_history", "study_importances"):
            if key in chart.proto.id:
                keys.add(key)
    return keys


def test_start_form_queues_a_grid_times_seeds_study(kd_home):
    store = RunStore()
    teacher = completed_run(store, TEACHER)
    base = completed_run(store, kd_spec(teacher))
    at = app("study.py")
    no_exception(at)
    at.selectbox(key="study_base").set_value(base)
    at.text_input(key="study_name").set_value("alpha check")
    at.selectbox(key="study_field_0").set_value("logit.alpha")
    at.text_input(key="study_values_0").set_value("0.1, 0.5")
    at.number_input(key="study_seeds").set_value(2)
    at.toggle(key="study_baseline").set_value(False)
    at.button[0].click().run()
    no_exception(at)
    new_id = at.query_params["study"][0] if isinstance(at.query_params["study"], list) else at.query_params["study"]
    runs = store.list_runs(sweep_id=new_id)
    assert sorted((r.spec.logit.alpha, r.spec.seed) for r in runs) == [(0.1, 0), (0.1, 1), (0.5, 0), (0.5, 1)]
    assert all(r.status is RunStatus.QUEUED for r in runs)
    at.text_input(key="study_values_0").set_value("")
    at.button[0].click().run()
    assert "give at least one value" in texts(at)


def search_study(store: RunStore) -> tuple[str, object]:
    """A search of three finished trials, each an ordinary completed run, told to Optuna."""
    from optuna.distributions import FloatDistribution

    base = {"name": "search", "dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 3}
    spec = StudySpec.model_validate({"name": "lr search", "search": {"trials": 3, "space": {
        "optimizer.lr": {"low": 0.001, "high": 0.1, "log": True}, "logit.alpha": {"low": 0.1, "high": 0.9}}}})
    study_id = create_search(store, base, spec, check=False)
    optuna_study, _ = load_search(store, study_id)
    for val in (0.7, 0.8, 0.75):
        trial = optuna_study.ask({"optimizer.lr": FloatDistribution(0.001, 0.1, log=True),
                                  "logit.alpha": FloatDistribution(0.1, 0.9)})
        run_id = store.submit(_trial_spec(base, spec, trial.params, trial.number), sweep_id=study_id, check=False)
        trial.set_user_attr("kd_run_id", run_id)
        finish(store, run_id, [val - 0.1, val, val - 0.02], test_last=val)
        optuna_study.tell(trial, val)
    return study_id, optuna_study


def test_search_tab_shows_optunas_history_importances_and_best_trial(kd_home):
    study_id, optuna_study = search_study(RunStore())
    at = app("study.py", study=study_id)
    no_exception(at)
    assert {"study_history", "study_importances"} <= _chart_keys(at)
    assert f"Best trial {optuna_study.best_trial.number}" in texts(at)
    assert len(at.dataframe[-1].value) == 3
