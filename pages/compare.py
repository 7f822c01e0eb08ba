"""Compare: overlay a metric of several runs or of a sweep (or, grouped by a field or tag, each group's mean in a
± std band), their specs side by side (differences highlighted), their final metrics (per group when grouped)
and, for a sweep, the swept value against accuracy and agreement."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import figures, state, studies, tables, teachers, widgets

store = state.get_store()
S = st.session_state

st.title("Compare")
records = store.list_runs(limit=500)
if not records:
    st.info("Nothing to compare yet: launch a few runs first.")
    st.stop()
by_id = {r.id: r for r in records}
labels_all = tables.mark_warned({r.id: f"{r.name} · {r.status.value} · {r.id}" for r in records}, records)

sweeps = store.sweep_ids()
mode = "Runs"
if sweeps:
    mode = st.segmented_control("Compare", ["Runs", "A sweep"], default="Runs", key="compare_mode",
                                persist_state="session", required=True)
sweep_field = None
if mode == "A sweep" and sweeps:
    sweep_id = st.selectbox("Sweep", sweeps, format_func=lambda sid: tables.sweep_label(records, sid),
                            key="compare_sweep")
    chosen = tables.sweep_members(records, sweep_id)
    fields = tables.differing_fields([r.spec.to_dict() for r in chosen])
    sweep_field = fields[0] if fields else None
else:
    if "compare_runs" not in S:
        S["compare_runs"] = tables.default_compare_selection(records, st.query_params.get("runs"))
    S["compare_runs"] = [i for i in S["compare_runs"] if i in by_id]
    st.multiselect("Runs", list(by_id), format_func=labels_all.get, key="compare_runs", persist_state="session")
    chosen = [by_id[i] for i in S["compare_runs"]]

if not chosen:
    st.info("Pick at least one run.")
    st.stop()

labels = tables.mark_warned(tables.run_labels(chosen), chosen)  # "⚠ " before a run whose trainer warned
run_frames = {r.id: state.metrics_frame(store, r) for r in chosen}
frame = tables.combined_metrics((labels[r.id], run_frames[r.id]) for r in chosen)
group_keys = studies.group_keys(chosen)
widgets.keep_valid("compare_group", group_keys)
group = st.selectbox("Group by", group_keys, format_func=studies.group_key_label, key="compare_group",
                     help="Runs with the same value (the seeds of one setting) become one curve: their mean, with a "
                          "± std band, and one row of the table below.")
grouped = group != studies.NO_GROUP
group_table = None
if grouped:
    exclude = widgets.exclude_warned(any(r.warnings for r in chosen), "compare_exclude_warned")
    group_table = studies.grouped_table(chosen, state.run_summaries(store, chosen), group, exclude_warned=exclude)


def draw(metric: str, x: str, smoothing: float, log_y: bool, height: int | None = None):
    """One metric of the chosen runs: a line per run, or per group a mean line in a ± std band."""
    if not grouped:
        return figures.overlay_figure(tables.overlay_data(frame, metric, x), metric, x=x, smoothing=smoothing,
                                      log_y=log_y, **({"height": height} if height else {}))
    curves = studies.group_curves(chosen, run_frames, group, metric, x=x, left_out=group_table.left_out)
    fig = studies.band_figure(curves, metric, x=x,
                              title=f"{figures.metric_label(metric)}: mean ± std per group", height=height)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


names = sorted(frame["name"].unique()) if len(frame) else []
c1, c2, c3 = st.columns([3, 2, 2])  # "Log y" sits under the smoothing: a fourth column hides its label at 800 px
if names:
    if S.get("compare_metric") not in names:
        S["compare_metric"] = tables.default_metric(names)
    metric = c1.selectbox("Metric", names, format_func=lambda n: f"{figures.metric_label(n)} ({n})",
                          key="compare_metric")
    default_x = tables.x_axis_for([metric])
    # A group's runs are averaged point by point: at the same step or epoch, not at the same second.
    axes = [a for a in tables.X_AXES if not (grouped and a == tables.WALL_TIME)]
    x = c2.radio("x axis", axes, index=axes.index(default_x), horizontal=True,
                 key=f"compare_x_{metric}" + ("_grouped" if grouped else ""),
                 help="Wall time: seconds since each run's first point.")
    smoothing = c3.slider("Smoothing", 0.0, 0.99, 0.0 if x == "epoch" else 0.6, 0.01, key=f"compare_smooth_{x}",
                          disabled=grouped, help="Grouped curves are drawn as logged: the band shows the spread.")
    log_y = c3.toggle("Log y", key="compare_log_y", help="A logarithmic y axis, for losses over orders of magnitude.")
    st.plotly_chart(draw(metric, x, smoothing, log_y), key="compare_overlay")
    # A panel grid: more metrics at once, each against its own axis, two to a row.
    more = st.multiselect("More metrics side by side", [n for n in names if n != metric],
                          format_func=figures.metric_label, key="compare_more", placeholder="none")
    for row in range(0, len(more), 2):
        cols = st.columns(2)
        for col, name in zip(cols, more[row:row + 2]):
            panel_x = tables.x_axis_for([name])
            col.plotly_chart(draw(name, panel_x, smoothing if panel_x == "step" else 0.0, log_y, height=300),
                             key=f"compare_panel_{name}")
else:
    st.info("The chosen runs have not logged any metric yet.")

if sweep_field is not None:
    st.subheader(f"Sweep over {sweep_field}")
    sweep_data = tables.sweep_frame(chosen, sweep_field)
    st.plotly_chart(figures.sweep_figure(sweep_data.dropna(subset=["test_acc"]), sweep_field), key="compare_sweep_fig")
    st.dataframe(sweep_data, hide_index=True, key="compare_sweep_table", placeholder="—",
                 column_config={"test_acc": st.column_config.NumberColumn("final test acc", format="percent"),
                                "agreement": st.column_config.NumberColumn(format="percent")})

st.subheader("Final metrics")
if grouped:
    widgets.seed_table(group_table, studies.grouped_frame(group_table, group), "compare_grouped",
                       "Per group: mean ± std over its runs at the epoch with the best validation accuracy; "
                       "n = finished runs / runs; ★ = best group on validation accuracy.")
final = tables.final_metrics_table(chosen, labels)
if len(final):
    percent = st.column_config.NumberColumn(format="percent")
    st.dataframe(final, key="compare_final", placeholder="—",
                 column_config={"run": st.column_config.TextColumn(width="large"),
                                tables.HEALTH: widgets.health_column(),
                                **{c: percent for c in ("test acc", "val acc", "agreement", "teacher acc")},
                                "KL to teacher (ρ=1)": st.column_config.NumberColumn(format="%.3f"),
                                "ECE": st.column_config.NumberColumn(format="%.3f")})
else:
    st.caption("No run has finished an epoch yet.")

st.subheader("Specs side by side")
only_diff = st.toggle("Only the fields that differ", value=len(chosen) > 1, key="compare_only_diff")
specs = {labels[r.id]: r.spec.to_dict() for r in chosen}
comparison = tables.spec_comparison(specs, only_differences=only_diff)
if len(comparison) == 0:
    st.caption("The specs are identical (apart from nothing at all).")
else:
    differs = comparison["differs"]
    shown = comparison.drop(columns=["differs"])

    def highlight(row: pd.Series) -> list[str]:
        style = "background-color: rgba(255, 196, 0, 0.28); font-weight: 600" if differs[row.name] else ""
        return [style] * len(row)

    st.dataframe(shown.style.apply(highlight, axis=1), key="compare_specs",
                 height=min(38 + 35 * len(shown), 700), placeholder="—")
    if len(chosen) > 1:
        st.caption(f"{int(differs.sum())} field(s) differ (highlighted).")

# Runs linked teacher → student (a teacher-assistant chain, born-again generations): link by link.
for i, chain in enumerate(teachers.chains(chosen)):
    st.subheader(f"Teacher chain of {len(chain)}: " + " → ".join(r.spec.student for r in chain))
    chain_table = teachers.chain_frame(chain)
    st.dataframe(chain_table, hide_index=True, key=f"chain_table_{i}",
                 column_config={"test accuracy": st.column_config.NumberColumn(format="percent"),
                                "agreement with its teacher": st.column_config.NumberColumn(format="percent")})
    st.plotly_chart(teachers.chain_figure(chain_table), key=f"chain_figure_{i}")
