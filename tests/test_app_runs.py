"""Runs page: the table (filter, sort, open) and the run view — live curves of a run still training,
the log, downloads and the actions (rename, tags, cancel, duplicate, delete)."""
from __future__ import annotations

import io
import json

import pandas as pd
from test_app_support import (
    SCRATCH,
    TEACHER,
    app,
    claim,
    completed_run,
    feed,
    filled_store,
    kd_spec,
    no_exception,
    no_local_worker,  # noqa: F401 - autouse: no real worker
    texts,
)

from app import tables
from kdcore.jobs import RunStore
from kdcore.spec import RunSpec


def test_table_lists_filters_and_opens_runs(kd_home):
    store, ids = filled_store()
    waiting = store.submit({**SCRATCH, "name": "waiting run"}, check=False)
    at = app("runs.py")
    no_exception(at)
    table = at.dataframe[0].value
    assert set(table["id"]) == {*ids.values(), waiting}
    kd_row = table.set_index("id").loc[ids["kd"]]
    assert kd_row["status"] == "completed" and kd_row["agreement"] > 0.8
    assert kd_row["teacher → student"] == f"run {ids['teacher']} → mlp_64"
    # short placeholders that fit a narrow filter box (an 800 px window)
    assert [at.multiselect(key=k).proto.placeholder for k in ("runs_status", "runs_dataset", "runs_tags")] == \
        ["all", "all", "any"]
    assert table.set_index("id").loc[ids["teacher"], "method"] == "labels only (no teacher)"
    at.multiselect(key="runs_status").set_value(["queued"]).run()
    assert at.dataframe[0].value["id"].tolist() == [waiting]
    at.multiselect(key="runs_status").set_value([]).run()
    at.text_input(key="runs_search").set_value("digits kd").run()
    assert at.dataframe[0].value["id"].tolist() == [ids["kd"]]
    at.selectbox(key="runs_open_pick").set_value(ids["kd"]).run()
    at.button(key="runs_open").click().run()
    no_exception(at)
    assert at.title[0].value == "digits kd"


def test_run_view_of_a_run_still_training_appends_new_points(kd_home):
    store = RunStore()
    teacher = completed_run(store, TEACHER)
    run_id = store.submit(kd_spec(teacher), check=False)
    cb = claim(store, run_id)
    feed(cb, range(1, 2), kd=True)
    at = app("run.py", run=run_id)
    no_exception(at)
    assert "running" in texts(at)
    assert at.get("progress")[0].proto.text == "epoch 1 of 3 · step 5"
    charts = at.get("vega_lite_chart")
    assert len(charts) == 6  # losses, accuracy, agreement, KL, lr, throughput
    specs = [c.proto.spec for c in charts]
    agreement = next(json.loads(s) for s in specs if "Teacher–student agreement" in json.loads(s)["title"]["text"])
    assert all(layer["encoding"]["y"]["axis"]["title"] == "" for layer in agreement["layer"])  # said by the title
    live = at.session_state[f"live_{run_id}"]
    assert live["last"] == 5 and len(live["frame"]) > 0
    before = len(live["frame"])

    feed(cb, range(2, 3), kd=True)  # the worker reports another epoch
    at.run()
    no_exception(at)
    live = at.session_state[f"live_{run_id}"]
    assert live["last"] == 10 and len(live["frame"]) > before
    assert not live["frame"].duplicated(subset=["name", "step"]).any()
    # The same charts in the same places with the same specs: the browser swaps their data in place
    # instead of mounting new charts (which blanks them while they draw).
    charts = at.get("vega_lite_chart")
    assert [c.proto.spec for c in charts] == specs
    assert "epoch 2: test acc" in at.code[0].value  # the log tail
    assert at.metric[0].value == "70.0%"
    assert "No GPU memory curve" in texts(at)

    # The CSV download holds every series the view plots (step and epoch), even while the run trains.
    table = pd.read_csv(io.StringIO(tables.metrics_csv_text(store, run_id)))
    assert list(table.columns) == ["kind", "epoch", "step", "name", "value"]
    assert set(table["name"]) == set(live["frame"]["name"])
    assert len(table) == len(live["frame"])
    steps = table[table["kind"] == "step"]
    assert {"loss/total", "loss/soft", "lr", "throughput"} <= set(steps["name"]) and steps["step"].max() == 10
    assert table[(table["kind"] == "epoch") & (table["name"] == "test/acc")]["value"].round(3).tolist() == [0.6, 0.7]
    assert "Metrics (CSV)" in {b.label for b in at.get("download_button")}


def test_run_view_actions(kd_home):
    store, ids = filled_store()
    at = app("run.py", run=ids["scratch"])
    no_exception(at)
    assert {b.label for b in at.get("download_button")} >= {"Checkpoint (.pt)", "Metrics (CSV)", "Spec (YAML)"}
    at.text_input(key=f"rename_{ids['scratch']}").set_value("baseline").run()
    at.button(key=f"rename_save_{ids['scratch']}").click().run()
    assert store.get(ids["scratch"]).name == "baseline" and at.title[0].value == "baseline"
    at.text_input(key=f"tags_{ids['scratch']}").set_value("paper, small").run()
    at.button(key=f"tags_save_{ids['scratch']}").click().run()
    assert store.get(ids["scratch"]).tags == ["paper", "small"]
    # The new name reaches the spec: its YAML (shown and downloaded) and the spec diff in Compare.
    spec = store.get(ids["scratch"]).spec
    assert spec.name == "baseline"
    assert "name: baseline" in at.code[-1].value
    assert RunSpec.from_yaml(at.code[-1].value).name == "baseline"
    other = store.get(ids["kd"])
    diff = tables.spec_comparison({"a": spec.to_dict(), "b": other.spec.to_dict()})
    assert diff.loc["name", "a"] == "baseline" and diff.loc["name", "b"] == other.name
    assert at.button(key="cancel_run").disabled  # nothing to cancel on a finished run
    at.button(key="delete_confirm").click().run()
    no_exception(at)
    assert ids["scratch"] not in {r.id for r in store.list_runs()}
    assert at.title[0].value == "Runs"  # back on the table
    assert ids["scratch"] not in set(at.dataframe[0].value["id"])


