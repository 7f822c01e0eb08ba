"""The dark-knowledge lab in the real dashboard, in headless Chromium: open it, move ρ with the keyboard,
switch to Fashion-MNIST, and save screenshots under screenshots/ (git-ignored) for a person to look at."""
from __future__ import annotations

from pathlib import Path

import browser_support as bs
import pytest
from browser_support import idle

from app import lab

pytestmark = [pytest.mark.browser]


def snap(page, name: str) -> Path:
    return bs.snap(page, name, max_height=9000, settle_ms=600)


def chart_title_shown(page, text: str, timeout_ms: int = 30_000) -> None:
    """Wait until a plotly chart's title is `text` (plotly draws titles as SVG text; "ρ = 1" is not "ρ = 1.25")."""
    page.wait_for_function(
        "t => [...document.querySelectorAll('.js-plotly-plot .gtitle')].some(e => e.textContent.trim() === t)",
        arg=text, timeout=timeout_ms)


# The first colour of the class-similarity heatmap's scale, as drawn.
HEATMAP_FIRST_COLOUR = """() => {
  const chart = [...document.querySelectorAll('.js-plotly-plot')]
    .find(c => (c.layout?.title?.text || '').includes('Average soft label per true class'));
  return chart ? chart.data[0].colorscale[0][1] : null;
}"""
HEAT_SCALES = {False: lab.HEAT_SCALE, True: lab.HEAT_SCALE_DARK}


def move_rho(page, steps: int) -> None:
    thumb = page.get_by_role("slider").first
    thumb.focus()
    for _ in range(abs(steps)):
        thumb.press("ArrowRight" if steps > 0 else "ArrowLeft")


@pytest.fixture()
def lab_server(kd_home):
    """The app with its own KD_HOME and no embedded worker (the test plays the worker)."""
    bs.require_chromium()
    kd_home.mkdir(parents=True, exist_ok=True)
    with bs.streamlit_app(kd_home, kd_home / "streamlit.log", local_worker=False) as url:
        yield url


def test_lab_in_the_browser(lab_server):
    from kdcore.jobs import RunStore
    from kdcore.jobs.worker import Worker, WorkerConfig

    errors: list[str] = []
    with bs.chromium_page(errors) as page:
        page.goto(f"{lab_server}/lab", wait_until="networkidle")
        page.get_by_role("heading", name="Dark-knowledge lab").wait_for(timeout=60_000)
        chart_title_shown(page, "What the teacher answers at ρ = 1")
        idle(page)
        snap(page, "lab_01_digits_rho1")

        move_rho(page, 9)  # 1 -> 8 on the R10 steps (1.25, 1.6, 2, 2.5, 3.2, 4, 5, 6.3, 8)
        chart_title_shown(page, "What the teacher answers at ρ = 8")
        idle(page)
        page.get_by_text("the classes it finds most similar are").first.wait_for(timeout=30_000)
        # The curves against ρ further down follow the slider (their fragments rerun with it): each marks ρ = 8.
        page.wait_for_function(
            "() => [...document.querySelectorAll('.js-plotly-plot .annotation-text')]"
            ".filter(e => e.textContent === 'ρ = 8').length >= 3", timeout=30_000)
        snap(page, "lab_02_digits_rho8")

        # Play through ρ: plotly's own animation, in the browser, from ρ = 0.5 up to 50.
        page.get_by_text("Play through ρ", exact=True).click()
        chart_title_shown(page, "What the teacher answers at ρ = 0.5")
        idle(page)
        page.locator(".updatemenu-button").first.click()
        chart_title_shown(page, "What the teacher answers at ρ = 50", timeout_ms=60_000)
        snap(page, "lab_02b_digits_played_to_rho50")
        page.get_by_text("Side by side", exact=True).click()
        chart_title_shown(page, "One image at two temperatures")
        idle(page)
        snap(page, "lab_02c_digits_side_by_side")
        page.get_by_text("At ρ", exact=True).click()
        chart_title_shown(page, "What the teacher answers at ρ = 8")
        idle(page)

        page.get_by_text("Fashion-MNIST", exact=True).click()
        chart_title_shown(page, "Average soft label per true class at ρ = 8")
        idle(page)
        page.get_by_text("T-shirt/top").first.wait_for(timeout=30_000)
        snap(page, "lab_03_fashion_rho8")

        # The sidebar's theme switch: the heatmap takes the dark page's colours at once, and the light ones back.
        for dark in (True, False):
            page.locator('[data-testid="stSidebar"]').get_by_role("button", name="Light / dark theme").click()
            assert bs.eventually(page, lambda dark=dark: bs.page_is_dark(page) == dark)
            idle(page)
            want = HEAT_SCALES[dark][0][1]
            assert bs.eventually(page, lambda want=want: page.evaluate(HEATMAP_FIRST_COLOUR) == want), want
            if dark:
                snap(page, "lab_03b_fashion_rho8_dark")

        # Another sample: the page redraws once (the entropy curves follow the sample), ρ stays where it was.
        page.get_by_role("combobox").first.click()
        page.keyboard.type("Trouser")  # the list filters as one types
        page.get_by_role("option").filter(has_text="Trouser").first.click()
        page.get_by_text("True class: Trouser").wait_for(timeout=30_000)
        idle(page)
        chart_title_shown(page, "What the teacher answers at ρ = 8")

        # Hinton's omitted class on digits (seconds of training): the button queues a run, this test plays the
        # background worker, and the page's polling fragment shows the corrected accuracies when it is done.
        page.get_by_text("Digits (8×8)", exact=True).click()
        chart_title_shown(page, "What the teacher answers at ρ = 8")
        idle(page)
        page.get_by_role("tab", name="Omitted class").click()
        page.get_by_role("button", name="Run the omitted-class experiment").click()
        page.get_by_text("Latest run").first.wait_for(timeout=30_000)
        store = RunStore()
        assert len(store.list_runs(tag="lab:omit:digits")) == 1
        Worker(store, WorkerConfig(device="cpu", poll_interval_s=0.05, max_runs=1)).run_forever()
        page.get_by_text("3, after").first.wait_for(timeout=60_000)
        idle(page)
        snap(page, "lab_04_digits_omitted_class")
    assert not errors, errors
