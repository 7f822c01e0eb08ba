"""app/lab.py figures and tables, and kdcore.lab.experiments spec builders and result frames (no Streamlit)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from app import lab
from kdcore.errors import KDError
from kdcore.lab import assets, bias, gradients, softlabels
from kdcore.lab import experiments as ex

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture(scope="module")
def digits():
    return assets.load_bundle("digits")


def test_distribution_figure_marks_the_true_class(digits):
    frame = softlabels.distribution_frame(digits.teacher_logits[0], digits.class_names, 4.0)
    true_name = digits.class_names[digits.labels[0]]
    fig = lab.distribution_figure(frame, 4.0, true_name)
    bar = fig.data[0]
    assert list(bar.x) == digits.class_names
    assert sum(c == lab.TRUE_COLOR for c in bar.marker.color) == 1
    assert bar.marker.color[digits.labels[0]] == lab.TRUE_COLOR
    assert "ρ = 4" in fig.layout.title.text


def test_similar_classes_sentence_names_classes():
    sim = pd.DataFrame({"class": ["T-shirt/top", "Pullover"], "prob": [0.21, 0.004]})
    text = lab.similar_classes_sentence(sim, "Shirt", "Shirt", 4.0)
    assert "**T-shirt/top** (21%)" in text and "**Pullover** (0.4%)" in text and "ρ = 4" in text
    tiny = pd.DataFrame({"class": ["Coat", "Dress"], "prob": [5.1e-4, 1e-9]})
    assert "(0.051%)" in lab.similar_classes_sentence(tiny, "Shirt", "Shirt", 1.0)
    assert "(< 0.001%)" in lab.similar_classes_sentence(tiny, "Shirt", "Shirt", 1.0)
    assert lab.with_article("Ankle boot") == "an Ankle boot" and lab.with_article("Shirt") == "a Shirt"
    assert [lab.with_article(d) for d in ("8", "7", "1", "11", "18")] == ["an 8", "a 7", "a 1", "an 11", "an 18"]
    wrong = lab.similar_classes_sentence(sim, "Coat", "Shirt", 4.0)
    assert "true class is **Shirt**" in wrong


def test_entropy_figures_show_sample_average_ceiling_and_rho(digits):
    sample = softlabels.entropy_curve(digits.teacher_logits[0])
    test = softlabels.entropy_curve(digits.teacher_logits)
    fig = lab.entropy_figure(sample, test, 10, 8.0, value="effective_classes")
    assert [t.name for t in fig.data] == ["test-set average", "this sample"]
    assert fig.layout.xaxis.type == "log"
    assert any(s.y0 == 10 for s in fig.layout.shapes) and any(s.x0 == 8.0 for s in fig.layout.shapes)
    # on a log axis an annotation sits at log10(x), a shape at x
    assert any(a.text == "ρ = 8" and a.x == pytest.approx(np.log10(8)) for a in fig.layout.annotations)
    ent = lab.entropy_figure(sample, test, 10, 8.0, value="entropy")
    assert any(s.y0 == pytest.approx(np.log(10)) for s in ent.layout.shapes)
    assert 1 <= lab.effective_classes_at(test, 8.0) <= 10


def _luminance(hex_colour: str) -> float:
    r, g, b = (int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_similarity_colour_scale_starts_near_the_pages_background(digits):
    m = softlabels.similarity_matrix(digits.teacher_logits, digits.labels, digits.class_names, 4.0)
    light = lab.similarity_figure(m, 4.0).data[0].colorscale
    dark = lab.similarity_figure(m, 4.0, dark=True).data[0].colorscale
    assert _luminance(light[0][1]) > 0.9 and _luminance(light[-1][1]) < 0.3  # white page: nothing is white
    assert _luminance(dark[0][1]) < 0.2 and _luminance(dark[-1][1]) > 0.8  # dark page: nothing is near-black


def test_similarity_figure_blanks_the_diagonal(digits):
    m = softlabels.similarity_matrix(digits.teacher_logits, digits.labels, digits.class_names, 4.0)
    fig = lab.similarity_figure(m, 4.0)
    z = np.array(fig.data[0].z, dtype=float)
    assert np.isnan(np.diag(z)).all() and np.isfinite(z[0, 1])
    assert fig.data[0].zmax == pytest.approx(np.nanmax(z))
    # the colour bar's ticks differ from each other (a top of a few % reads 0.5%, 1.0%, ..., not 1%, 1%, 2%)
    assert fig.data[0].colorbar.tickformat == (".0%" if np.nanmax(z) >= 0.1 else ".1%" if np.nanmax(z) >= 0.01 else ".2%")
    labels = [t for row in fig.data[0].text for t in row if t]
    assert labels and all(t.endswith("%") for t in labels)  # every cell label a percentage
    diagonal = np.array(fig.data[1].z, dtype=float)  # the blank diagonal drawn grey, not left to the background
    assert np.isfinite(np.diag(diagonal)).all() and np.isnan(diagonal[0, 1]) and fig.data[1].showscale is False
    assert fig.layout.modebar.orientation == "v"  # the toolbar clear of the title
    pairs = softlabels.most_similar_pairs(m, 3)
    text = lab.pairs_markdown(pairs)
    assert text.count("\n") == 2 and text.startswith(f"1. **{pairs.class_a[0]} ↔ {pairs.class_b[0]}**")


def test_similarity_cell_labels_fit_a_narrow_cell(digits):
    """The cell labels are short and their font is left to plotly, which sizes it to the narrowest cell (a
    fixed size overflowed the cells of an 800 px window)."""
    for rho in (1.0, 8.0, 50.0):
        m = softlabels.similarity_matrix(digits.teacher_logits, digits.labels, digits.class_names, rho)
        heat = lab.similarity_figure(m, rho).data[0]
        assert heat.textfont.size is None, "a fixed font size does not shrink with the cells"
        labels = [t for row in heat.text for t in row if t]
        assert labels and max(len(t) for t in labels) <= lab.CELL_LABEL_CHARS
    assert [lab._short_pct(p) for p in (0.163, 0.0431, 0.0099, 0.004, 0.0004, 1.0)] == [
        "16%", "4%", "1%", "0.4%", "", "100%"]


def test_hesitation_sentence_names_the_rho_it_describes(digits):
    z = digits.teacher_logits[0]
    curve = softlabels.entropy_curve(digits.teacher_logits)

    def classes(rho: float) -> str:
        return f"**{float(softlabels.effective_classes(softlabels.soften(z, rho))):.1f}**"

    one = lab.hesitation_sentence(z, curve, (4.0,))
    assert one.startswith(f"At ρ = 4 the teacher hesitates between about {classes(4.0)} classes")
    two = lab.hesitation_sentence(z, curve, (1.0, 16.0))
    assert f"{classes(1.0)} classes for this image at ρ = 1 (left) and {classes(16.0)} at ρ = 16 (right)" in two
    assert lab.hesitation_sentence(z, curve, (4.0, 4.0)) == one  # both charts at one ρ: one sentence
    played = lab.hesitation_sentence(z, curve, (0.5, 50.0), played=True)
    assert "from 0.5 to 50" in played and f"about {classes(0.5)} classes for this image to {classes(50.0)}" in played


def test_presentation_mode_lifts_the_sliders_value_off_the_track():
    """In presentation mode a slider's value (ρ) is large, bold, in the text's colour and placed above the thumb
    by the root font size, not Streamlit's pixel offset (which left it on the track at 24 px)."""
    import re

    css = re.sub(r"/\*.*?\*/", "", lab.PRESENTATION_CSS.split("<style>")[1], flags=re.S)
    rules = dict(re.findall(r"([^{}]+)\{([^{}]*)\}", css))
    value = next((body for sel, body in rules.items() if sel.strip() == '[data-testid="stSliderThumbValue"]'), "")
    text = next((body for sel, body in rules.items() if "stSliderThumbValue" in sel and sel.strip().endswith("p")), "")
    assert "top: auto" in value and re.search(r"bottom: calc\(100% \+ [\d.]+rem\)", value)
    assert "color: inherit" in value  # the page's text colour, not the thin primary red
    assert "font-weight: 700" in text and float(re.search(r"font-size: ([\d.]+)rem", text)[1]) >= 1.5


