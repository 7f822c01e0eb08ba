"""The light/dark switch in the sidebar.

The theme is Streamlit's own: the app's ⋮ menu offers System, Light and Dark (`client.toolbarMode = "viewer"` in
.streamlit/config.toml keeps that menu; Streamlit remembers the choice in the browser). Streamlit has no Python
call that sets a viewer's theme, so the sidebar button presses that menu's entry for the other theme in the
browser: the page keeps its session (a sign-in, filters, selections) and every chart follows, because plotly
and Vega-Lite charts are drawn with Streamlit's theme (`theme="streamlit"`, the default)."""
from __future__ import annotations

import json
import re
from collections.abc import Sequence

import streamlit as st

from app import navigation

THEMES = ("Light", "Dark")
SWITCH_KEY = "theme_switch"  # the sidebar button's key: True in session state during the run it was pressed in

# Runs once in the browser when the element appears: reads whether the page is dark now, opens the ⋮ menu and
# picks the other theme there. The test ids are Streamlit's own (stMainMenuButton, stMainMenuItem-theme-<name>).
_SWITCH_JS = """<script>
(() => {
  const doc = window.document;
  const bg = getComputedStyle(doc.querySelector('[data-testid="stApp"]') || doc.body).backgroundColor;
  const rgb = (bg.match(/\\d+(\\.\\d+)?/g) || [255, 255, 255]).slice(0, 3).map(Number);
  const dark = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255 < 0.5;
  const target = %(target)s || (dark ? "Light" : "Dark");
  // Streamlit remembers the choice under a key named after the path the page was first loaded at; the same
  // choice is written under every page's path, so a link straight to another page opens in it too.
  const remember = (before) => {
    const changed = Object.keys(localStorage).find((k) => /^stActiveTheme-.*-v\\d+$/.test(k)
                                                       && localStorage.getItem(k) !== before[k]);
    if (!changed) return;
    const version = changed.match(/-v(\\d+)$/)[1];
    const pages = %(pages)s;
    const base = location.pathname.replace(new RegExp(`/(${pages.join("|")})?/?$`), "");
    for (const page of ["", ...pages]) {
      localStorage.setItem(`stActiveTheme-${base}/${page}-v${version}`, localStorage.getItem(changed));
    }
  };
  const pick = (tries) => {
    const item = doc.querySelector(`[data-testid="stMainMenuItem-theme-${target}"]`);
    if (item) {
      const before = Object.fromEntries(Object.keys(localStorage).map((k) => [k, localStorage.getItem(k)]));
      item.click();
      // close the menu again: the switch is the sidebar's, the open menu would only be in the way
      setTimeout(() => doc.dispatchEvent(new KeyboardEvent("keydown", {key: "Escape", bubbles: true})), 50);
      setTimeout(() => remember(before), 150);
      return;
    }
    if (tries === 10) {
      const menu = doc.querySelector('[data-testid="stMainMenuButton"]');
      if (menu) menu.click();
    }
    if (tries > 0) setTimeout(() => pick(tries - 1), 50);
  };
  pick(10);
})();
</script>"""


def switch_script(target: str | None = None, pages: Sequence[str] = ()) -> str:
    """The script that switches the page's theme: to `target` ("Light" or "Dark"), or to the other one; the
    choice is kept for each of `pages` (url paths: "runs", "compare", ...) as well as for this one."""
    if target is not None and target not in THEMES:
        raise ValueError(f"theme must be one of {', '.join(THEMES)}, not {target!r}")
    return _SWITCH_JS % {"target": json.dumps(target), "pages": json.dumps([re.escape(p) for p in pages])}


def page_is_dark() -> bool:
    """Whether the page is dark once this run's output is drawn. Streamlit's context tells the theme the browser
    had when the run began and no theme change reruns the app; when the sidebar button was pressed in this run,
    the browser flips the theme right after it, so figures that pick their colours by theme count the flip."""
    dark = st.context.theme.type == "dark"
    return not dark if st.session_state.get(SWITCH_KEY, False) else dark


def switch_button() -> None:
    """A sidebar button to the other theme. Its label names both: the browser switches without a rerun, so a
    label naming the other theme would be out of date until the next one."""
    if st.button("Light / dark theme", icon=":material/contrast:", key=SWITCH_KEY, type="tertiary",
                 help="Switches to the other theme. Also in the ⋮ menu at the top right, with “System” to follow "
                      "your computer's setting."):
        # A new element each time (the count differs), so the browser runs the script again on every press.
        st.session_state["theme_switches"] = presses = st.session_state.get("theme_switches", 0) + 1
        pages = [p.url_path for p in navigation.available()]
        st.html(switch_script(pages=pages).replace("(() => {", f"(() => {{ // press {presses}", 1), unsafe_allow_javascript=True)
