"""Runs grouped by a field or a tag (seeds averaged: the study table and a ± std band), runs whose trainer warned
(marked in the Runs table and Compare, counted in each group, left out of the means on request), bulk actions on
the Runs table's selection (tag, cancel, delete, compare: all through the store's authorisation) and run notes."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from test_app_support import (
    SCRATCH,
    WORKER,
    app,
    claim,
    no_exception,
    no_local_worker,  # noqa: F401 - autouse: no real worker
    texts,
)

from app import bulk, state, studies, tables
from kdcore.errors import KDError
from kdcore.jobs import RunStatus, RunStore
from kdcore.jobs.access import Actor

TEACHER_RUN = {"name": "teacher", "dataset": {"name": "digits"}, "student": "cnn_small", "epochs": 2}


def finished_run(store: RunStore, spec: dict, epochs: list[tuple[float, float]], *, owner: str | None = None,
                 tags: tuple[str, ...] = (), warning: str | None = None) -> str:
    """A completed run whose epochs reported (val acc, test acc) as given, and `warning` as its trainer's."""
    run_id = store.submit(spec, check=False, owner=owner, tags=tags)
    cb = claim(store, run_id)
    for epoch, (val, test) in enumerate(epochs, 1):
        cb.on_step(epoch, epoch * 5, {"loss/total": 1.0 / epoch})
        cb.on_epoch(epoch, epoch * 5, {"val/acc": val, "test/acc": test, "train/loss": 1.0 / epoch})
    if warning:
        cb.on_warning(warning)  # as the trainer's collapse watch reports it
    cb.flush()
    assert store.finish_run(run_id, WORKER, cb.attempt, RunStatus.COMPLETED, final=cb.info.get("final"))
    return run_id


def kd(teacher: str, rho: float, seed: int) -> dict:
    return {"name": f"kd rho {rho} seed {seed}", "dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 2,
            "seed": seed, "teacher": {"source": "run", "run_id": teacher}, "logit": {"rho": rho}}


@pytest.fixture()
def rho_runs(kd_home):
    """ρ = 2 over three seeds (test acc at the best-val epoch 0.80, 0.82, 0.84; the last epoch is worse on val),
    ρ = 8 over two (0.70, 0.74), and a scratch run."""
    store = RunStore()
    teacher = finished_run(store, TEACHER_RUN, [(0.9, 0.9), (0.95, 0.95)], tags=("teacher",))
    ids = {"teacher": teacher, 2.0: [], 8.0: []}
    for seed, test in enumerate((0.80, 0.82, 0.84)):
        ids[2.0].append(finished_run(store, kd(teacher, 2.0, seed), [(0.9, test), (0.85, 0.5)], tags=("sweep",)))
    for seed, test in enumerate((0.70, 0.74)):
        ids[8.0].append(finished_run(store, kd(teacher, 8.0, seed), [(0.6, 0.1), (0.8, test)], tags=("sweep",)))
    ids["scratch"] = finished_run(store, {**SCRATCH, "epochs": 2, "seed": 0}, [(0.5, 0.75), (0.6, 0.78)])
    return store, ids


def test_runs_grouped_by_a_field_average_their_seeds_at_the_best_validation_epoch(rho_runs):
    store, ids = rho_runs
    records = [r for r in store.list_runs() if r.id in ids[2.0] + ids[8.0]]
    assert "logit.rho" in studies.group_keys(records) and "seed" not in studies.group_keys(records)
    table = studies.grouped_table(records, state.run_summaries(store, records), "logit.rho")
    rows = {r.label: r for r in table.rows}
    assert set(rows) == {"ρ = 2", "ρ = 8"}
    assert rows["ρ = 2"].test_acc.mean == pytest.approx(0.82) and rows["ρ = 2"].test_acc.n == 3
    assert rows["ρ = 2"].test_acc.std == pytest.approx(0.02)
    assert rows["ρ = 8"].test_acc.mean == pytest.approx(0.72) and rows["ρ = 8"].test_acc.std == pytest.approx(
        math.sqrt(0.0008))
    assert rows["ρ = 2"].best and not rows["ρ = 8"].best  # chosen on validation (0.9 against 0.8)
    frame = studies.grouped_frame(table, "logit.rho")
    assert list(frame.columns[:3]) == ["ρ", "n", "test acc %"]
    assert frame.set_index("ρ").loc["★ ρ = 2", "test acc %"] == "82.00 ± 2.00"
    assert frame.set_index("ρ").loc["★ ρ = 2", "n"] == "3/3"