def test_gradient_figure_is_log_log_with_three_lines(digits):
    curve = gradients.soft_gradient_curve(digits.teacher_logits, digits.student_logits, digits.labels, [1, 4, 16])
    fig = lab.gradient_figure(curve, 4.0)
    assert [t.name for t in fig.data] == ["soft term × ρ² (Hinton)", "soft term without ρ²", "hard-label term"]
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"


def test_image_for_display_enlarges_by_whole_pixels():
    img = np.arange(64, dtype=np.uint8).reshape(1, 8, 8)
    big = lab.image_for_display(img, 224)
    assert big.shape == (224, 224) and big[0, 27] == 0 and big[0, 28] == 1


def test_experiment_figures_handle_empty_and_finished_frames():
    empty = ex.rho_sweep_frame([])
    assert lab.sweep_figure(empty).layout.annotations[0].text == "No finished run yet"
    frame = pd.DataFrame({"rho": [1.0, 4.0], "status": ["completed"] * 2, "epoch": [5, 5], "epochs": [5, 5],
                          "test_acc": [0.85, 0.86], "agreement": [0.9, 0.92], "run_id": ["a", "b"]})
    fig = lab.sweep_figure(frame, 0.9)
    assert list(fig.data[0].y) == [0.85, 0.86] and fig.layout.xaxis.type == "log"
    alpha = pd.DataFrame({"setting": [s for s, _, _ in ex.ALPHA_SETTINGS], "test_acc": [0.8, 0.82, np.nan],
                          "agreement": [0.85, 0.9, np.nan]})
    assert list(lab.alpha_figure(alpha).data[0].x) == [ex.ALPHA_SETTINGS[0][0], ex.ALPHA_SETTINGS[1][0]]
    assert list(lab.alpha_figure(alpha).layout.yaxis.range)[0] == 0  # bars from 0: a small gap looks small


