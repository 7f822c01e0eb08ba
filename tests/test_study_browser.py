"""The Studies page in the real dashboard, in headless Chromium: a grid study's table and figures and a
search's Optuna tab, with screenshots under screenshots/ (git-ignored) for a person to look at."""
from __future__ import annotations

import browser_support as bs
import pytest
from browser_support import idle
from test_app_study import grid_study, search_study

pytestmark = [pytest.mark.browser]


@pytest.mark.slow
def test_studies_page_in_the_browser(kd_home):
    from kdcore.jobs import RunStore

    bs.require_chromium()
    store = RunStore()
    grid_id = grid_study(store)
    search_id, _ = search_study(store)
    errors: list[str] = []
    with bs.streamlit_app(kd_home, kd_home / "streamlit.log", local_worker=False) as url, \
            bs.chromium_page(errors) as page:
        page.goto(f"{url}/studies?study={grid_id}", wait_until="networkidle")
        page.get_by_role("heading", name="Studies").wait_for(timeout=60_000)
        page.get_by_text("Best on validation").first.wait_for(timeout=60_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        idle(page)
        assert not bs.has_traceback(page)
        bs.snap(page, "study_01_grid_table_curves", settle_ms=1500)
        page.get_by_role("tab", name="Swept value").click()
        idle(page)
        page.get_by_text("against logit.rho").first.wait_for(timeout=30_000)
        bs.snap(page, "study_02_swept_value", settle_ms=1500)
        page.get_by_role("tab", name="Parallel coordinates").click()
        idle(page)
        page.locator(".js-plotly-plot .parcoords").first.wait_for(timeout=30_000)
        bs.snap(page, "study_03_parcoords", settle_ms=1500)

        page.goto(f"{url}/studies?study={search_id}", wait_until="networkidle")
        page.get_by_role("tab", name="Search").wait_for(timeout=60_000)
        idle(page)
        page.get_by_role("tab", name="Search").click()
        page.get_by_text("Best trial").first.wait_for(timeout=60_000)
        idle(page)
        assert not bs.has_traceback(page)
        bs.snap(page, "study_04_search", settle_ms=800)
    assert not errors, errors