def test_grouped_by_method_the_runs_without_a_teacher_are_the_baseline(rho_runs):
    store, ids = rho_runs
    records = [r for r in store.list_runs() if r.id != ids["teacher"]]
    table = studies.grouped_table(records, state.run_summaries(store, records), "method")
    assert table.baseline is not None and table.baseline.label == "labels only (no teacher)"
    kd_row = next(r for r in table.rows if not r.is_baseline)
    assert kd_row.test_acc.n == 5 and kd_row.vs_baseline is not None and kd_row.vs_baseline.n == 1
    # by ρ the scratch run (whose spec still holds a default ρ) is not put with ρ = 4: it had no teacher
    by_rho = studies.grouped_table(records, state.run_summaries(store, records), "logit.rho")
    assert [r.label for r in by_rho.rows] == ["no teacher", "ρ = 2", "ρ = 8"] and by_rho.baseline.label == "no teacher"


def test_grouped_by_tag_a_run_sits_in_each_of_its_tags(rho_runs):
    store, ids = rho_runs
    store.add_tags(ids[8.0][0], ["favourite"])
    records = store.list_runs()
    table = studies.grouped_table(records, state.run_summaries(store, records), studies.TAG)
    counts = {r.label: r.runs for r in table.rows}
    assert counts == {"sweep": 5, "teacher": 1, "favourite": 1, "(no tag)": 1}


def test_grouped_curves_are_a_mean_line_in_a_std_band(rho_runs):
    store, ids = rho_runs
    records = [r for r in store.list_runs() if r.id in ids[2.0]]
    frames = {r.id: state.metrics_frame(store, r) for r in records}
    curves = studies.group_curves(records, frames, "logit.rho", "test/acc")
    assert len(curves) == 6 and set(curves["configuration"]) == {"ρ = 2"}
    fig = studies.band_figure(curves, "test/acc")
    band, line = fig.data
    assert line.name == "ρ = 2 (n=3)"
    assert list(line.y) == pytest.approx([0.82, 0.5])
    assert band.fill == "toself" and max(band.y) == pytest.approx(0.84) and min(band.y) == pytest.approx(0.5)
    assert band.mode == "lines"  # no stray markers at the band's corners
    # a step metric against the step, per group
    steps = studies.group_curves(records, frames, "logit.rho", "loss/total", x="step")
    assert set(steps["step"]) == {5, 10} and studies.band_figure(steps, "loss/total", x="step").data[1].y[0] == 1.0


def test_the_runs_page_groups_what_it_shows(rho_runs):
    store, ids = rho_runs
    at = app("runs.py")
    no_exception(at)
    assert at.selectbox(key="runs_group").value == studies.NO_GROUP
    at.multiselect(key="runs_tags").set_value(["sweep"]).run()
    at.selectbox(key="runs_group").set_value("logit.rho").run()
    no_exception(at)
    grouped = at.dataframe[0].value.set_index("ρ")  # the grouped table comes first
    assert list(grouped.index) == ["★ ρ = 2", "ρ = 8"] and grouped.loc["ρ = 8", "n"] == "2/2"
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t.get("name") for t in fig["data"]] == [None, "ρ = 2 (n=3)", None, "ρ = 8 (n=2)"]
    assert fig["data"][0]["fill"] == "toself"


