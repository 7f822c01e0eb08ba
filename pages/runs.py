"""Runs: the table of every run: filter, sort, group (seeds averaged), select several to cancel, delete, tag or
compare them, and open one (its view is pages/run.py)."""
from __future__ import annotations

import streamlit as st

from app import auth, bulk, figures, forms, navigation, state, studies, tables, widgets
from kdcore.summary import WARNED

store = state.get_store()
user = auth.require_login()  # the gate again: this page never shows to a visitor who is not signed in
S = st.session_state
GROUP_METRICS = ("val/acc", "test/acc", "fidelity/agreement", "train/loss")


def grouped_view(records: list, key: str, metric: str) -> None:
    """The shown runs grouped by `key`: the study table (mean ± std over each group's runs) and a curve with
    a ± std band per group."""
    exclude = widgets.exclude_warned(any(r.warnings for r in records), "runs_exclude_warned")
    table = studies.grouped_table(records, state.run_summaries(store, records), key, exclude_warned=exclude)
    widgets.seed_table(table, studies.grouped_frame(table, key), "runs_grouped_table",
                       "Each group's runs (seeds) at the epoch with the best validation accuracy: mean ± std; "
                       "n = finished runs / runs. ★ = best group on validation accuracy"
                       + ("; Δ = paired difference in test accuracy to the runs without a teacher, by seed."
                          if table.baseline else "."))
    frames = state.one_metric_frames(store, records, metric)
    curves = studies.group_curves(records, frames, key, metric, left_out=table.left_out)
    st.plotly_chart(studies.band_figure(curves, metric, title=f"{figures.metric_label(metric)} by "
                                                              f"{studies.group_key_label(key).split(' (')[0]}: "
                                                              "mean ± std"), key="runs_group_curves")


def bulk_bar(chosen: list) -> None:
    """Actions on the selected runs; each goes through the store as the signed-in user."""
    mine = auth.as_owner(store, user)
    bar = st.container(horizontal=True, vertical_alignment="center")
    bar.markdown(f"**{len(chosen)} selected**")
    if len(chosen) == 1 and bar.button("Open", icon=":material/open_in_new:", key="runs_bulk_open"):
        navigation.open_run(chosen[0].id)
    if bar.button("Compare", icon=":material/compare_arrows:", key="runs_bulk_compare"):
        S["compare_runs"] = [r.id for r in chosen]
        navigation.go("compare", runs=",".join(r.id for r in chosen))
    # An action the selection does not allow is disabled, its reason on hover (the store checks again).
    why = {action: bulk.plan(action, chosen, mine.actor).problem for action in bulk.ACTIONS}
    with bar.popover("Tag", icon=":material/sell:", disabled=bool(why["tag"]), help=why["tag"]):
        text = st.text_input("Tags to add (comma-separated)", key="runs_bulk_tags")
        if st.button("Add tags", key="runs_bulk_tag_go"):
            act(mine, "tag", chosen, tags=forms.parse_tags(text))
    if bar.button("Cancel", icon=":material/stop_circle:", key="runs_bulk_cancel", disabled=bool(why["cancel"]),
                  help=why["cancel"] or "Queued runs stop at once; running ones after their current step; finished "
                                        "ones are left."):
        act(mine, "cancel", chosen)
    with bar.popover("Delete", icon=":material/delete:", disabled=bool(why["delete"]), help=why["delete"]):
        st.markdown(f"Delete {len(chosen)} run{'s' if len(chosen) != 1 else ''}, their metrics and files? "
                    "This cannot be undone.")
        if st.button("Delete for good", type="primary", key="runs_bulk_delete_go"):
            act(mine, "delete", chosen)