def test_omitted_figure_and_summary():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 600)
    z = rng.normal(size=(600, 10))
    z[np.arange(600), y] += 4
    z[:, 1] -= 5
    fit = bias.fit_class_bias(z, y, 1)
    table = bias.correction_table(z, y, fit, NAMES)
    fig = lab.omitted_figure(table, "Trouser")
    assert [t.name for t in fig.data] == ["before the correction", "after the correction"] and len(fig.data[0].x) == 10
    summary = lab.omitted_summary(table, 1)
    assert summary["class"].iloc[0] == "Trouser" and summary["class"].iloc[-1] == "all classes" and len(summary) == 5


# ---- experiment specs ------------------------------------------------------------------------------------
def test_omitted_class_spec_leaves_out_the_class_and_uses_the_shipped_teacher():
    spec = ex.omitted_class_spec("fashion-mnist", 1)
    assert spec.transfer.kind == "omit_classes" and spec.transfer.omit_classes == [1]
    assert spec.teacher.source == "checkpoint" and spec.teacher.checkpoint == str(assets.teacher_path("fashion-mnist"))
    assert spec.dataset.augment is False and "Trouser" in spec.name
    assert ex.omitted_class_of(spec) == 1
    assert ex.omitted_class_spec("digits").transfer.omit_classes == [3]
    with pytest.raises(KDError):
        ex.omitted_class_spec("digits", 10)
    with pytest.raises(KDError):
        ex.omitted_class_spec("cifar10", 1)
    with pytest.raises(KDError):
        ex.omitted_class_of(ex.base_spec("digits"))


