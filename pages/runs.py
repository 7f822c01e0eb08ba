"""Runs: the table of every run: filter, sort, and open one (its view is pages/run.py)."""
from __future__ import annotations

import streamlit as st

from app import auth, navigation, state, tables, widgets

store = state.get_store()
user = auth.require_login()  # the gate again: this page never shows to a visitor who is not signed in
S = st.session_state


def show_table() -> None:
    st.title("Runs")
    mine = st.toggle("Only my runs", key="runs_mine", help=f"Runs launched by {user.name}.")
    owner = user.name if mine else None
    records = store.list_runs(owner=owner, limit=500)
    if not records:
        st.info("No run yet. Launch the quick start on **Home** or build one on **New experiment**.")
        st.page_link(navigation.page("new"), label="New experiment", icon=":material/science:")
        return
    frame = tables.runs_frame(records, state.selected_accuracies(store, records))
    c1, c2, c3, c4, c5 = st.columns([2, 2, 3, 2, 2])
    # "all" fits a narrow filter box, where Streamlit's "Choose options" is cut to "Choo"
    statuses = c1.multiselect("Status", list(tables.STATUSES), key="runs_status", placeholder="all",
                              persist_state="session")
    datasets = c2.multiselect("Dataset", sorted(frame["dataset"].unique()), key="runs_dataset", placeholder="all",
                              persist_state="session")
    text = c3.text_input("Search", key="runs_search", placeholder="name, id, model or method", persist_state="session")
    all_tags = sorted({t for r in records for t in r.tags})
    tags = c4.multiselect("Tags", all_tags, key="runs_tags", placeholder="any", persist_state="session")
    sort = c5.selectbox("Sort", list(tables.SORTS), key="runs_sort", persist_state="session")
    view = tables.filter_runs(frame, statuses=statuses, datasets=datasets, text=text, tags=tags, sort=sort)
    live = any(not r.is_terminal for r in records)

    def table() -> None:
        # Re-read while runs are active so statuses and accuracies move without a click.
        current = view
        if live:
            fresh = store.list_runs(owner=owner, limit=500)
            current = tables.filter_runs(tables.runs_frame(fresh, state.selected_accuracies(store, fresh)),
                                         statuses=statuses, datasets=datasets, text=text, tags=tags, sort=sort)
        st.caption(f"{len(current)} of {len(frame)} runs · select a row to open it")
        event = st.dataframe(
            current.drop(columns=["created"]), hide_index=True, on_select="rerun", selection_mode="single-row",
            key=f"runs_table_{S.get('runs_table_gen', 0)}", placeholder="—",
            column_config={
                "status": st.column_config.TextColumn(width="small"),
                "name": st.column_config.TextColumn(width="medium"),
                tables.LAST_ACC: st.column_config.NumberColumn(format="percent", width="small"),
                tables.SELECTED_ACC: st.column_config.NumberColumn(
                    format="percent", width="small",
                    help="Test accuracy at the epoch with the best validation accuracy (never chosen on test)."),
                "agreement": st.column_config.NumberColumn(format="percent", width="small"),
                "id": st.column_config.TextColumn("id", width="small"),
            },
        )
        rows = event.selection.rows if event is not None else []
        if rows:
            S["runs_table_gen"] = S.get("runs_table_gen", 0) + 1  # back on this page: no stale selection
            navigation.open_run(current.iloc[rows[0]]["id"])

    st.fragment(run_every=state.LIVE_REFRESH_S * 2 if live else None)(table)()
    c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
    labels = widgets.run_options(records)
    choice = c1.selectbox("Open a run", list(view["id"]), format_func=lambda i: labels.get(i, i), key="runs_open_pick")
    if c2.button("Open", key="runs_open", disabled=choice is None):
        navigation.open_run(choice)


if st.query_params.get("run"):  # an older link to a run (/runs?run=<id>) opens its view
    navigation.open_run(st.query_params["run"])
show_table()
