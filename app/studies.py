"""The Study page's data and figures: the table as a DataFrame, curves with a mean ± std band over seeds,
the swept value against a metric with error bars, parallel coordinates of every run, Optuna's figures, and
the small form that starts a study from an existing run. No Streamlit here."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.figures import PALETTE, _layout, empty_figure, metric_label
from app.tables import differing_fields, flatten
from kdcore.studies import StudySpec, StudyTable
from kdcore.studies.expand import study_runs_tags

SUMMARY_METRICS = {"test_acc": "test accuracy", "val_acc": "validation accuracy", "agreement": "agreement",
                   "kl_to_teacher": "KL to the teacher (ρ=1)", "ece": "ECE"}
_NOT_SWEPT = ("name", "tags", "seed")


@dataclass(frozen=True)
class StudyEntry:
    study_id: str
    name: str
    runs: int


def list_studies(store: Any) -> list[StudyEntry]:
    """Run groups that are studies (their runs carry a study tag), newest first."""
    out = []
    for group in store.sweep_ids():
        runs = store.list_runs(sweep_id=group, limit=1000)
        name = next((study_runs_tags(r.tags)[0] for r in runs if study_runs_tags(r.tags)[0]), None)
        if name:
            out.append(StudyEntry(group, name, len(runs)))
    return out


def table_frame(table: StudyTable) -> pd.DataFrame:
    header, body = table.cells()
    return pd.DataFrame(body, columns=header)


def swept_fields(table: StudyTable) -> list[str]:
    """Spec fields (dotted) that differ between the study's runs, seed excluded."""
    return differing_fields([r.spec for r in table.results], ignore=_NOT_SWEPT)


def runs_frame(table: StudyTable) -> pd.DataFrame:
    """One row per finished run: configuration, seed, the swept fields and the summary metrics."""
    fields = swept_fields(table)
    rows = []
    for r in table.results:
        if not r.finished:
            continue
        flat = flatten(r.spec)
        row = {"configuration": r.label, "seed": r.seed, "run": r.run_id}
        row.update({f: flat.get(f) for f in fields})
        row.update({k: getattr(r.summary, k) for k in SUMMARY_METRICS})
        row["selected_epoch"] = r.summary.selected_epoch
        rows.append(row)
    return pd.DataFrame(rows, columns=["configuration", "seed", "run", *fields, *SUMMARY_METRICS, "selected_epoch"])


def epoch_curves(store: Any, table: StudyTable, metric: str = "val/acc") -> pd.DataFrame:
    """Long table configuration, seed, epoch, value of one epoch metric for every finished run."""
    rows = []
    for r in table.results:
        if r.status not in ("completed", "running"):
            continue
        for p in store.metrics(r.run_id, names=[metric], kind="epoch"):
            rows.append({"configuration": r.label, "seed": r.seed, "epoch": p.epoch, "value": p.value})
    return pd.DataFrame(rows, columns=["configuration", "seed", "epoch", "value"])


def band_figure(curves: pd.DataFrame, metric: str) -> go.Figure:
    """Mean over seeds per configuration and epoch, with a ±1 std band (std over the seeds at that epoch)."""
    if curves.empty:
        return empty_figure("No epoch has finished yet.", title=metric_label(metric))
    fig = go.Figure()
    for i, (label, part) in enumerate(curves.groupby("configuration", sort=False)):
        color = PALETTE[i % len(PALETTE)]
        stats = part.groupby("epoch")["value"].agg(["mean", "std", "count"]).reset_index()
        std = stats["std"].fillna(0.0)
        x = stats["epoch"].tolist()
        fig.add_trace(go.Scatter(x=x + x[::-1], y=(stats["mean"] + std).tolist() + (stats["mean"] - std).tolist()[::-1],
                                 fill="toself", fillcolor=_rgba(color, 0.18), line=dict(width=0), hoverinfo="skip",
                                 showlegend=False, legendgroup=label))
        fig.add_trace(go.Scatter(x=x, y=stats["mean"], mode="lines+markers", name=f"{label} (n={int(stats['count'].max())})",
                                 line=dict(color=color), legendgroup=label,
                                 customdata=np.stack([std, stats["count"]], axis=1),
                                 hovertemplate="%{y:.4f} ± %{customdata[0]:.4f} (n=%{customdata[1]})"))
    _layout(fig, title=f"{metric_label(metric)}: mean ± std over seeds", x_title="epoch", y_title=metric_label(metric))
    fig.update_xaxes(dtick=1 if curves["epoch"].max() <= 20 else None)
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)}, {int(h[2:4], 16)}, {int(h[4:6], 16)}, {alpha})"