def test_sweep_and_alpha_specs():
    specs = ex.rho_sweep_specs("digits")
    assert [s.logit.rho for s in specs] == [1, 2, 4, 8, 16, 32]
    assert len({s.name for s in specs}) == 6
    alphas = ex.alpha_specs("digits")
    assert [(s.logit.alpha, s.logit.beta) for s in alphas] == [(a, b) for _, a, b in ex.ALPHA_SETTINGS]
    assert ex.experiment_tag("rho-sweep", "Fashion_MNIST") == "lab:rho-sweep:fashion-mnist"
    with pytest.raises(KDError):
        ex.experiment_tag("nope", "digits")


def record(run_id, rho=4.0, alpha=0.1, beta=0.9, sweep="s1", minutes=0, status="completed", acc=0.9, val=None):
    spec = ex.base_spec("digits", rho=rho, alpha=alpha, beta=beta)
    final = {"test/acc": acc, "val/acc": acc if val is None else val, "fidelity/agreement": acc + 0.02}
    return SimpleNamespace(id=run_id, spec=spec, sweep_id=sweep, status=SimpleNamespace(value=status),
                           created_at=datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=minutes),
                           final=final if status == "completed" else {}, epoch=3)


def test_result_frames_read_the_newest_group_only():
    old = [record("o1", rho=1, sweep="old"), record("o2", rho=2, sweep="old")]
    new = [record("n3", rho=8, sweep="new", minutes=5), record("n1", rho=1, sweep="new", minutes=5, status="running")]
    frame = ex.rho_sweep_frame(old + new)
    assert list(frame["run_id"]) == ["n1", "n3"] and list(frame["rho"]) == [1.0, 8.0]
    assert np.isnan(frame["test_acc"].iloc[0]) and frame["test_acc"].iloc[1] == 0.9
    alpha = ex.alpha_frame([record("b", 0.1, 0.1, 0.9), record("s", 4, 0.0, 1.0), record("h", 4, 1.0, 0.0)])
    assert list(alpha["run_id"]) == ["h", "s", "b"]
    single = ex.latest_group([record("x", sweep=None, minutes=9), *old])
    assert [r.id for r in single] == ["x"]


def test_every_figure_is_valid_plotly(digits):
    """The figures are built with validation off for speed; here plotly validates each one."""
    import plotly.graph_objects as go

    sample = softlabels.entropy_curve(digits.teacher_logits[0])
    matrix = softlabels.similarity_matrix(digits.teacher_logits, digits.labels, digits.class_names, 4.0)
    grad = gradients.soft_gradient_curve(digits.teacher_logits, digits.student_logits, digits.labels, [1, 10])
    sweep = pd.DataFrame({"rho": [1.0, 4.0], "test_acc": [0.85, 0.86], "agreement": [0.9, 0.92]})
    alpha = pd.DataFrame({"setting": ["a", "b"], "test_acc": [0.8, 0.82], "agreement": [0.85, 0.9]})
    fit = bias.fit_class_bias(digits.student_logits, digits.labels, 3)
    table = bias.correction_table(digits.student_logits, digits.labels, fit, digits.class_names)
    figures = [
        lab.distribution_figure(softlabels.distribution_frame(digits.teacher_logits[0], digits.class_names, 2.0),
                                2.0, "0"),
        lab.entropy_figure(sample, sample, 10, 2.0),
        lab.entropy_figure(sample, sample, 10, None, value="effective_classes"),
        lab.similarity_figure(matrix, 2.0), lab.gradient_figure(grad, 2.0), lab.sweep_figure(sweep, 0.9),
        lab.alpha_figure(alpha, 0.9), lab.omitted_figure(table, "3"), lab.sweep_figure(sweep.iloc[:0]),
    ]
    for fig in figures:
        go.Figure(fig.to_dict())  # raises on any unknown or invalid property
        assert fig.layout.template.to_plotly_json() == {}  # Streamlit's theme fills it in the browser


