"""The dashboard's figures and soft-label arithmetic, without Streamlit: data frames in, plotly figures out."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from app import figures, softlabels


def long_frame(names=("loss/total", "loss/soft"), steps=10) -> pd.DataFrame:
    rows = [{"step": s, "epoch": 1 + s // 5, "name": n, "value": 1.0 / s + i, "wall_time": float(s)}
            for i, n in enumerate(names) for s in range(1, steps + 1)]
    return pd.DataFrame(rows)


def annotation_text(fig: go.Figure) -> str:
    return " ".join(a.text for a in fig.layout.annotations)


# ---- curves ---------------------------------------------------------------------------------------
def test_curves_figure_draws_one_line_per_metric_with_readable_names():
    fig = figures.curves_figure(long_frame(), ["loss/total", "loss/soft"], title="Loss terms")
    assert [t.name for t in fig.data] == ["total loss", "soft-label loss (β·ρ²·D)"]
    assert list(fig.data[0].x) == list(range(1, 11))
    assert fig.layout.title.text == "Loss terms"


def test_curves_figure_smoothing_keeps_a_faint_raw_line_behind():
    frame = long_frame(("loss/total",), steps=20)
    fig = figures.curves_figure(frame, ["loss/total"], smoothing=0.9)
    raw, smoothed = fig.data
    assert raw.showlegend is False and raw.opacity < 0.5
    assert np.allclose(raw.y, frame["value"])
    assert not np.allclose(smoothed.y, frame["value"])  # smoothed differs from raw


def test_curves_figure_without_points_says_so_instead_of_empty_axes():
    fig = figures.curves_figure(long_frame().iloc[0:0], ["loss/total"], title="Loss terms")
    assert not fig.data
    assert "No points yet" in annotation_text(fig)


def test_curves_figure_percent_axis_for_accuracies():
    fig = figures.curves_figure(long_frame(("test/acc",)), ["test/acc"], x="epoch", percent=True)
    assert fig.layout.yaxis.tickformat == ".0%"


def test_curves_figure_from_zero_for_rates():
    fig = figures.curves_figure(long_frame(("lr",)), ["lr"], from_zero=True)
    assert fig.layout.yaxis.rangemode == "tozero"
    assert fig.layout.showlegend is False and fig.layout.yaxis.title.text == "learning rate"  # one line: no legend


def test_epoch_axis_has_whole_ticks():
    fig = figures.curves_figure(long_frame(("test/acc",)), ["test/acc"], x="epoch")
    assert fig.layout.xaxis.dtick == 1


def test_smooth_is_an_unbiased_moving_average():
    assert np.allclose(figures.smooth([3.0, 3.0, 3.0], 0.9), [3.0, 3.0, 3.0])  # no pull towards 0
    assert np.allclose(figures.smooth([1.0, 2.0], 0.0), [1.0, 2.0])
    out = figures.smooth([0.0, 10.0], 0.5)
    assert out[0] == 0.0 and 0 < out[1] < 10


# ---- compare and sweep ----------------------------------------------------------------------------
def test_overlay_figure_one_trace_per_run():
    a = long_frame(("test/acc",)).assign(run="scratch")
    b = long_frame(("test/acc",)).assign(run="kd", value=lambda f: f["value"] + 0.1)
    fig = figures.overlay_figure(pd.concat([a, b]), "test/acc", x="epoch")
    assert [t.name for t in fig.data] == ["scratch", "kd"]
    assert fig.layout.yaxis.tickformat == ".0%"


def test_overlay_figure_for_a_metric_nobody_logged():
    fig = figures.overlay_figure(long_frame().assign(run="a"), "gpu_mem_mb")
    assert "No run has logged" in annotation_text(fig)


def test_sweep_figure_orders_values_and_uses_a_log_axis_for_wide_ranges():
    frame = pd.DataFrame({"value": [16, 1, 4], "test_acc": [0.8, 0.7, 0.9], "agreement": [0.85, 0.75, 0.95]})
    fig = figures.sweep_figure(frame, "logit.rho")
    acc = next(t for t in fig.data if t.name == "test accuracy")
    assert list(acc.x) == [1, 4, 16] and list(acc.y) == [0.7, 0.9, 0.8]
    assert fig.layout.xaxis.type == "log"
    assert fig.layout.xaxis.title.text == "logit.rho"


def test_sweep_figure_with_names_is_categorical():
    frame = pd.DataFrame({"value": ["mlp_64", "cnn_small"], "test_acc": [0.8, 0.9], "agreement": [np.nan, np.nan]})
    fig = figures.sweep_figure(frame, "student")
    assert [t.name for t in fig.data] == ["test accuracy"]  # no empty agreement line
    assert list(fig.data[0].x) == ["cnn_small", "mlp_64"]


# ---- soft labels ----------------------------------------------------------------------------------
def test_soften_is_a_tempered_softmax():
    z = np.array([[2.0, 1.0, 0.0]])
    p1, p4 = softlabels.soften(z, 1.0), softlabels.soften(z, 4.0)
    assert np.allclose(p1.sum(), 1) and np.allclose(p4.sum(), 1)
    assert np.allclose(p1, np.exp(z) / np.exp(z).sum())
    assert p4[0, 2] > p1[0, 2]  # higher ρ gives the wrong classes more mass
    assert np.isfinite(softlabels.soften(np.array([[1000.0, 0.0]]), 0.5)).all()


def test_entropy_and_kl_known_values():
    assert softlabels.entropy(np.array([[0.5, 0.5]]))[0] == pytest.approx(1.0)
    assert softlabels.entropy(np.array([[1.0, 0.0]]))[0] == pytest.approx(0.0)
    t = np.array([[0.0, 0.0]])  # σ = (0.5, 0.5)
    assert softlabels.kl_from_logits(t, t, 1.0)[0] == pytest.approx(0.0)
    s = np.array([[np.log(9.0), 0.0]])  # σ = (0.9, 0.1)
    assert softlabels.kl_from_logits(t, s, 1.0)[0] == pytest.approx(0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1))
    # a student 60 logits sure of the wrong class: the true KL (~60 nats) is not clipped to log(1e12) ≈ 27.6
    assert softlabels.kl_from_logits(np.array([[60.0, 0.0]]), np.array([[0.0, 60.0]]), 1.0)[0] == pytest.approx(60.0)


def test_entropy_curve_rises_with_rho_towards_uniform():
    rng = np.random.default_rng(0)
    t = 6 * np.eye(10)[rng.integers(0, 10, 30)] + rng.normal(size=(30, 10))
    curve = softlabels.entropy_curve(t, None, np.array([1.0, 4.0, 64.0]))
    assert list(curve["teacher"]) == sorted(curve["teacher"])
    assert curve["teacher"].iloc[-1] == pytest.approx(np.log2(10), abs=0.05)
    assert curve["student"].isna().all()
    fig = figures.entropy_figure(curve, rho=4.0)
    assert [tr.name for tr in fig.data] == ["teacher", "chosen ρ = 4"] and fig.layout.xaxis.type == "log"
    assert list(fig.data[1].x) == [4.0, 4.0]  # in data units: the axis range stays where the curves are


def test_class_matrix_rows_are_average_soft_labels():
    logits = np.array([[5.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    labels = np.array([0, 0, 1])
    m = softlabels.class_matrix(logits, labels, ["a", "b"], rho=1.0)
    assert np.allclose(m.to_numpy().sum(axis=1), 1.0)
    assert m.loc["a", "a"] == pytest.approx(softlabels.soften(logits[:2], 1.0)[:, 0].mean())
    fig = figures.class_matrix_figure(m, "Teacher")
    assert fig.data[0].type == "heatmap" and list(fig.data[0].x) == ["a", "b"]
    assert np.allclose(np.asarray(fig.data[0].customdata), m.to_numpy())  # hover shows probabilities


def test_class_matrix_with_a_missing_class_leaves_its_row_blank():
    m = softlabels.class_matrix(np.zeros((2, 3)), np.array([0, 0]), ["a", "b", "c"], rho=2.0)
    assert m.loc["b"].isna().all() and not m.loc["a"].isna().any()


def test_per_class_kl_is_zero_where_student_equals_teacher():
    t = np.array([[4.0, 0.0], [0.0, 4.0]])
    s = np.array([[4.0, 0.0], [4.0, 0.0]])
    kl = softlabels.per_class_kl(t, s, np.array([0, 1]), ["0", "1"], rho=2.0)
    assert kl.loc[0, "kl"] == pytest.approx(0.0) and kl.loc[1, "kl"] > 0.5
    fig = figures.per_class_kl_figure(kl, 2.0)
    assert list(fig.data[0].y) == list(kl["kl"])


def test_distribution_figure_groups_teacher_and_student_bars():
    frame = softlabels.distribution_frame(["0", "1", "2"], np.array([3.0, 1.0, 0.0]), np.array([1.0, 1.0, 1.0]), 2.0)
    fig = figures.distribution_figure(frame, 2.0)
    assert [t.name for t in fig.data] == ["teacher", "student"]
    assert fig.layout.barmode == "group" and np.allclose(fig.data[1].y, 1 / 3)
    only_student = softlabels.distribution_frame(["0", "1"], None, np.array([1.0, 0.0]), 1.0)
    assert [t.name for t in figures.distribution_figure(only_student, 1.0).data] == ["student"]


def test_preview_shows_one_sample_per_class_first():
    labels = np.array([1, 1, 0, 2])
    logits = np.eye(3)[labels] * 5
    frame = softlabels.preview_frame(logits, labels, ["a", "b", "c"], rho=4.0, samples=3)
    assert list(dict.fromkeys(frame["sample"])) == ["#2 (true a)", "#0 (true b)", "#3 (true c)"]
    fig = figures.preview_figure(frame, 4.0)
    assert fig.data[0].type == "heatmap" and np.asarray(fig.data[0].z).shape == (3, 3)


def test_probe_image_is_enlarged_with_sharp_pixels():
    images = np.arange(2 * 1 * 8 * 8, dtype=np.uint8).reshape(2, 1, 8, 8)
    img = softlabels.probe_image(images, 1, size=160)
    assert img.shape == (160, 160) and img[0, 0] == images[1, 0, 0, 0] and img[19, 19] == images[1, 0, 0, 0]
    rgb = softlabels.probe_image(np.zeros((1, 3, 32, 32), dtype=np.uint8), 0, size=64)
    assert rgb.shape == (64, 64, 3)


# ---- home and models --------------------------------------------------------------------------------
def test_accuracy_bars_label_each_bar_with_its_percentage():
    frame = pd.DataFrame({"run": ["Teacher", "Scratch", "KD"], "accuracy": [0.99, 0.42, 0.9]})
    fig = figures.accuracy_bars(frame)
    assert list(fig.data[0].text) == ["99.0%", "42.0%", "90.0%"]
    assert fig.layout.yaxis.range[1] > 1.0  # room above the tallest bar for its label


def test_zoo_figure_is_log_log_with_one_trace_per_family():
    frame = pd.DataFrame({"model": ["a", "b", "c"], "family": ["mlp", "mlp", "cnn"],
                          "params": [1e3, 1e5, 1e4], "flops": [2e3, 2e5, 1e6]})
    fig = figures.zoo_figure(frame)
    assert fig.layout.xaxis.dtick == 1 and fig.layout.yaxis.dtick == 1  # powers of ten, no bare "2" and "5"
    assert sorted(t.name for t in fig.data) == ["cnn", "mlp"]
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert "No model" in annotation_text(figures.zoo_figure(frame.iloc[0:0]))


def test_metric_labels_cover_hint_terms():
    # numbered from 1, as the form numbers its pairs; never the raw name in a legend
    assert figures.metric_label("loss/hint/0") == "hint loss, pair 1"
    assert figures.metric_label("loss/hint0_l2") == "hint loss, pair 1 (l2)"
    assert figures.metric_label("loss/hint1_smooth_l1") == "hint loss, pair 2 (smooth l1)"
    assert figures.metric_label("loss/crd") == "crd loss"
    assert figures.metric_label("something/new") == "something/new"


def test_log_ticks_are_written_in_full():
    values, text = figures.log_ticks(0.5, 50)
    assert text == ["0.5", "1", "2", "5", "10", "20", "50"] and values[0] == pytest.approx(0.5)
    fig = figures.entropy_figure(pd.DataFrame({"rho": [0.5, 1, 4, 20], "teacher": [0.1, 0.5, 1.5, 2.2],
                                               "student": [0.2, 0.6, 1.6, 2.3]}), 4.0)
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.ticktext) == ["0.5", "1", "2", "5", "10", "20"]


def test_fraction_axes_stay_honest_for_one_point():
    one = pd.DataFrame({"step": [36], "epoch": [1], "name": ["fidelity/agreement"], "value": [0.97]})
    fig = figures.curves_figure(one, ["fidelity/agreement"], x="epoch", percent=True)
    low, high = fig.layout.yaxis.range
    assert 0.9 <= low < 0.97 < high <= 1.01  # not -50% to 100%
    over = figures.overlay_figure(one.assign(run="a"), "fidelity/agreement", x="epoch")
    assert over.layout.yaxis.range[0] >= 0 and over.layout.modebar.orientation == "v"
    assert figures.fraction_range([0.2, 0.9]) == pytest.approx([0.13, 0.97])