# ---- runs whose trainer warned ---------------------------------------------------------------------------

COLLAPSE = ("The student stopped learning at epoch 1: it predicts one class for 100% of the validation set "
            "(accuracy 10.0%, chance 10%) while the loss stays finite, so this run's results say nothing about the "
            "method; rerun with a lower learning rate (e.g. optimizer.lr: 0.01) or gradient clipping "
            "(optimizer.clip_grad_norm: 1.0).")


@pytest.fixture()
def warned_runs(rho_runs):
    """rho_runs with a fourth ρ = 2 seed whose student collapsed (val and test 0.10) and said so."""
    store, ids = rho_runs
    ids["dead"] = finished_run(store, kd(ids["teacher"], 2.0, 3), [(0.1, 0.1), (0.1, 0.1)], tags=("sweep",),
                               warning=COLLAPSE)
    ids[2.0].append(ids["dead"])
    return store, ids


def test_a_warned_run_is_marked_in_the_runs_frame_and_compares_labels(warned_runs):
    store, ids = warned_runs
    records = store.list_runs()
    frame = tables.runs_frame(records).set_index("id")
    assert frame.loc[ids["dead"], tables.HEALTH] == "⚠ collapsed at epoch 1"
    assert frame.loc[ids[2.0][0], tables.HEALTH] == ""
    assert tables.filter_runs(frame.reset_index(), text="collapsed")["id"].tolist() == [ids["dead"]]
    chosen = [r for r in records if r.id in (ids["dead"], ids[2.0][0])]
    labels = tables.mark_warned(tables.run_labels(chosen), chosen)
    assert labels[ids["dead"]].startswith("⚠ ") and not labels[ids[2.0][0]].startswith("⚠")
    final = tables.final_metrics_table(chosen, labels)
    assert final.loc[labels[ids["dead"]], tables.HEALTH] == "⚠ collapsed at epoch 1"
    assert tables.HEALTH not in tables.final_metrics_table(chosen[1:], labels).columns  # no warning, no column


def test_a_groups_row_counts_its_warned_runs_and_leaving_them_out_takes_the_mean_of_the_others(warned_runs):
    store, ids = warned_runs
    records = [r for r in store.list_runs() if r.id in ids[2.0] + ids[8.0]]
    summaries = state.run_summaries(store, records)
    kept = studies.grouped_table(records, summaries, "logit.rho")
    rho2 = kept.rows[0]
    assert rho2.label == "ρ = 2" and rho2.warned == 1 and rho2.test_acc.n == 4
    assert rho2.test_acc.mean == pytest.approx((0.80 + 0.82 + 0.84 + 0.10) / 4)
    assert kept.best.label == "ρ = 8"  # the dead seed drags ρ = 2's validation mean down to 0.70
    frame = studies.grouped_frame(kept, "logit.rho").set_index("ρ")
    assert frame.loc["ρ = 2", "n"] == "4/4, 1 ⚠" and frame.loc["★ ρ = 8", "n"] == "2/2"
    assert "1 such run is kept in the means" in kept.health_note()

    left = studies.grouped_table(records, summaries, "logit.rho", exclude_warned=True)
    assert left.rows[0].test_acc.mean == pytest.approx(0.82) and left.rows[0].test_acc.n == 3
    assert left.best.label == "ρ = 2" and left.left_out == {ids["dead"]}
    assert studies.grouped_frame(left, "logit.rho").set_index("ρ").loc["★ ρ = 2", "n"] == "3/4, 1 ⚠ out"

    frames = {r.id: state.metrics_frame(store, r) for r in records}
    curves = studies.group_curves(records, frames, "logit.rho", "test/acc")
    assert studies.band_figure(curves, "test/acc").data[1].name == "ρ = 2 (n=4, 1 ⚠)"
    curves = studies.group_curves(records, frames, "logit.rho", "test/acc", left_out=left.left_out)
    line = studies.band_figure(curves, "test/acc").data[1]
    assert line.name == "ρ = 2 (n=3)" and list(line.y) == pytest.approx([0.82, 0.5])