def seeded(run_id, rho, seed, acc, alpha=0.1, beta=0.9, val=None):
    r = record(run_id, rho=rho, alpha=alpha, beta=beta, acc=acc, val=val)
    return SimpleNamespace(**{**vars(r), "spec": r.spec.model_copy(update={"seed": seed})})


def test_sweep_over_seeds_gives_mean_std_and_says_what_the_data_shows():
    noisy = [seeded(f"a{s}", 1, s, acc) for s, acc in enumerate((0.80, 0.82, 0.81))] + \
            [seeded(f"b{s}", 4, s, acc) for s, acc in enumerate((0.81, 0.80, 0.83))]
    frame = ex.rho_sweep_frame(noisy)
    assert list(frame["n"]) == [3, 3] and frame["test_acc"].iloc[0] == pytest.approx(0.81)
    assert frame["test_std"].iloc[0] == pytest.approx(np.std([0.80, 0.82, 0.81], ddof=1))
    fig = lab.sweep_figure(frame, 0.9)
    assert list(fig.data[0].error_y.array) == pytest.approx(list(frame["test_std"]))
    assert "mean ± std over 3 seeds" in fig.layout.title.text
    assert "within the seed noise" in ex.rho_verdict(noisy)
    clear = [seeded(f"a{s}", 1, s, acc) for s, acc in enumerate((0.80, 0.82, 0.81))] + \
            [seeded(f"b{s}", 4, s, acc + 0.05) for s, acc in enumerate((0.80, 0.82, 0.815))]
    assert "outside the seed noise, a ρ above 1 helps" in ex.rho_verdict(clear)
    assert ex.rho_verdict(noisy[:1]) is None
    # the ρ compared with ρ = 1 is chosen on validation, never on the test set it is then scored on
    lucky = clear + [seeded(f"c{s}", 8, s, acc + 0.08, val=0.70) for s, acc in enumerate((0.80, 0.82, 0.815))]
    assert ex.rho_verdict(lucky).startswith("ρ = 4, the best ρ above 1 on validation,")
    blind = [seeded(r.id, float(r.spec.logit.rho), r.spec.seed, r.final["test/acc"], val=float("nan")) for r in clear]
    assert ex.rho_verdict(blind) is None  # no validation split: nothing to choose on
    alpha = ex.alpha_frame([seeded(f"h{s}", 4, s, 0.8 + s / 100, alpha=1.0, beta=0.0) for s in range(3)])
    assert alpha["n"].iloc[0] == 3 and "error_y" in lab.alpha_figure(alpha).data[0]


def test_lab_experiments_queue_every_setting_with_every_seed(kd_home):
    from kdcore.jobs import RunStore

    store = RunStore()
    ids = ex.submit_rho_sweep(store, "digits")
    runs = store.list_runs(tag=ex.experiment_tag("rho-sweep", "digits"))
    assert len(ids) == len(runs) == len(ex.RHO_SWEEP) * len(ex.LAB_SEEDS) and len({r.sweep_id for r in runs}) == 1
    assert sorted({(r.spec.logit.rho, r.spec.seed) for r in runs}) == sorted(
        (float(rho), s) for rho in ex.RHO_SWEEP for s in ex.LAB_SEEDS)
    assert len(ex.submit_alpha_comparison(store, "digits")) == 3 * len(ex.LAB_SEEDS)


