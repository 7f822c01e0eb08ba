"""Home page: the pitch, the digits quick start (launch, progress, the three accuracies), the latest runs."""
from __future__ import annotations

from test_app_support import (
    app,
    complete,
    no_exception,
    no_local_worker,  # noqa: F401 - autouse: no real worker
    texts,
)

from app import quickstart
from kdcore.jobs import RunStore


def test_empty_home_explains_and_offers_the_quick_start(kd_home):
    at = app()
    no_exception(at)
    assert at.title[0].value == "KD Studio"
    assert "soft labels" in texts(at) and "No run yet" in texts(at)
    assert at.button(key="launch_quickstart").label == "Launch the digits quick start"
    assert "No worker is running" in texts(at)  # the sidebar, with KD_LOCAL_WORKER=0


def test_launching_the_quick_start_queues_the_trio(kd_home):
    at = app()
    at.button(key="launch_quickstart").click().run()
    no_exception(at)
    store = RunStore()
    trio = quickstart.latest_trio(store)
    assert trio is not None
    kd = store.get(trio.kd)
    assert kd.depends_on == trio.teacher and kd.spec.transfer.label_fraction == 0.05
    page = texts(at)
    for title in quickstart.ROLE_TITLES.values():
        assert title in page
    assert f"waits for the teacher `{trio.teacher}`" in page
    at.run()
    assert "0 running · 3 queued" in texts(at)  # the sidebar's queue


def test_finished_quick_start_shows_three_accuracies_side_by_side(kd_home):
    store = RunStore()
    trio = quickstart.submit_trio(store)
    complete(store, trio.teacher)
    complete(store, trio.scratch)
    complete(store, trio.kd, kd=True)
    at = app()
    no_exception(at)
    assert "distillation moved the student from 80.0% to 80.0%" in at.success[0].value
    assert [m.value for m in at.metric] == ["80.0%", "80.0%", "80.0%"]
    assert at.get("plotly_chart"), "the accuracy bars are missing"
    latest = at.dataframe[0].value
    assert set(latest["id"]) == set(trio.ids())


def test_page_icon_needs_no_request_outside_the_app(kd_home, monkeypatch):
    """The page icon is drawn by the browser or served by the app itself: a material icon is fetched from
    fonts.gstatic.com, which a network without internet cannot reach."""
    import streamlit
    from streamlit.commands.page_config import _get_favicon_string

    configs: list[dict] = []
    real = streamlit.set_page_config

    def recording(*args, **kwargs):
        configs.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(streamlit, "set_page_config", recording)
    no_exception(app())
    icons = [_get_favicon_string(c["page_icon"]) for c in configs if c.get("page_icon") is not None]
    assert icons, "the app names a page icon"
    for icon in icons:
        assert "://" not in icon and not icon.startswith(":material"), icon