def test_the_runs_page_marks_a_warned_run_and_its_group_and_can_leave_it_out(warned_runs):
    store, ids = warned_runs
    at = app("runs.py")
    no_exception(at)
    table = next(d for d in at.dataframe if d.key and d.key.startswith("runs_table_")).value.set_index("id")
    assert table.loc[ids["dead"], "health"] == "⚠ collapsed at epoch 1"
    assert list(table.columns[:2]) == ["status", "health"] and table.loc[ids["scratch"], "health"] == ""
    assert "1 of these runs carries a training warning" in at.expander[0].label
    assert COLLAPSE in texts(at)  # the full sentence, under the table

    at.multiselect(key="runs_tags").set_value(["sweep"]).run()
    at.selectbox(key="runs_group").set_value("logit.rho").run()
    no_exception(at)
    assert at.checkbox(key="runs_exclude_warned").value is False  # kept by default, flagged
    grouped = at.dataframe[0].value.set_index("ρ")
    assert grouped.loc["ρ = 2", "n"] == "4/4, 1 ⚠" and grouped.loc["ρ = 2", "test acc %"] == "64.00 ± 36.04"
    assert "1 such run is kept in the means" in texts(at)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert fig["data"][1]["name"] == "ρ = 2 (n=4, 1 ⚠)"

    at.checkbox(key="runs_exclude_warned").check().run()
    no_exception(at)
    grouped = at.dataframe[0].value.set_index("ρ")
    assert grouped.loc["★ ρ = 2", "n"] == "3/4, 1 ⚠ out" and grouped.loc["★ ρ = 2", "test acc %"] == "82.00 ± 2.00"
    assert "1 such run is left out of the means" in texts(at)
    assert json.loads(at.get("plotly_chart")[0].proto.spec)["data"][1]["name"] == "ρ = 2 (n=3)"


def test_home_latest_runs_mark_a_warned_run(warned_runs):
    store, ids = warned_runs
    at = app("home.py")
    no_exception(at)
    latest = next(d.value for d in at.dataframe if "status" in d.value.columns).set_index("id")
    assert latest.loc[ids["dead"], "health"] == "⚠ collapsed at epoch 1"


def test_the_runs_page_has_no_health_column_or_checkbox_without_a_warning(rho_runs):
    at = app("runs.py")
    at.selectbox(key="runs_group").set_value("logit.rho").run()
    no_exception(at)
    table = next(d for d in at.dataframe if d.key and d.key.startswith("runs_table_")).value
    assert "health" not in table.columns and not at.checkbox and not at.expander
    assert "⚠" not in texts(at)


def test_compare_marks_a_warned_run_in_its_legend_and_tables_and_its_group(warned_runs):
    store, ids = warned_runs
    at = app("compare.py", runs=",".join(ids[2.0] + ids[8.0]))
    no_exception(at)
    at.selectbox(key="compare_metric").set_value("test/acc").run()
    legend = [t.get("name") for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]]
    assert [n for n in legend if n and n.startswith("⚠")] == ["⚠ ρ = 2, seed = 3"]
    final = at.dataframe[0].value
    assert final.loc["⚠ ρ = 2, seed = 3", "health"] == "⚠ collapsed at epoch 1"
    assert pd.isna(final.loc["ρ = 2, seed = 0", "health"])  # shown as "—"
    assert "⚠ ρ = 2, seed = 3" in at.dataframe[1].value.columns  # the specs side by side

    at.selectbox(key="compare_group").set_value("logit.rho").run()
    no_exception(at)
    grouped = at.dataframe[0].value.set_index("ρ")
    assert grouped.iloc[0]["n"] == "4/4, 1 ⚠" and "1 such run is kept in the means" in texts(at)
    assert json.loads(at.get("plotly_chart")[0].proto.spec)["data"][1]["name"] == "ρ = 2 (n=4, 1 ⚠)"
    at.checkbox(key="compare_exclude_warned").check().run()
    no_exception(at)
    grouped = at.dataframe[0].value.set_index("ρ")
    assert grouped.iloc[0]["n"] == "3/4, 1 ⚠ out" and grouped.iloc[0]["test acc %"] == "82.00 ± 2.00"
    assert json.loads(at.get("plotly_chart")[0].proto.spec)["data"][1]["name"] == "ρ = 2 (n=3)"


