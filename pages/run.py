"""One run: live curves of every logged metric, the log tail, downloads, its notes and the actions
(rename, tags, cancel, duplicate, delete). Opened from the Runs table as /run?run=<id>."""
from __future__ import annotations

import time

import streamlit as st

from app import auth, forms, live, live_chart, navigation, state, tables, teacher_check, teachers, widgets
from kdcore.errors import KDError

store = state.get_store()
user = auth.require_login()  # the gate again: this page never shows to a visitor who is not signed in
S = st.session_state


def run_actions(record) -> None:
    mine = auth.as_owner(store, user)  # the store refuses every change the user may not make
    # Only the run's owner or an admin may change it: their buttons are disabled for everyone else.
    denied = {action: auth.denial(user, record.owner, action) for action in ("rename", "tag", "cancel", "delete")}
    bar = st.container(horizontal=True)
    c = [bar] * 5
    with c[0].popover("Rename", icon=":material/edit:", disabled=bool(denied["rename"]), help=denied["rename"]):
        new_name = st.text_input("New name", value=record.name, key=f"rename_{record.id}")
        if st.button("Save name", key=f"rename_save_{record.id}") and widgets.attempt(
                lambda: mine.rename(record.id, new_name)):
            st.rerun()
    with c[1].popover("Tags", icon=":material/sell:", disabled=bool(denied["tag"]), help=denied["tag"]):
        new_tags = st.text_input("Tags (comma-separated)", value=", ".join(record.tags), key=f"tags_{record.id}")
        if st.button("Save tags", key=f"tags_save_{record.id}") and widgets.attempt(
                lambda: mine.set_tags(record.id, forms.parse_tags(new_tags))):
            st.rerun()
    cancel = c[2].button("Cancel run", icon=":material/stop_circle:", key="cancel_run",
                         disabled=record.is_terminal or bool(denied["cancel"]),
                         help=denied["cancel"] or "Queued runs stop at once; a running run stops after its current step.")
    if cancel and widgets.attempt(lambda: mine.cancel(record.id)):
        st.toast("Cancellation requested.")
        st.rerun()
    if c[3].button("Duplicate", icon=":material/content_copy:", key="duplicate_run",
                   help="Open New experiment filled in with this run's settings."):
        spec = store.duplicate(record.id)
        for key in [k for k in S.keys() if str(k).startswith("hint_")]:
            del S[key]
        S.update(forms.values_from_spec(spec))
        navigation.go("new")
    with c[4].popover("Delete", icon=":material/delete:", help=denied["delete"],
                      disabled=record.status.value == "running" or bool(denied["delete"])):
        st.markdown("Delete this run, its metrics and its files? This cannot be undone.")
        delete = st.button("Delete for good", type="primary", key="delete_confirm")
        if delete and widgets.attempt(lambda: mine.delete(record.id)):
            navigation.go("runs")


def run_notes(record) -> None:
    """The run's free-text notes (Markdown, line breaks kept), editable by whoever may change the run."""
    denied = auth.denial(user, record.owner, "annotate")
    with st.expander("Notes", expanded=bool(record.notes), icon=":material/edit_note:"):
        if record.notes:
            st.markdown(tables.notes_markdown(record.notes))
            editor = st.popover("Edit notes", icon=":material/edit:", disabled=bool(denied), help=denied)
        else:
            editor = st.container()
        with editor:
            text = st.text_area("Notes (Markdown)", value=record.notes, key=f"notes_{record.id}", height=140,
                                disabled=bool(denied), help=denied,
                                placeholder="What you tried, what you saw, what to do next.")
            if st.button("Save notes", key=f"notes_save_{record.id}", icon=":material/save:",
                         disabled=bool(denied) or text == record.notes) and widgets.attempt(
                    lambda: auth.as_owner(store, user).set_notes(record.id, text)):
                st.rerun()