def swept_figure(runs: pd.DataFrame, field: str, metric: str = "test_acc") -> go.Figure:
    """The swept field on x, the metric's mean ± std over seeds on y; one line per value of the other fields."""
    if runs.empty or field not in runs:
        return empty_figure("No finished run yet.", title=SUMMARY_METRICS.get(metric, metric))
    others = [c for c in runs.columns if c not in ("configuration", "seed", "run", field, "selected_epoch",
                                                   *SUMMARY_METRICS)]
    groups = [", ".join(f"{c}={row[c]}" for c in others) for _, row in runs.iterrows()] if others else ""
    data = runs.assign(_x=runs[field].map(_display), _group=groups)
    fig = go.Figure()
    for i, (group, part) in enumerate(data.groupby("_group", sort=False)):
        stats = part.groupby("_x", sort=False)[metric].agg(["mean", "std", "count"]).reset_index()
        numeric = pd.to_numeric(stats["_x"], errors="coerce")
        if numeric.notna().all():
            stats = stats.assign(_x=numeric).sort_values("_x")
        fig.add_trace(go.Scatter(
            x=stats["_x"], y=stats["mean"], mode="lines+markers", name=group or metric,
            error_y=dict(type="data", array=stats["std"].fillna(0.0), visible=True),
            line=dict(color=PALETTE[i % len(PALETTE)]), showlegend=bool(group)))
    _layout(fig, title=f"{SUMMARY_METRICS.get(metric, metric)} against {field} (mean ± std over seeds)",
            x_title=field, y_title=SUMMARY_METRICS.get(metric, metric))
    if field.endswith("rho") and pd.to_numeric(data["_x"], errors="coerce").gt(0).all():
        fig.update_xaxes(type="log")
    return fig


def _display(value: Any) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def parcoords_figure(runs: pd.DataFrame, metric: str = "test_acc") -> go.Figure:
    """Every finished run as a line through the swept fields, seed and metrics, coloured by `metric`."""
    if runs.empty:
        return empty_figure("No finished run yet.", title="Parallel coordinates")
    dims = []
    for col in [c for c in runs.columns if c not in ("configuration", "run", "selected_epoch")]:
        series = runs[col]
        numeric = pd.to_numeric(series, errors="coerce")
        if numeric.isna().all() and series.isna().all():
            continue  # a metric no run has (e.g. KL to the teacher in a study without one)
        if numeric.notna().all() and not series.map(lambda v: isinstance(v, bool)).any():
            dims.append(dict(label=SUMMARY_METRICS.get(col, col), values=numeric))
        else:
            text = series.map(lambda v: "—" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
            cats = list(dict.fromkeys(text))
            dims.append(dict(label=col, values=text.map(cats.index), tickvals=list(range(len(cats))),
                             ticktext=[c[:18] for c in cats]))
    color = pd.to_numeric(runs[metric], errors="coerce").fillna(0.0)
    fig = go.Figure(go.Parcoords(line=dict(color=color, colorscale="Viridis", showscale=True,
                                           colorbar=dict(title=SUMMARY_METRICS.get(metric, metric))),
                                 dimensions=dims))
    fig.update_layout(height=400, margin=dict(l=60, r=40, t=100, b=20),
                      title=dict(text=f"Every run, coloured by {SUMMARY_METRICS.get(metric, metric)}", x=0))
    return fig


# ---- Optuna ------------------------------------------------------------------------------------------

def search_figures(optuna_study: Any) -> dict[str, go.Figure]:
    """Optuna's own figures for a search: optimisation history, and parameter importances once two
    trials have completed with different parameters."""
    from optuna import visualization as vis
    from optuna.trial import TrialState

    figs = {"history": vis.plot_optimization_history(optuna_study, target_name="validation accuracy")}
    complete = optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) >= 2 and len(optuna_study.best_trial.params) >= 1:
        try:
            figs["importances"] = vis.plot_param_importances(optuna_study, target_name="validation accuracy")
        except (RuntimeError, ValueError):  # all parameters equal so far: nothing to apportion
            pass
    for fig in figs.values():
        fig.update_layout(height=360, margin=dict(l=10, r=10, t=50, b=10))
    return figs


