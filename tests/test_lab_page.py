"""pages/lab.py through the real app (app/main.py's navigation) with AppTest: sample picker, ρ slider,
dataset switch, and the experiment buttons submitting runs into an isolated store."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import lab
from kdcore.jobs import RunStatus, RunStore
from kdcore.jobs.worker import Worker, WorkerConfig
from kdcore.lab import assets, softlabels
from kdcore.lab import experiments as ex

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")


@pytest.fixture()
def lab_page(kd_home, monkeypatch):
    monkeypatch.setenv("KD_LOCAL_WORKER", "0")  # the test plays the worker itself
    at = AppTest.from_file(MAIN, default_timeout=90)
    at.run()
    at.switch_page("../pages/lab.py")
    at.run()
    assert not at.exception, at.exception
    return at


def markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def chart(at: AppTest, key: str) -> dict:
    """The plotly figure (as a dict) of the chart with widget key `key`."""
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith("-" + key)]
    assert found, f"no chart {key}"
    return json.loads(found[0].proto.spec)


def test_the_similarity_heatmap_takes_the_theme_the_sidebar_switch_turns_the_page_to(lab_page):
    """The browser changes the theme after the run the switch was pressed in, and no theme change reruns the app:
    that run already draws the heatmap in the other theme's colours, and the next one goes by Streamlit's context
    (light here, where no browser switched anything)."""
    at = lab_page

    def scale() -> list:
        return chart(at, "lab_similarity_chart")["data"][0]["colorscale"]

    assert scale() == lab.HEAT_SCALE
    at.button(key="theme_switch").click().run()
    assert not at.exception, at.exception
    assert scale() == lab.HEAT_SCALE_DARK
    at.run()
    assert scale() == lab.HEAT_SCALE


def test_lab_opens_on_a_shipped_teacher_with_every_chart(lab_page):
    at = lab_page
    assert at.title[0].value == "Dark-knowledge lab"
    assert at.radio(key="lab_dataset").value == "digits"
    assert at.select_slider(key="lab_rho").value == 1.0
    assert len(at.get("plotly_chart")) == 5  # answer, entropy, effective classes, similarity, gradient
    text = markdown_text(at)
    assert "classes it finds most similar" in text and "ρ = 1" in text
    assert "dark knowledge" in text.lower()
    # digits examples speak of digits, with the right article
    assert "shirt" not in text.lower() and "trouser" not in text.lower() and "an 8 looks" in text
    assert " a 8" not in text
    bundle = assets.load_bundle("digits")
    sample = at.selectbox(key="lab_sample_digits").value
    assert bundle.labels[sample] == 3  # the showcase sample is a 3


def test_rho_slider_and_sample_picker_redraw(lab_page):
    at = lab_page
    at.select_slider(key="lab_rho").set_value(8.0).run()
    assert not at.exception
    text = markdown_text(at)
    assert "at ρ = 8." in text and "hesitates between about" in text
    assert chart(at, "lab_similarity_chart")["layout"]["title"]["text"].endswith("at ρ = 8")
    assert chart(at, "lab_answer_chart")["layout"]["title"]["text"].startswith("What the teacher answers at ρ = 8")
    bundle = assets.load_bundle("digits")
    before = chart(at, "lab_entropy_chart")["data"][1]["y"]  # "this sample"
    other = int(next(i for i in bundle.sample_indices if bundle.labels[i] == 0))
    at.selectbox(key="lab_sample_digits").set_value(other).run()
    assert not at.exception
    assert [img.proto.imgs[0].caption for img in at.get("image")] == ["True class: 0"]
    assert chart(at, "lab_entropy_chart")["data"][1]["y"] != before  # the curves below follow the sample
    assert at.select_slider(key="lab_rho").value == 8.0


def test_similarity_matrix_spans_the_page(lab_page):
    """The matrix is not squeezed into a column: in an 800 px window a column left its cells too narrow."""
    at = lab_page
    assert chart(at, "lab_similarity_chart")
    in_columns = [c.proto.id for col in at.columns for c in col.get("plotly_chart")]
    assert in_columns and not [i for i in in_columns if i.endswith("-lab_similarity_chart")]


def test_switching_to_fashion_mnist(lab_page):
    at = lab_page
    at.radio(key="lab_dataset").set_value("fashion-mnist").run()
    assert not at.exception
    bundle = assets.load_bundle("fashion-mnist")
    assert bundle.labels[at.selectbox(key="lab_sample_fashion-mnist").value] == 6  # a shirt
    assert "Shirt" in markdown_text(at)
    assert "1. **T-shirt/top ↔ Shirt**" in markdown_text(at)  # the most similar pair at ρ = 1


def test_experiment_buttons_submit_tagged_runs_and_the_omitted_report_appears(lab_page, kd_home):
    at = lab_page
    store = RunStore()
    at.button(key="lab_run_omit").click().run()
    assert not at.exception
    omit = store.list_runs(tag="lab:omit:digits")
    assert len(omit) == 1 and omit[0].spec.transfer.omit_classes == [3]
    assert omit[0].spec.teacher.checkpoint == str(assets.teacher_path("digits"))

    # Play the background worker for that one run (seconds on digits), then look again.
    Worker(store, WorkerConfig(device="cpu", poll_interval_s=0.05, max_runs=1)).run_forever()
    assert store.get(omit[0].id).status == RunStatus.COMPLETED
    at.run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert "3, before" in metrics and "3, after" in metrics and "bias added" in metrics
    assert float(metrics["3, after"].rstrip("%")) >= float(metrics["3, before"].rstrip("%"))
    assert len(chart(at, "lab_omit_chart")["data"]) == 2
    assert "validation images" in markdown_text(at)

    at.button(key="lab_run_sweep").click().run()
    at.button(key="lab_run_alpha").click().run()
    assert not at.exception
    sweep = store.list_runs(tag=ex.experiment_tag("rho-sweep", "digits"))
    assert sorted(r.spec.logit.rho for r in sweep) == sorted([1, 2, 4, 8, 16, 32] * len(ex.LAB_SEEDS))
    assert len({r.sweep_id for r in sweep}) == 1
    alpha = store.list_runs(tag=ex.experiment_tag("alpha", "digits"))
    assert sorted((r.spec.logit.alpha, r.spec.logit.beta) for r in alpha) == sorted(
        [(0.0, 1.0), (0.1, 0.9), (1.0, 0.0)] * len(ex.LAB_SEEDS))
    assert "0 of 18 runs finished" in " ".join(c.value for c in at.caption)
    assert at.session_state["lab_polling"] is True  # queued runs: the results poll the store


def test_presentation_mode_hides_the_sidebar_and_enlarges_text(lab_page):
    at = lab_page
    assert not [h for h in at.get("html") if h.proto.body == lab.PRESENTATION_CSS]
    keys = ("lab_answer_chart", "lab_similarity_chart", "lab_entropy_chart", "lab_gradient_chart")
    heights = {key: chart(at, key)["layout"]["height"] for key in keys}
    at.toggle(key="lab_presentation").set_value(True).run()
    assert [h for h in at.get("html") if h.proto.body == lab.PRESENTATION_CSS]
    for key in keys:  # charts grow with their text
        assert chart(at, key)["layout"]["height"] == round(heights[key] * lab.PROJECTOR_HEIGHT), key
    assert "stSidebar" in lab.PRESENTATION_CSS and "font-size: 24px" in lab.PRESENTATION_CSS


def rho_markers(figure: dict) -> list[tuple[float, str]]:
    """The vertical ρ markers of a chart: (x of the line, its label)."""
    lines = [s["x0"] for s in figure["layout"].get("shapes", []) if s.get("x0") == s.get("x1") and s["xref"] == "x"]
    labels = [a["text"] for a in figure["layout"].get("annotations", []) if a["text"].startswith("ρ = ")]
    return list(zip(lines, labels))


def test_every_chart_against_rho_marks_the_slider_value(lab_page):
    at = lab_page
    for key in ("lab_entropy_chart", "lab_effective_chart", "lab_gradient_chart"):
        assert rho_markers(chart(at, key)) == [(1.0, "ρ = 1")], key
    at.select_slider(key="lab_rho").set_value(2.5).run()
    assert not at.exception
    for key in ("lab_entropy_chart", "lab_effective_chart", "lab_gradient_chart"):
        assert rho_markers(chart(at, key)) == [(2.5, "ρ = 2.5")], key


def test_two_rho_side_by_side_and_play_through_rho(lab_page):
    at = lab_page
    at.select_slider(key="lab_rho").set_value(8.0).run()
    at.button_group(key="lab_answer_view").set_value("Side by side").run()
    assert not at.exception
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("-lab_answer_chart")]
    two = chart(at, "lab_two_rho_chart")
    assert [a["text"] for a in two["layout"]["annotations"]] == ["ρ = 1", "ρ = 8"]  # ρ = 1 beside the slider's ρ
    assert [(t["xaxis"], t["yaxis"]) for t in two["data"]] == [("x", "y"), ("x2", "y")]  # one probability axis
    at.select_slider(key="lab_rho_left").set_value(2.0).run()
    assert [a["text"] for a in chart(at, "lab_two_rho_chart")["layout"]["annotations"]] == ["ρ = 2", "ρ = 8"]
    at.toggle(key="lab_log_scale").set_value(True).run()
    assert chart(at, "lab_two_rho_chart")["layout"]["yaxis"]["type"] == "log"

    at.button_group(key="lab_answer_view").set_value("Play through ρ").run()
    assert not at.exception
    play = chart(at, "lab_play_chart")
    assert len(play["frames"]) == len(softlabels.RHO_STEPS) and play["frames"][0]["name"] == "0.5"
    assert play["layout"]["updatemenus"][0]["buttons"][0]["method"] == "animate"
    assert "Play" in " ".join(c.value for c in at.caption)


def test_hesitation_sentence_speaks_of_the_rho_shown(lab_page):
    """The sentence on how unsure the teacher is follows the view: the slider's ρ, both ρ side by side, or the
    animation's whole range (it runs in the browser, so the server cannot know the ρ on screen)."""
    at = lab_page
    at.select_slider(key="lab_rho").set_value(8.0).run()
    hesitation = [m.value for m in at.markdown if "classes for this image" in m.value]
    assert len(hesitation) == 1 and hesitation[0].startswith("At ρ = 8 the teacher hesitates")
    at.button_group(key="lab_answer_view").set_value("Side by side").run()
    at.select_slider(key="lab_rho_left").set_value(2.0).run()
    hesitation = [m.value for m in at.markdown if "classes for this image" in m.value]
    assert len(hesitation) == 1 and "at ρ = 2 (left)" in hesitation[0] and "at ρ = 8 (right)" in hesitation[0]
    at.button_group(key="lab_answer_view").set_value("Play through ρ").run()
    assert not at.exception
    hesitation = [m.value for m in at.markdown if "classes for this image" in m.value]
    assert len(hesitation) == 1 and "from 0.5 to 50" in hesitation[0] and "ρ = 8" not in hesitation[0]


