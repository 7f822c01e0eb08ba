"""Home: what KD Studio does, the digits quick start and the latest runs."""
import streamlit as st

from app import auth, figures, navigation, quickstart, state, tables, widgets
from kdcore.errors import KDError

store = state.get_store()

st.title("KD Studio")
st.markdown(
    "KD Studio trains a small **student** network to imitate a large **teacher** — its softened "
    "predictions (*soft labels* at temperature ρ) and, if you like, its inner layers — so the student "
    "gets close to the teacher's accuracy at a fraction of its size. "
    "Build an experiment, launch it on whatever CPU or GPU you have, watch its curves live and compare "
    "what teacher and student believe, class by class."
)

st.subheader("Quick start: distillation on handwritten digits")
st.markdown(
    "Three runs on scikit-learn's 8×8 digits, about a minute on a laptop CPU: a **teacher** (a small CNN) "
    "learns from all labels; then two identical small MLP **students** see only **5% of the labels** — "
    "one trained from scratch, one distilled from the teacher, which also learns from the teacher's soft "
    "labels on the rest of the training set (an unlabelled transfer set). The KD run waits for its teacher."
)

if st.button("Launch the digits quick start", type="primary", key="launch_quickstart"):
    try:
        quickstart.submit_trio(store, owner=auth.current_name())
        st.toast("Queued the teacher, the scratch student and the KD student.")
    except KDError as err:  # e.g. the store is unreachable: one sentence, never a traceback
        st.error(f"Could not queue the quick start: {err}")

trio = quickstart.latest_trio(store)


def quickstart_progress() -> None:
    records = {}
    for run_id in trio.ids():
        try:
            records[run_id] = store.get(run_id)
        except Exception:  # noqa: BLE001 - deleted meanwhile
            pass
    cols = st.columns(3)
    for col, role, run_id in zip(cols, quickstart.ROLES, trio.ids()):
        record = records.get(run_id)
        with col.container(border=True):
            st.markdown(f"**{quickstart.ROLE_TITLES[role]}**")
            if record is None:
                st.caption("deleted")
                continue
            st.markdown(widgets.status_badge(record.status))
            if record.status.value == "running":
                st.progress(record.progress, text=f"epoch {record.epoch} of {record.spec.epochs}")
            elif record.status.value == "queued" and record.depends_on:
                st.caption(f"waits for the teacher `{record.depends_on}`")
            acc = (record.final or {}).get("test/acc")
            if acc is not None and acc == acc:
                st.metric("test accuracy", f"{acc:.1%}")
            if record.error:
                st.caption(f":red[{record.error}]")
            st.page_link(navigation.page("run"), label="Open the run", icon=":material/open_in_new:",
                         query_params={"run": run_id})
    frame = quickstart.trio_frame(records, trio)
    if len(frame) == 3:
        st.plotly_chart(figures.accuracy_bars(frame, title="Test accuracy of the three runs"),
                        key="quickstart_bars")
        kd, scratch = frame.iloc[2]["accuracy"], frame.iloc[1]["accuracy"]
        st.success(f"With the same 5% of labels, distillation moved the student from {scratch:.1%} to "
                   f"{kd:.1%} test accuracy (the teacher: {frame.iloc[0]['accuracy']:.1%}). "
                   "See why on the Soft labels page.")
        st.page_link(navigation.page("soft_labels"), label="Look at the KD student's soft labels",
                     icon=":material/bar_chart:", query_params={"run": trio.kd})
    if all(r.is_terminal for r in records.values()) and st.session_state.get("quickstart_live"):
        st.session_state["quickstart_live"] = False
        st.rerun(scope="app")  # stop polling once everything has finished


if trio is not None:
    try:
        live = any(not store.get(r).is_terminal for r in trio.ids())
    except Exception:  # noqa: BLE001
        live = False
    st.session_state["quickstart_live"] = live
    st.fragment(run_every=state.LIVE_REFRESH_S if live else None)(quickstart_progress)()

st.subheader("Latest runs")
latest = store.list_runs(limit=8)
if not latest:
    st.info("No run yet: launch the quick start above, or build your own on **New experiment**.")
    st.page_link(navigation.page("new"), label="New experiment", icon=":material/science:")
else:
    frame = tables.runs_frame(latest)
    health = [tables.HEALTH] if frame[tables.HEALTH].astype(bool).any() else []  # only when a run has a warning
    st.dataframe(
        frame[["status", *health, "name", "method", tables.LAST_ACC, "agreement", "duration", "id"]],
        hide_index=True, placeholder="—",
        column_config={tables.LAST_ACC: st.column_config.NumberColumn(format="percent"),
                       "agreement": st.column_config.NumberColumn(format="percent"),
                       tables.HEALTH: widgets.health_column()},
        key="home_latest",
    )
    st.page_link(navigation.page("runs"), label="All runs", icon=":material/monitoring:")