# ---- bulk actions ---------------------------------------------------------------------------------------

def select_rows(at, ids: list[str]) -> None:
    """Tick the table rows of `ids`, as a click in the browser would."""
    table = next(d for d in at.dataframe if d.key and d.key.startswith("runs_table_"))
    shown = list(table.value["id"])
    at.session_state[table.key] = {"selection": {"rows": [shown.index(i) for i in ids], "columns": [],
                                                 "cells": []}}
    at.run()


def test_bulk_tag_cancel_delete_and_compare_from_the_runs_table(rho_runs):
    store, ids = rho_runs
    queued = store.submit({**SCRATCH, "name": "waiting"}, check=False)
    at = app("runs.py")
    pair = ids[8.0]
    select_rows(at, pair)
    no_exception(at)
    assert "2 selected" in texts(at)
    at.text_input(key="runs_bulk_tags").set_value("keep, rho8").run()
    at.button(key="runs_bulk_tag_go").click().run()
    no_exception(at)
    assert [store.get(i).tags for i in pair] == [["keep", "rho8", "sweep"]] * 2
    assert "2 runs tagged with keep, rho8." in texts(at)

    # cancel: the queued run stops, the finished one is left as it was
    select_rows(at, [queued, ids["scratch"]])
    at.button(key="runs_bulk_cancel").click().run()
    assert store.get(queued).status is RunStatus.CANCELLED and store.get(ids["scratch"]).status.value == "completed"
    assert "1 run cancelled; 1 already finished left as they were." in texts(at)

    select_rows(at, [queued, *pair])
    at.button(key="runs_bulk_delete_go").click().run()
    no_exception(at)
    assert not {queued, *pair} & {r.id for r in store.list_runs()}

    select_rows(at, ids[2.0][:2])
    at.button(key="runs_bulk_compare").click().run()
    no_exception(at)
    assert at.title[0].value == "Compare" and at.multiselect(key="compare_runs").value == ids[2.0][:2]


def test_bulk_actions_refuse_the_whole_selection_when_one_run_is_not_yours(kd_home):
    store = RunStore()
    alices = finished_run(store, {**SCRATCH, "name": "alice's"}, [(0.5, 0.5)], owner="alice")
    bobs = finished_run(store, {**SCRATCH, "name": "bob's"}, [(0.5, 0.5)], owner="bob")
    as_alice = store.as_actor(Actor("alice"))
    records = [store.get(alices), store.get(bobs)]
    for action, kwargs in (("delete", {}), ("tag", {"tags": ["x"]})):
        with pytest.raises(KDError, match=rf"^Nothing was changed: run {bobs} is not yours to {action}\. "
                                          r"Only its owner \(bob\) or an admin"):
            bulk.apply(as_alice, action, records, **kwargs)
    assert {r.id: (r.tags, r.status.value) for r in store.list_runs()} == {
        alices: ([], "completed"), bobs: ([], "completed")}
    assert bulk.apply(store.as_actor(Actor("carol", is_admin=True)), "tag", records, tags=["x"]) == \
        "2 runs tagged with x."
    running = store.submit({**SCRATCH, "name": "running"}, check=False, owner="alice")
    claim(store, running)
    with pytest.raises(KDError, match=rf"1 selected run is still running \({running}\): cancel it before deleting"):
        bulk.apply(as_alice, "delete", [store.get(running), store.get(alices)])
    assert {running, alices} <= {r.id for r in store.list_runs()}
    with pytest.raises(KDError, match="nothing to cancel"):
        bulk.apply(as_alice, "cancel", [store.get(alices)])
    with pytest.raises(KDError, match="Type at least one tag"):
        bulk.apply(as_alice, "tag", [store.get(alices)], tags=[" "])


