"""The light/dark switch: the sidebar button hands the browser the script that picks the other theme in
Streamlit's own ⋮ menu (which the config keeps: toolbarMode "viewer"); the browser test shows it working."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from test_app_support import app, no_exception, no_local_worker  # noqa: F401 - autouse: no real worker

from app import theme

ROOT = Path(__file__).resolve().parents[1]


def scripts(at) -> list[str]:
    return [e.proto.body for e in at.get("html") if "stMainMenuItem-theme-" in e.proto.body]


def test_the_switch_sends_a_fresh_script_on_every_press(kd_home):
    at = app("runs.py")
    no_exception(at)
    assert scripts(at) == []  # nothing runs in the browser until the button is pressed
    at.button(key="theme_switch").click().run()
    no_exception(at)
    first = scripts(at)
    assert len(first) == 1 and "stMainMenuButton" in first[0] and "press 1" in first[0]
    assert '"runs", "run", "compare"' in first[0]  # the choice is kept for every page's path
    assert all(e.proto.unsafe_allow_javascript for e in at.get("html") if "stMainMenuItem" in e.proto.body)
    at.run()
    assert scripts(at) == []  # another rerun does not switch again
    at.button(key="theme_switch").click().run()
    assert "press 2" in scripts(at)[0]  # a different element, so the browser runs it again


def test_the_script_targets_a_named_theme_or_the_other_one():
    assert 'const target = "Dark" ||' in theme.switch_script("Dark")
    assert "const target = null ||" in theme.switch_script()
    assert r'const pages = ["runs", "soft\\-labels"];' in theme.switch_script(pages=["runs", "soft-labels"])
    with pytest.raises(ValueError, match="Light, Dark"):
        theme.switch_script("Sepia")


def test_the_config_keeps_streamlits_menu_with_its_theme_switch():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "viewer"  # "minimal" hides the ⋮ menu and the switch with it