def test_teacher_answer_on_a_log_scale_shows_the_small_probabilities(digits):
    frame = softlabels.distribution_frame(digits.teacher_logits[0], digits.class_names, 1.0)
    fig = lab.distribution_figure(frame, 1.0, digits.class_names[0], log_scale=True)
    assert fig.layout.yaxis.type == "log" and list(fig.layout.yaxis.range) == [-8, 0.3]
    probs = frame["teacher"].to_numpy()
    tops = np.asarray(fig.data[0].y, dtype=float) + fig.data[0].base  # bar tops: the probabilities
    assert np.allclose(tops, np.maximum(probs, 1e-8))
    assert all(t.endswith("%") for t in fig.data[0].text)  # even tiny ones written, not hidden
    assert lab.distribution_figure(frame, 1.0, digits.class_names[0]).layout.yaxis.type != "log"


def test_sweep_figure_marks_the_current_rho():
    frame = pd.DataFrame({"rho": [1.0, 4.0, 16.0], "test_acc": [0.85, 0.86, 0.84], "agreement": [0.9, 0.92, 0.9]})
    fig = lab.sweep_figure(frame, 0.9, 8.0)
    assert [s.x0 for s in fig.layout.shapes if s.xref == "x"] == [8.0]
    marker = [a for a in fig.layout.annotations if a.text == "ρ = 8"]
    assert len(marker) == 1 and marker[0].x == pytest.approx(np.log10(8))
    assert not [a for a in lab.sweep_figure(frame, 0.9).layout.annotations if a.text.startswith("ρ =")]
    go_fig = fig.to_dict()
    import plotly.graph_objects as go

    go.Figure(go_fig)  # a valid figure, marker font included
    far = lab.sweep_figure(frame, 0.9, 50.0)  # beyond the swept ρ: the axis reaches it, the label sits left of it
    low, high = far.layout.xaxis.range
    assert low < np.log10(1.0) and high > np.log10(50.0)
    assert [a.xanchor for a in far.layout.annotations if a.text == "ρ = 50"] == ["right"]
    assert [a.xanchor for a in fig.layout.annotations if a.text == "ρ = 8"] == ["left"]


@pytest.mark.parametrize("log_scale", [False, True])
def test_two_temperatures_share_one_probability_axis(digits, log_scale):
    import plotly.graph_objects as go

    z, true_name = digits.teacher_logits[0], digits.class_names[digits.labels[0]]
    fig = lab.two_temperatures_figure(z, digits.class_names, (1.0, 8.0), true_name, log_scale=log_scale)
    go.Figure(fig.to_dict())  # valid plotly
    left, right = fig.data
    assert (left.xaxis, left.yaxis, right.xaxis, right.yaxis) == ("x", "y", "x2", "y")  # one y axis for both
    assert fig.layout.xaxis.domain[1] < fig.layout.xaxis2.domain[0]  # side by side, not overlapping
    heights = [np.asarray(t.y, dtype=float) + (t.base or 0) for t in (left, right)]
    for rho, h in zip((1.0, 8.0), heights):
        assert np.allclose(h, np.maximum(softlabels.soften(z, rho), 1e-8 if log_scale else 0), atol=1e-7)
    top = int(np.argmax(z))
    assert heights[1][top] < heights[0][top]  # softening: the top class loses probability at ρ = 8 ...
    assert np.sort(heights[1])[-2] > np.sort(heights[0])[-2]  # ... and the runner-up gains
    assert [a.text for a in fig.layout.annotations] == ["ρ = 1", "ρ = 8"]
    assert fig.layout.yaxis.type == ("log" if log_scale else None)