def test_few_label_section_waits_for_the_button(lab_page):
    at = lab_page
    assert at.button_group(key="lab_few_fraction").value == 0.05
    assert "Not trained yet with 65 labels" in " ".join(c.value for c in at.caption)
    assert "1,230 images, whose labels it never sees" in markdown_text(at).replace("\n", " ")
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("-lab_few_chart")]


@pytest.mark.slow
def test_few_label_demo_trains_both_students_in_the_page(lab_page):
    at = lab_page
    at.button_group(key="lab_few_fraction").set_value(0.025).run()
    at.button(key="lab_run_few").click().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    scratch, kd = float(metrics["From scratch"].rstrip("%")), float(metrics["With the teacher (KD)"].rstrip("%"))
    assert kd > scratch + 5  # the lab's claim on 30 labels: the teacher helps, by several points
    figure = chart(at, "lab_few_chart")
    assert [t["name"] for t in figure["data"] if t.get("mode") == "lines"] == ["from scratch", "with the teacher (KD)"]
    assert "ahead on 3 of 3 seeds" in markdown_text(at)
    at.run()  # a rerun shows the cached result, no button press needed
    assert chart(at, "lab_few_chart") and not at.exception


def test_sweep_chart_marks_the_slider_rho(lab_page):
    """A finished sweep (its runs finished through the store as a worker would, with made-up accuracies) is
    charted against ρ with the slider's ρ marked, and the marker follows the slider."""
    at = lab_page
    store = RunStore()
    ids = ex.submit_rho_sweep(store, "digits")
    store.register_worker("w1", host="test-host", pid=1, device="cpu")
    for _ in ids:
        record = store.claim_next("w1", device="cpu")
        assert store.finish_run(record.id, "w1", record.attempts, RunStatus.COMPLETED,
                                final={"test/acc": 0.9, "fidelity/agreement": 0.95})
    at.select_slider(key="lab_rho").set_value(4.0).run()
    assert not at.exception
    sweep = chart(at, "lab_sweep_chart")
    assert [t["name"] for t in sweep["data"]] == ["student test accuracy", "agrees with the teacher"]
    assert rho_markers(sweep) == [(4.0, "ρ = 4")]
    at.select_slider(key="lab_rho").set_value(16.0).run()
    assert rho_markers(chart(at, "lab_sweep_chart")) == [(16.0, "ρ = 16")]