def act(mine, action: str, chosen: list, **kwargs) -> None:
    ok = widgets.attempt(lambda: S.__setitem__("runs_bulk_done", bulk.apply(mine, action, chosen, **kwargs)))
    if ok:
        S["runs_table_gen"] = S.get("runs_table_gen", 0) + 1  # the changed runs are no longer selected
        st.rerun()


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
    text = c3.text_input("Search", key="runs_search", placeholder="name, id, model, method or notes",
                         persist_state="session")
    all_tags = sorted({t for r in records for t in r.tags})
    tags = c4.multiselect("Tags", all_tags, key="runs_tags", placeholder="any", persist_state="session")
    sort = c5.selectbox("Sort", list(tables.SORTS), key="runs_sort", persist_state="session")
    view = tables.filter_runs(frame, statuses=statuses, datasets=datasets, text=text, tags=tags, sort=sort)
    by_id = {r.id: r for r in records}
    keys = studies.group_keys([by_id[i] for i in view["id"]])
    widgets.keep_valid("runs_group", keys)
    g1, g2 = st.columns([1, 1])
    group = g1.selectbox("Group by", keys, format_func=studies.group_key_label, key="runs_group",
                         help="Runs with the same value (seeds of one setting, say) become one row: mean ± std.")
    if group != studies.NO_GROUP:
        metric = g2.selectbox("Curve", GROUP_METRICS, format_func=figures.metric_label, key="runs_group_metric")
        grouped_view([by_id[i] for i in view["id"]], group, metric)
    live = any(not r.is_terminal for r in records)
    if S.get("runs_bulk_done"):
        st.success(S.pop("runs_bulk_done"))

    def table() -> None:
        # Re-read while runs are active so statuses and accuracies move without a click.
        current, known = view, by_id
        if live:
            fresh = store.list_runs(owner=owner, limit=500)
            known = {r.id: r for r in fresh}
            current = tables.filter_runs(tables.runs_frame(fresh, state.selected_accuracies(store, fresh)),
                                         statuses=statuses, datasets=datasets, text=text, tags=tags, sort=sort)
        shown = list(current["id"])
        if S.get("runs_shown_ids") not in (None, shown):
            # The rows moved (a new run, another order): a selection by position would now point at other
            # runs, so it is cleared rather than kept.
            S["runs_table_gen"] = S.get("runs_table_gen", 0) + 1
        S["runs_shown_ids"] = shown
        st.caption(f"{len(current)} of {len(frame)} runs · tick rows to act on several")
        # No warning among the shown runs: no empty health column either.
        hidden = ["created"] + ([] if current[tables.HEALTH].astype(bool).any() else [tables.HEALTH])
        event = st.dataframe(
            current.drop(columns=hidden), hide_index=True, on_select="rerun", selection_mode="multi-row",
            key=f"runs_table_{S.get('runs_table_gen', 0)}", placeholder="—",
            column_config={
                "status": st.column_config.TextColumn(width="small"),
                tables.HEALTH: widgets.health_column("below the table and in the run's view"),
                "name": st.column_config.TextColumn(width="medium"),
                tables.LAST_ACC: st.column_config.NumberColumn(format="percent", width="small"),
                tables.SELECTED_ACC: st.column_config.NumberColumn(
                    format="percent", width="small",
                    help="Test accuracy at the epoch with the best validation accuracy (never chosen on test)."),
                "agreement": st.column_config.NumberColumn(format="percent", width="small"),
                "notes": st.column_config.TextColumn(width="medium", help="The first line of the run's notes."),
                "id": st.column_config.TextColumn("id", width="small"),
            },
        )
        rows = event.selection.rows if event is not None else []
        chosen = [known[shown[i]] for i in rows if i < len(shown) and shown[i] in known]
        if chosen:
            bulk_bar(chosen)
        warned = tables.warned_runs(known[i] for i in shown if i in known)
        if warned:
            count = len({r.id for r, _ in warned})
            with st.expander(f"{WARNED} {count} of these runs {'carries' if count == 1 else 'carry'} a training warning"):
                for r, sentence in warned:
                    st.markdown(f"**{r.name}** (`{r.id}`)  \n{sentence}")

    st.fragment(run_every=state.LIVE_REFRESH_S * 2 if live else None)(table)()
    c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
    labels = widgets.run_options(records)
    choice = c1.selectbox("Open a run", list(view["id"]), format_func=lambda i: labels.get(i, i), key="runs_open_pick")
    if c2.button("Open", key="runs_open", disabled=choice is None):
        navigation.open_run(choice)


if st.query_params.get("run"):  # an older link to a run (/runs?run=<id>) opens its view
    navigation.open_run(st.query_params["run"])
show_table()