def test_play_through_rho_animates_from_low_to_high(digits):
    import plotly.graph_objects as go

    z, true_name = digits.teacher_logits[0], digits.class_names[digits.labels[0]]
    fig = lab.rho_animation_figure(z, digits.class_names, true_name, list(reversed(softlabels.RHO_STEPS)))
    go.Figure(fig.to_dict())  # frames, slider and buttons all valid plotly
    names = [f.name for f in fig.frames]
    assert [float(n) for n in names] == sorted(softlabels.RHO_STEPS)  # low to high whatever the order given
    for frame in (fig.frames[0], fig.frames[-1]):
        assert np.allclose(frame.data[0].y, softlabels.soften(z, float(frame.name)))
        assert frame.layout.title.text == f"<b>What the teacher answers at ρ = {frame.name}</b>"
    assert np.allclose(fig.data[0].y, softlabels.soften(z, min(softlabels.RHO_STEPS)))  # starts at the lowest ρ
    assert [s.label for s in fig.layout.sliders[0].steps] == names and fig.layout.sliders[0].active == 0
    play, pause = fig.layout.updatemenus[0].buttons
    assert play.method == "animate" and play.args[0] is None and play.args[1]["fromcurrent"] is True
    assert list(pause.args[0]) == [None]
    assert list(fig.layout.yaxis.range) == [0, 1.12]  # one axis for every frame: the bars move, not the scale
    spread = [float(np.max(f.data[0].y)) for f in fig.frames]
    assert spread[0] > spread[-1]  # the top class's share falls as ρ rises
    logged = lab.rho_animation_figure(z, digits.class_names, true_name, softlabels.RHO_STEPS, log_scale=True)
    go.Figure(logged.to_dict())
    assert logged.layout.yaxis.type == "log" and all(f.data[0].base == 1e-8 for f in logged.frames)


def few_label_frames():
    rows = [{"arm": arm, "seed": seed, "step": step, "test_acc": base + step / 1000 + seed / 100}
            for arm, base in (("from scratch", 0.5), ("with the teacher (KD)", 0.7)) for seed in range(3)
            for step in (10, 20, 30)]
    return pd.DataFrame(rows)


def test_few_label_figure_shows_mean_and_seed_band_per_arm():
    import plotly.graph_objects as go

    fig = lab.few_label_figure(few_label_frames(), 0.99)
    go.Figure(fig.to_dict())
    lines = [t for t in fig.data if t.mode == "lines"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert [t.name for t in lines] == ["from scratch", "with the teacher (KD)"] and len(bands) == 2
    assert list(lines[0].x) == [10, 20, 30] and list(lines[0].y) == pytest.approx([0.52, 0.53, 0.54])  # mean of 3 seeds
    assert max(bands[1].y) == pytest.approx(0.73 + 0.02) and min(bands[1].y) == pytest.approx(0.71)  # lowest..highest
    assert lines[0].line.color != lines[1].line.color
    assert any(s.y0 == 0.99 for s in fig.layout.shapes) and "3 seeds" in fig.layout.title.subtitle.text
    single = lab.few_label_figure(few_label_frames().query("seed == 0"))
    assert not [t for t in single.data if t.fill == "toself"]  # one seed: no band


def test_few_label_sentence_gives_both_accuracies_and_the_seeds_won():
    summary = pd.DataFrame({"arm": ["from scratch", "with the teacher (KD)"], "mean": [0.868, 0.969],
                            "std": [0.027, 0.0034], "n": [3, 3]})
    text = lab.few_label_sentence(summary, np.array([0.07, 0.1, -0.01]), 65)
    assert "65 labelled digits" in text and "**86.8%** ± 2.7" in text and "**96.9%** ± 0.3" in text
    assert "**+10.1 points**" in text and "ahead on 2 of 3 seeds" in text


def test_for_projector_makes_a_chart_taller_and_nothing_else(digits):
    frame = softlabels.distribution_frame(digits.teacher_logits[0], digits.class_names, 2.0)
    plain = lab.distribution_figure(frame, 2.0, "0")
    big = lab.for_projector(lab.distribution_figure(frame, 2.0, "0"))
    assert big.layout.height == round(plain.layout.height * lab.PROJECTOR_HEIGHT) > plain.layout.height
    assert list(big.data[0].y) == list(plain.data[0].y) and big.layout.title.text == plain.layout.title.text
    assert "font-size: 24px" in lab.PRESENTATION_CSS  # the root size that Streamlit's chart text follows