def show_run(run_id: str) -> None:
    if st.button("All runs", icon=":material/arrow_back:", key="back_to_runs"):
        navigation.go("runs")
    try:
        record = store.get(run_id)
    except KDError as err:
        st.error(f"{err}.")
        return
    run_id = record.id
    st.title(record.name)
    st.markdown(f"{widgets.status_badge(record.status)} {widgets.run_caption(record)}")
    if record.tags:
        st.caption("tags: " + ", ".join(record.tags))
    run_actions(record)
    run_notes(record)
    if record.error:
        st.error(record.error)

    live_key = f"live_{run_id}"

    def live_view() -> None:
        # Every element here keeps its place from one refresh to the next (one status line, four metric
        # tiles, the same chart slots under the same keys): the browser then updates each in place.
        # The smoothing slider is part of it, so moving it redraws the charts, not the whole page.
        smoothing = st.slider("Smoothing of step curves", 0.0, 0.99, 0.6, 0.01, key="smoothing",
                              help="Exponential moving average, as in TensorBoard; the raw curve stays faint behind.")
        current = store.get(run_id)
        data = S[live_key] = live.advance_view(store, run_id, S.get(live_key), current.attempts)

        status = current.status.value
        if status == "running":
            st.progress(current.progress, text=f"epoch {current.epoch} of {current.spec.epochs} · step {current.step}")
        elif status == "queued":
            st.info(f"Waiting for the teacher run `{current.depends_on}` to finish." if current.depends_on
                    else "Waiting in the queue for a worker.")
        else:
            st.caption(f"{status.capitalize()} after epoch {current.epoch} of {current.spec.epochs}, step {current.step}.")
        final = current.final or {}
        tiles = (("test/acc", "test accuracy"), ("val/acc", "validation accuracy"),
                 ("fidelity/agreement", "agreement with teacher"), ("teacher/test_acc", "teacher accuracy"))
        # The newest epoch may not have read the test set (only epochs that improved validation do): then the
        # tile shows the last value there is and says from which epoch.
        earlier = tables.latest_values(data["frame"], [name for name, _ in tiles])
        for col, (name, label) in zip(st.columns(4), tiles):
            value = final.get(name)
            if (value is None or value != value) and name in earlier:
                epoch, value = earlier[name]
                label = f"{label} (epoch {epoch})"
            col.metric(label, f"{value:.1%}" if value is not None and value == value else "—")
        for warning in current.warnings:  # e.g. a student that stopped learning
            st.warning(warning, icon=":material/warning:")
        members = teachers.ensemble_rows(current.info or {})
        if members:  # an ensemble teacher: each member's accuracy beside the ensemble's
            st.dataframe(members, hide_index=True, key="ensemble_members", placeholder=teacher_check.NOT_SCORED,
                         column_config={"test accuracy": st.column_config.NumberColumn(format="percent")})

        frame = data["frame"]
        logged = frame["name"].unique() if frame is not None and len(frame) else []
        on_gpu = "cuda" in str(current.device or "")
        cols = st.columns(2)
        for i, (title, names) in enumerate(tables.chart_slots(logged, has_teacher=current.spec.teacher is not None,
                                                              on_gpu=on_gpu)):
            x = tables.x_axis_for(names) if names else live_chart.x_of(title)
            points = live_chart.curves_data(frame, names, x=x, smoothing=smoothing if x == "step" else 0.0)
            # One series: its name on the y axis, unless the chart's title says it already (a long vertical
            # title taller than the plot pushes the chart's title out of view)
            y_title = (live_chart.metric_label(names[0]) if len(names) == 1
                       and live_chart.metric_label(names[0]).casefold() != title.casefold() else None)
            spec = live_chart.curves_spec(title=title, x=x, y_title=y_title,
                                            percent=title in ("Accuracy", "Teacher–student agreement"),
                                            from_zero=title in tables.FROM_ZERO,
                                            note=None if names else live_chart.waiting_note(title, status))
            cols[i % 2].vega_lite_chart(points, spec, key=f"curve_{title}")
        when = frame["wall_time"].max() if frame is not None and len(frame) else None
        st.caption(f"Latest point: step {data['last']}, written {time.strftime('%H:%M:%S', time.localtime(when))}."
                   if when is not None else "No point yet.")
        if not on_gpu and current.device:
            st.caption(f"No GPU memory curve: this run trains on {current.device}.")
        with st.expander("Log", expanded=status in ("running", "failed")):
            st.code(tables.events_text(data["events"]) or "(no log lines yet)", language=None,
                    height=min(360, 40 + 22 * len(data["events"])))  # a long log scrolls in its box
        if current.status != record.status:
            st.rerun(scope="app")  # started or finished while watching: refresh the header, downloads, polling

    st.fragment(run_every=None if record.is_terminal else state.RUN_VIEW_REFRESH_S)(live_view)()

    files = store.artifacts(run_id)
    st.subheader("Downloads")
    c = st.columns(3)
    # The metrics come from the store, so the CSV holds every plotted series, even while the run trains.
    c[0].download_button("Metrics (CSV)", data=lambda: tables.metrics_csv_text(store, run_id).encode(),
                         file_name=f"{run_id}-metrics.csv", mime="text/csv", key="download_metrics_csv",
                         on_click="ignore", icon=":material/download:",
                         help="Long format: kind (step or epoch), epoch, step, name, value; one row per point.")
    c[1].download_button("Spec (YAML)", data=record.spec.to_yaml(), file_name=f"{run_id}-spec.yaml",
                         mime="application/x-yaml", key="download_spec_yaml", on_click="ignore",
                         icon=":material/download:", help="The spec as stored, with the run's current name and tags.")
    checkpoint = files.get("checkpoint")
    if checkpoint is not None:
        c[2].download_button("Checkpoint (.pt)", data=lambda: checkpoint.read_bytes(),
                             file_name=f"{run_id}-{checkpoint.name}", mime="application/octet-stream",
                             key="download_checkpoint", on_click="ignore", icon=":material/download:")
    with st.expander("Spec"):
        st.code(record.spec.to_yaml(), language="yaml")


run_param = st.query_params.get("run")
if run_param:
    show_run(run_param)
else:
    st.title("Run")
    st.info("No run chosen: open one from the Runs table.")
    st.page_link(navigation.page("runs"), label="Runs", icon=":material/monitoring:")
