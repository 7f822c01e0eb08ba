"""Studies: a study's table (mean ± std over seeds, selected on validation), its curves with a band over
seeds, the swept value with error bars, every run in parallel coordinates, a search's Optuna figures, and a
form that starts a study from an existing run."""
from __future__ import annotations

import streamlit as st

from app import auth, state, studies, widgets
from kdcore.errors import KDError
from kdcore.studies import study_table, submit_study
from kdcore.studies.search import load_search

store = state.get_store()
user = auth.require_login()
S = st.session_state

st.title("Studies")
entries = studies.list_studies(store)


def start_study_form() -> None:
    records = store.list_runs(limit=200)
    if not records:
        st.info("Launch a run first: a study varies the fields of an existing run's spec.")
        return
    labels = {r.id: f"{r.name} · {r.id}" for r in records}
    with st.form("study_form"):
        base_id = st.selectbox("Start from the spec of", list(labels), format_func=labels.get, key="study_base")
        spec = next(r for r in records if r.id == base_id).spec.to_dict()
        fields = studies.grid_candidates(spec)
        name = st.text_input("Study name", key="study_name", placeholder="e.g. rho on digits")
        c1, c2 = st.columns(2)
        axes = {}
        for i, col in enumerate((c1, c2)):
            field = col.selectbox(f"Field {i + 1}", [""] + fields, key=f"study_field_{i}",
                                  index=(fields.index("logit.rho") + 1) if i == 0 and "logit.rho" in fields else 0)
            values = col.text_input(f"Values {i + 1}", key=f"study_values_{i}", placeholder="1, 2, 4, 8")
            if field:
                axes[field] = values
        c3, c4 = st.columns(2)
        seeds = c3.number_input("Seeds", min_value=1, max_value=20, value=3, key="study_seeds")
        baseline = c4.toggle("Add a scratch baseline", value=spec.get("teacher") is not None, key="study_baseline")
        go = st.form_submit_button("Queue the study", type="primary")
    if go:
        try:
            study = studies.study_from_form(name, axes, int(seeds), baseline)
            new_id = submit_study(auth.as_owner(store), spec, study, owner=auth.current_name())
        except KDError as err:
            st.error(str(err))
            return
        st.query_params["study"] = new_id
        st.rerun()


with st.expander("Start a study", expanded=not entries):
    st.caption("A grid over spec fields × seeds. YAML works too: a `study:` block and "
               "`python -m kdcore study SPEC.yaml` (a `search:` block there runs an Optuna search).")
    start_study_form()
if not entries:
    st.stop()

ids = [e.study_id for e in entries]
names = {e.study_id: f"{e.name} · {e.runs} runs · {e.study_id}" for e in entries}
wanted = st.query_params.get("study")
c1, c2 = st.columns([3, 1])
study_id = c1.selectbox("Study", ids, format_func=names.get, key="study_pick",
                        index=ids.index(wanted) if wanted in ids else 0)
selection = c2.segmented_control("Epoch of each run", ["best-val", "last"], default="best-val", required=True,
                                 key="study_select", help="best-val: the epoch with the best validation accuracy; "
                                 "last: the last epoch. Never chosen on test.")
try:
    table = study_table(store, study_id, selection)
except KDError as err:
    st.error(str(err))
    st.stop()
if widgets.exclude_warned(table.warned, "study_exclude_warned"):
    table = table.with_warned(excluded=True)

summary = studies.best_summary(table)
widgets.seed_table(table, studies.table_frame(table), "study_table",
                   (summary + "  \n" if summary else "") + "Mean ± std over seeds at each run's selected epoch; "
                   "★ = best configuration on validation accuracy; Δ = paired difference to scratch, 95 % t-interval.")
fmt = st.segmented_control("Export", ["markdown", "csv", "latex"], default="markdown", key="study_format",
                           required=True)
st.code(table.format(fmt), language=None)

runs = studies.runs_frame(table)
search = load_search(store, study_id)
tabs = st.tabs(["Curves", "Swept value", "Parallel coordinates", *(["Search"] if search else [])])
with tabs[0]:
    metric = st.selectbox("Metric", ["val/acc", "train/acc", "train/loss", "test/acc"], key="study_curve_metric",
                          help="test/acc is only logged where validation improved and at the last epoch.")
    st.plotly_chart(studies.band_figure(studies.epoch_curves(store, table, metric), metric), key="study_curves")
with tabs[1]:
    fields = studies.swept_fields(table)
    if fields:
        c1, c2 = st.columns(2)
        field = c1.selectbox("Swept field", fields, key="study_field")
        y = c2.selectbox("Metric", list(studies.SUMMARY_METRICS), format_func=studies.SUMMARY_METRICS.get,
                         key="study_metric")
        st.plotly_chart(studies.swept_figure(runs, field, y), key="study_swept")
    else:
        st.info("Every run of this study has the same spec but its seed.")
with tabs[2]:
    st.plotly_chart(studies.parcoords_figure(runs), key="study_parcoords")
if search:
    optuna_study, spec = search
    with tabs[3]:
        done = len(optuna_study.trials)
        st.caption(f"Optuna: TPE sampler, {spec.search.pruner} pruner, {done} of {spec.search.trials} trials "
                   "created; the objective is validation accuracy at the selected epoch.")
        figs = studies.search_figures(optuna_study)
        c1, c2 = st.columns(2)
        c1.plotly_chart(figs["history"], key="study_history")
        if "importances" in figs:
            c2.plotly_chart(figs["importances"], key="study_importances")
        else:
            c2.info("Parameter importances appear once two trials have completed.")
        completed = [t for t in optuna_study.trials if t.value is not None]
        if completed:
            best = optuna_study.best_trial
            st.markdown(f"**Best trial {best.number}**: validation accuracy {best.value:.4f} with "
                        + ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}"
                                    for k, v in best.params.items()))
        st.dataframe(studies.trials_frame(optuna_study), hide_index=True, key="study_trials")