def trials_frame(optuna_study: Any) -> pd.DataFrame:
    rows = []
    for t in optuna_study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": t.state.name.lower(), "validation accuracy": t.value,
                     "epochs reported": len(t.intermediate_values), **t.params,
                     "run": t.user_attrs.get("kd_run_id")})
    return pd.DataFrame(rows)


# ---- starting a study from the dashboard ----------------------------------------------------------------

def parse_values(text: str) -> list[Any]:
    """'1, 2, 4' -> [1, 2, 4]; 'kd, dkd' -> ['kd', 'dkd']; YAML scalars, so true/null/1e-3 work."""
    import yaml

    values = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            try:
                values.append(yaml.safe_load(part))
            except yaml.YAMLError:
                values.append(part)
    return values


def study_from_form(name: str, axes: Mapping[str, str], seeds: int, baseline: bool) -> StudySpec:
    """The StudySpec of the dashboard's form: {field: 'comma-separated values'} crossed, `seeds` seeds."""
    from kdcore.spec import SpecError

    grid = {field.strip(): parse_values(text) for field, text in axes.items() if field and field.strip()}
    empty = [f for f, vs in grid.items() if not vs]
    if empty:
        raise SpecError([f"{empty[0]}: give at least one value, separated by commas"])
    try:
        return StudySpec(name=name.strip() or None, grid=grid, seeds=list(range(int(seeds))), baseline=baseline)
    except Exception as err:  # pydantic's error: one sentence for the page
        raise SpecError([str(err).splitlines()[-1]]) from None


def grid_candidates(spec: Mapping[str, Any]) -> list[str]:
    """Dotted fields of a spec that a grid can vary: scalars (numbers, strings, booleans), not the seed."""
    return [k for k, v in flatten(spec).items() if k not in _NOT_SWEPT and not k.startswith("hints.")
            and (v is None or isinstance(v, (int, float, str, bool)))]


def finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def best_summary(table: StudyTable) -> str | None:
    """One sentence under the table: the best configuration (on validation) and how it compares to scratch."""
    best, base = table.best, table.baseline
    if best is None:
        return None
    text = (f"Best on validation: **{best.label}** — test accuracy {best.test_acc.mean * 100:.2f} %"
            + (f" ± {best.test_acc.std * 100:.2f}" if finite(best.test_acc.std) else "") + f" over {best.test_acc.n} seed(s).")
    d = best.vs_baseline
    if base is not None and d is not None and d.n >= 2:
        verdict = ("the interval excludes 0" if d.excludes_zero else "the interval includes 0: not distinguishable "
                   "from seed noise")
        text += (f" Against {base.label}: {d.mean * 100:+.2f} points, 95 % interval "
                 f"[{d.low * 100:+.2f}, {d.high * 100:+.2f}] over {d.n} paired seeds — {verdict}.")
    return text


def seeds_of(table: StudyTable) -> Sequence[int]:
    return sorted({r.seed for r in table.results})