# ---- notes ------------------------------------------------------------------------------------------------

def test_notes_are_written_in_the_run_view_and_shown_in_the_runs_table(rho_runs):
    store, ids = rho_runs
    run_id = ids[2.0][0]
    at = app("run.py", run=run_id)
    no_exception(at)
    assert at.button(key=f"notes_save_{run_id}").disabled  # nothing typed yet
    at.text_area(key=f"notes_{run_id}").set_value("Best of the sweep.\nTry ρ = 3 next.").run()
    at.button(key=f"notes_save_{run_id}").click().run()
    no_exception(at)
    assert store.get(run_id).notes == "Best of the sweep.\nTry ρ = 3 next."
    assert "Try ρ = 3 next." in texts(at)  # shown as Markdown above the editor
    at.query_params.pop("run", None)
    at.switch_page("../pages/runs.py").run()
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[run_id, "notes"] == "Best of the sweep. …"
    at.text_input(key="runs_search").set_value("best of the sweep").run()
    assert list(at.dataframe[0].value["id"]) == [run_id]


def test_notes_of_someone_elses_run_cannot_be_written(rho_runs):
    store, ids = rho_runs
    theirs = store.submit({**SCRATCH, "name": "bob's"}, check=False, owner="bob")
    with pytest.raises(KDError, match=r"Only its owner \(bob\) or an admin may annotate this run"):
        store.as_actor(Actor("alice")).set_notes(theirs, "mine now")
    assert store.get(theirs).notes == ""


def test_compare_groups_the_chosen_runs_into_bands_and_a_table(rho_runs):
    store, ids = rho_runs
    at = app("compare.py", runs=",".join(ids[2.0] + ids[8.0]))
    no_exception(at)
    assert len(json.loads(at.get("plotly_chart")[0].proto.spec)["data"]) == 5  # one line per run
    at.selectbox(key="compare_group").set_value("logit.rho").run()
    no_exception(at)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t.get("name") for t in fig["data"]] == [None, "ρ = 2 (n=3)", None, "ρ = 8 (n=2)"]
    assert "wall time (s)" not in at.radio[0].options  # a group's runs are averaged at the same epoch
    grouped = next(d for d in at.dataframe if "ρ" in d.value.columns).value.set_index("ρ")
    assert grouped.loc["★ ρ = 2", "test acc %"] == "82.00 ± 2.00" and grouped.loc["ρ = 8", "n"] == "2/2"
    at.multiselect(key="compare_more").set_value(["train/loss"]).run()
    no_exception(at)
    panel = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert [t.get("name") for t in panel["data"]][1::2] == ["ρ = 2 (n=3)", "ρ = 8 (n=2)"]


def test_notes_keep_their_line_breaks_when_shown():
    from app import tables

    assert tables.notes_markdown("first\nsecond\n\nnew paragraph") == "first  \nsecond  \n\nnew paragraph  "
    assert tables.notes_preview("a long first line " * 5).endswith("…") and tables.notes_preview("") == ""


def test_one_metric_frames_hold_just_that_series(rho_runs):
    store, ids = rho_runs
    records = [store.get(i) for i in ids[2.0]]
    frames = state.one_metric_frames(store, records, "val/acc")
    full = state.metrics_frame(store, records[0])
    assert set(frames) == set(ids[2.0]) and set(frames[ids[2.0][0]]["name"]) == {"val/acc"}
    assert frames[ids[2.0][0]].reset_index(drop=True).equals(
        full[full["name"] == "val/acc"].reset_index(drop=True))
