"""The run view's live charts: their spec does not depend on the data (so a refresh swaps data in place) and
their slots keep their order from the first refresh on."""
from __future__ import annotations

import pandas as pd

from app import live_chart, tables


def frame(steps: range) -> pd.DataFrame:
    rows = [{"step": s, "epoch": 1 + s // 10, "name": n, "value": v, "wall_time": float(s)}
            for s in steps for n, v in (("loss/total", 1 / s), ("loss/hard", 0.5 / s), ("lr", 0.003))]
    return pd.DataFrame(rows)


def test_spec_is_the_same_for_every_refresh_and_data_holds_every_point():
    specs, sizes = [], []
    for last in (5, 40, 400):
        data = live_chart.curves_data(frame(range(1, last)), ["loss/total", "loss/hard"], x="step", smoothing=0.6)
        specs.append(live_chart.curves_spec(title="Loss terms", x="step"))
        sizes.append(len(data))
        assert set(data["series"]) == {"total loss", "hard-label loss (α·CE)"}
        assert set(data["layer"]) == {"raw", "line"}  # smoothed line over the faint raw curve
    assert specs[0] == specs[1] == specs[2]
    assert sizes == [2 * 2 * 4, 2 * 2 * 39, 2 * 2 * 399]


def test_without_smoothing_only_the_line_and_epochs_get_whole_ticks():
    data = live_chart.curves_data(frame(range(1, 30)), ["lr"], x="step", smoothing=0.0)
    assert set(data["layer"]) == {"line"} and len(data) == 29
    spec = live_chart.curves_spec(title="Accuracy", x="epoch", percent=True)
    line = spec["layer"][1]
    assert line["encoding"]["x"]["axis"]["format"] == "d" and line["encoding"]["y"]["axis"]["format"] == ".0%"
    assert live_chart.curves_data(None, ["lr"], x="step", smoothing=0.5).empty


def test_chart_slots_keep_their_places_as_metrics_arrive():
    before = tables.chart_slots(["loss/total", "lr", "throughput"], has_teacher=True, on_gpu=False)
    after = tables.chart_slots(["loss/total", "lr", "throughput", "val/acc", "fidelity/agreement",
                                "fidelity/kl_rho1"], has_teacher=True, on_gpu=False)
    assert [t for t, _ in before] == [t for t, _ in after] == [
        "Loss terms", "Accuracy", "Teacher–student agreement", "KL to the teacher", "Learning rate", "Throughput"]
    assert dict(before)["Accuracy"] == [] and dict(after)["Accuracy"] == ["val/acc"]
    assert live_chart.waiting_note("Accuracy", "running") == "appears after the first epoch"
    assert live_chart.waiting_note("Accuracy", "completed") == "not logged by this run"
