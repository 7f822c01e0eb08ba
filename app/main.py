"""KD Studio dashboard: `streamlit run app/main.py`.

Starts the embedded local worker once per process (unless one is alive or KD_LOCAL_WORKER=0),
shows workers and the queue in the sidebar and runs the page the user picked from pages/.

This file is two things. Run as Streamlit's script (`__name__ == "__main__"`, also under AppTest) it is the
dashboard. Imported by `streamlit run`, which finds the `st.App` below, it is the server: the dashboard
served with app/guard.py's middleware in front of Streamlit's upload and media routes, so nothing is
uploaded or downloaded before sign-in."""
from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # a checkout run without `pip install -e .`
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402


@st.cache_resource(show_spinner=False)
def _one_thread_for_the_ui() -> None:
    # The dashboard only does dry runs and tiny forward passes; the cores belong to the worker.
    import torch

    torch.set_num_threads(1)


# In a window under 1000 px the sidebar keeps 220 px instead of about 300 (37% of an 800 px window).
NARROW_WINDOW_CSS = """<style>
@media (max-width: 1000px) {
  section[data-testid="stSidebar"] { width: 220px !important; min-width: 220px !important; }
}
</style>"""


def dashboard() -> None:
    # An emoji icon: the browser draws it itself. A material icon would be fetched from fonts.gstatic.com, which a
    # lecture hall or company network without internet cannot reach (a broken icon, a page left waiting).
    st.set_page_config(page_title="KD Studio", page_icon="🎓", layout="wide")

    from app import auth, navigation, state, theme, widgets

    _one_thread_for_the_ui()
    # Signed-out visitors see the login screen only: no page, no navigation (st.stop() inside).
    user = auth.require_login()
    worker_problem = state.ensure_worker_once()
    page = st.navigation(navigation.all_pages())
    st.html(NARROW_WINDOW_CSS)
    with st.sidebar:
        if worker_problem:
            st.warning(worker_problem)
        widgets.live_sidebar()
        auth.account_box(user)
        theme.switch_button()
    page.run()


if __name__ == "__main__":
    dashboard()
else:
    from starlette.middleware import Middleware

    from app.guard import SignedInOnly

    streamlit_app = st.App(__file__, middleware=[Middleware(SignedInOnly)])
