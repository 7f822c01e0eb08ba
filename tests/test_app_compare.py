"""Compare page: overlaid metrics, specs side by side with differences, final metrics, sweeps."""
from __future__ import annotations

import json

from test_app_support import (
    TEACHER,
    app,
    complete,
    completed_run,
    filled_store,
    kd_spec,
    no_exception,
    no_local_worker,  # noqa: F401 - autouse: no real worker
    texts,
)

from kdcore.jobs import RunStore


def test_compare_runs_overlays_a_metric_and_highlights_spec_differences(kd_home):
    store, ids = filled_store()
    at = app("compare.py")
    no_exception(at)
    assert set(at.multiselect(key="compare_runs").value) == set(ids.values())  # the latest finished runs
    at.multiselect(key="compare_runs").set_value([ids["scratch"], ids["kd"]]).run()
    at.selectbox(key="compare_metric").set_value("test/acc").run()
    no_exception(at)
    assert at.get("plotly_chart")
    final = at.dataframe[0].value
    assert list(final.index) == ["scratch", "kd"]  # the shared "digits " is dropped
    assert final.loc["kd", "agreement"] > 0.8
    specs = at.dataframe[1].value
    assert "teacher.run_id" in specs.index and "epochs" not in specs.index  # only differences by default
    at.toggle(key="compare_only_diff").set_value(False).run()
    assert "epochs" in at.dataframe[1].value.index


    # wall-time x axis (each run from 0 s), a log y axis and a grid of more metrics
    at.radio(key="compare_x_test/acc").set_value("wall time (s)").run()
    at.toggle(key="compare_log_y").set_value(True).run()
    at.multiselect(key="compare_more").set_value(["loss/total", "lr"]).run()
    no_exception(at)
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # the overlay and two panels
    overlay = json.loads(charts[0].proto.spec)
    assert overlay["layout"]["yaxis"]["type"] == "log" and overlay["layout"]["xaxis"]["title"]["text"] == "wall time (s)"


def test_compare_a_sweep_plots_the_swept_value(kd_home):
    store = RunStore()
    teacher = completed_run(store, TEACHER)
    ids = store.submit_sweep(kd_spec(teacher), "logit.rho", [1, 4, 16], check=False)
    for run_id in ids:
        complete(store, run_id, kd=True)
    at = app("compare.py")
    at.segmented_control(key="compare_mode").set_value("A sweep").run()
    no_exception(at)
    assert "Sweep over logit.rho" in texts(at)
    sweep = at.dataframe[0].value
    assert sweep["value"].tolist() == [1.0, 4.0, 16.0]
    assert len(at.get("plotly_chart")) == 2


def test_compare_with_nothing_to_compare(kd_home):
    RunStore()
    at = app("compare.py")
    no_exception(at)
    assert "Nothing to compare yet" in at.info[0].value
