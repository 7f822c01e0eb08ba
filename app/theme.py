"""The light/dark switch in the sidebar.

The theme is Streamlit's own: the app's ⋮ menu offers System, Light and Dark (`client.toolbarMode = "viewer"` in
.streamlit/config.toml keeps that menu; Streamlit remembers the choice in the browser). Streamlit has no Python
call that sets a viewer's theme, so the sidebar button presses that menu's entry for the other theme in the
browser: the page keeps its session (a sign-in, filters, selections) and every chart follows, because plotly
and Vega-Lite charts are drawn with Streamlit's theme (`theme="streamlit"`, the default)."""
from __future__ import annotations

import streamlit as st

THEMES = ("Light", "Dark")

# Runs once in the browser when the element appears: reads whether the page is dark now, opens the ⋮ menu and
# picks the other theme there. The test ids are Streamlit's own (stMainMenuButton, stMainMenuItem-theme-<name>).
_SWITCH_JS = """<script>
(() => {
  const doc = window.document;
  const bg = getComputedStyle(doc.querySelector('[data-testid="stApp"]') || doc.body).backgroundColor;
  const rgb = (bg.match(/\\d+(\\.\\d+)?/g) || [255, 255, 255]).slice(0, 3).map(Number);
  const dark = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255 < 0.5;
  const target = %(target)s || (dark ? "Light" : "Dark");
  const pick = (tries) => {
    const item = doc.querySelector(`[data-testid="stMainMenuItem-theme-${target}"]`);
    if (item) {
      item.click();
      // close the menu again: the switch is the sidebar's, the open menu would only be in the way
      setTimeout(() => doc.dispatchEvent(new KeyboardEvent("keydown", {key: "Escape", bubbles: true})), 50);
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


def switch_script(target: str | None = None) -> str:
    """The script that switches the page's theme: to `target` ("Light" or "Dark"), or to the other one."""
    if target is not None and target not in THEMES:
        raise ValueError(f"theme must be one of {', '.join(THEMES)}, not {target!r}")
    return _SWITCH_JS % {"target": f'"{target}"' if target else "null"}


def switch_button() -> None:
    """A sidebar button to the other theme. Its label names both: the browser switches without a rerun, so a
    label naming the other theme would be out of date until the next one."""
    if st.button("Light / dark theme", icon=":material/contrast:", key="theme_switch", type="tertiary",
                 help="Switches to the other theme. Also in the ⋮ menu at the top right, with “System” to follow "
                      "your computer's setting."):
        # A new element each time (the count differs), so the browser runs the script again on every press.
        st.session_state["theme_switches"] = presses = st.session_state.get("theme_switches", 0) + 1
        st.html(switch_script().replace("(() => {", f"(() => {{ // press {presses}", 1), unsafe_allow_javascript=True)