def test_cancel_a_running_run(kd_home):
    store = RunStore()
    run_id = store.submit(SCRATCH, check=False)
    claim(store, run_id)
    at = app("run.py", run=run_id)
    at.button(key="cancel_run").click().run()
    no_exception(at)
    assert store.get(run_id).cancel_requested


def test_duplicate_opens_the_form_filled_in(kd_home):
    store, ids = filled_store()
    at = app("run.py", run=ids["kd"])
    at.button(key="duplicate_run").click().run()
    no_exception(at)
    assert at.title[0].value == "New experiment"
    assert at.radio(key="teacher_source").value == "run"
    assert at.selectbox(key="teacher_run").value == ids["teacher"]
    assert at.radio(key="transfer_kind").value == "partial_labels"
    assert at.text_input(key="name").value == "digits kd"


def test_unknown_run_is_one_sentence(kd_home):
    RunStore()
    at = app("run.py", run="deadbeef")
    no_exception(at)
    assert "there is no run 'deadbeef'" in at.error[0].value


def test_failed_run_shows_its_error(kd_home):
    from test_app_support import WORKER

    from kdcore.jobs import RunStatus

    store = RunStore()
    run_id = store.submit(SCRATCH, check=False)
    cb = claim(store, run_id)
    store.finish_run(run_id, WORKER, cb.attempt, RunStatus.FAILED,
                     error="the loss became NaN at epoch 1, step 3; lower the learning rate or the loss weights")
    at = app("run.py", run=run_id)
    no_exception(at)
    assert "lower the learning rate" in at.error[0].value


def test_an_old_runs_link_opens_the_run_view(kd_home):
    store, ids = filled_store()
    at = app("runs.py", run=ids["kd"])
    no_exception(at)
    assert at.title[0].value == "digits kd"


def test_run_view_shows_a_training_warning_above_the_charts(kd_home):
    store = RunStore()
    run_id = store.submit(SCRATCH, check=False)
    cb = claim(store, run_id)
    feed(cb, range(1, 2))
    at = app("run.py", run=run_id)
    assert not [w for w in at.warning if "stopped learning" in w.value]
    cb.on_warning("The student stopped learning at epoch 1: rerun with a lower learning rate.")
    at.run()
    no_exception(at)
    assert [w.value for w in at.warning if "stopped learning" in w.value] == [
        "The student stopped learning at epoch 1: rerun with a lower learning rate."]
    assert "[WARNING] The student stopped learning" in at.code[0].value  # and in the log


def test_a_tile_shows_the_last_test_accuracy_when_the_newest_epoch_did_not_read_the_test_set(kd_home):
    store = RunStore()
    run_id = store.submit(SCRATCH, check=False)
    cb = claim(store, run_id)
    cb.on_step(1, 5, {"loss/total": 1.0})
    cb.on_epoch(1, 5, {"val/acc": 0.7, "test/acc": 0.68})  # validation improved: the test set was read
    cb.on_step(2, 10, {"loss/total": 0.8})
    cb.on_epoch(2, 10, {"val/acc": 0.65})  # it did not: no test accuracy at epoch 2
    cb.flush()
    frame = store.metrics_frame(run_id)
    assert tables.latest_values(frame, ["test/acc", "val/acc"]) == {"test/acc": (1, 0.68), "val/acc": (2, 0.65)}
    assert tables.latest_values(frame.iloc[0:0], ["test/acc"]) == {}
    at = app("run.py", run=run_id)
    no_exception(at)
    tiles = {m.label: m.value for m in at.metric}
    assert tiles["test accuracy (epoch 1)"] == "68.0%" and tiles["validation accuracy"] == "65.0%"


def test_an_ensemble_member_not_scored_reads_not_scored_not_none(kd_home):
    from app.teacher_check import NOT_SCORED

    store = RunStore()
    run_id = store.submit(SCRATCH, check=False)
    cb = claim(store, run_id)
    cb.on_start({"device": "cpu", "start_epoch": 0, "start_step": 0, "teacher": "ensemble of 2",
                 "teacher_params": 300, "teacher_test_acc": 0.9,
                 "teacher_members": [{"name": "teacher0", "model": "cnn_small", "params": 100, "test_acc": 0.88},
                                     {"name": "teacher1", "model": "mlp_128", "params": 200, "test_acc": None}]})
    feed(cb, range(1, 2))
    at = app("run.py", run=run_id)
    no_exception(at)
    (table,) = [d for d in at.dataframe if "teacher" in d.value.columns]
    assert list(table.value["teacher"]) == ["teacher0", "teacher1", "ensemble"]
    accuracies = list(table.value["test accuracy"])
    assert accuracies[0] == 0.88 and pd.isna(accuracies[1]) and accuracies[2] == 0.9
    assert table.proto.placeholder == NOT_SCORED == "not scored"  # the missing accuracy's cell
