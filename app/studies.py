"""The Study page's data and figures: the table as a DataFrame, curves with a mean ± std band over seeds,
the swept value against a metric with error bars, parallel coordinates of every run, Optuna's figures, and
the small form that starts a study from an existing run. No Streamlit here."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.figures import PALETTE, _is_fraction_metric, _layout, empty_figure, metric_label
from app.tables import EPOCH_METRICS, NO_TEACHER, differing_fields, field_label, flatten, method_text
from kdcore.studies import RunResult, StudySpec, StudyTable, build_table, run_result
from kdcore.studies.expand import study_runs_tags
from kdcore.summary import WARNED

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
    """One row per finished run: configuration, seed, the swept fields and the summary metrics (the runs the
    table's means leave out are left out here too)."""
    fields = swept_fields(table)
    rows = []
    for r in table.results:
        if not r.finished or r.run_id in table.left_out:
            continue
        flat = flatten(r.spec)
        row = {"configuration": r.label, "seed": r.seed, "run": r.run_id}
        row.update({f: flat.get(f) for f in fields})
        row.update({k: getattr(r.summary, k) for k in SUMMARY_METRICS})
        row["selected_epoch"] = r.summary.selected_epoch
        rows.append(row)
    return pd.DataFrame(rows, columns=["configuration", "seed", "run", *fields, *SUMMARY_METRICS, "selected_epoch"])


def curve_columns(x: str = "epoch") -> list[str]:
    """The columns of what `band_figure` averages: one point of one run, against `x`."""
    return ["configuration", "seed", x, "value", "warned"]


def epoch_curves(store: Any, table: StudyTable, metric: str = "val/acc") -> pd.DataFrame:
    """Long table configuration, seed, epoch, value, warned of one epoch metric for every finished run (but
    those the table's means leave out)."""
    rows = []
    for r in table.results:
        if r.status not in ("completed", "running") or r.run_id in table.left_out:
            continue
        for p in store.metrics(r.run_id, names=[metric], kind="epoch"):
            rows.append({"configuration": r.label, "seed": r.seed, "epoch": p.epoch, "value": p.value,
                         "warned": r.warned})
    return pd.DataFrame(rows, columns=curve_columns())


def band_figure(curves: pd.DataFrame, metric: str, *, x: str = "epoch", title: str | None = None,
                height: int | None = None) -> go.Figure:
    """Mean over seeds per configuration and `x` value (the epoch, or the step for a step metric), with a
    ±1 std band (std over the runs at that point); the legend counts the runs, and those with a training
    warning ("n=5, 1 ⚠")."""
    if curves.empty:
        return empty_figure("No epoch has finished yet." if x == "epoch" else "No point logged yet.",
                            title=metric_label(metric))
    fig = go.Figure()
    for i, (label, part) in enumerate(curves.groupby("configuration", sort=False)):
        color = PALETTE[i % len(PALETTE)]
        stats = part.groupby(x)["value"].agg(["mean", "std", "count"]).reset_index()
        warned = int(part.groupby(x)["warned"].sum().max())
        std = stats["std"].fillna(0.0)
        xs = stats[x].tolist()
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=(stats["mean"] + std).tolist() + (stats["mean"] - std).tolist()[::-1],
                                 mode="lines", fill="toself", fillcolor=_rgba(color, 0.18), line=dict(width=0),
                                 hoverinfo="skip",  # the band's outline only: no marker at its corners
                                 showlegend=False, legendgroup=label))
        fig.add_trace(go.Scatter(x=xs, y=stats["mean"], mode="lines+markers" if len(xs) <= 60 else "lines",
                                 name=f"{label} (n={int(stats['count'].max())}"
                                      + (f", {warned} {WARNED})" if warned else ")"),
                                 line=dict(color=color), legendgroup=label,
                                 customdata=np.stack([std, stats["count"]], axis=1),
                                 hovertemplate="%{y:.4f} ± %{customdata[0]:.4f} (n=%{customdata[1]})"))
    _layout(fig, title=title or f"{metric_label(metric)}: mean ± std over seeds", x_title=x,
            y_title=metric_label(metric), **({"height": height} if height else {}))
    if x == "epoch":
        fig.update_xaxes(dtick=1 if curves["epoch"].max() <= 20 else None)
    if _is_fraction_metric(metric):  # accuracies as percentages, on an honest range
        fig.update_yaxes(tickformat=".0%")
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
            + (f" ± {best.test_acc.std * 100:.2f}" if finite(best.test_acc.std) else "") + f" over {best.test_acc.n} seed(s)"
            + (_warned_clause(best.warned, table.exclude_warned) if best.warned else "") + ".")
    d = best.vs_baseline
    if base is not None and d is not None and d.n >= 2:
        verdict = ("the interval excludes 0" if d.excludes_zero else "the interval includes 0: not distinguishable "
                   "from seed noise")
        text += (f" Against {base.label}: {d.mean * 100:+.2f} points, 95 % interval "
                 f"[{d.low * 100:+.2f}, {d.high * 100:+.2f}] over {d.n} paired seeds — {verdict}.")
    return text


def _warned_clause(warned: int, excluded: bool) -> str:
    runs = "1 run" if warned == 1 else f"{warned} runs"
    return f", {runs} with a training warning left out" if excluded else f", {runs} with a training warning ({WARNED}) among them"


EXCLUDE_WARNED = f"Leave runs with a training warning ({WARNED}) out of the means"
EXCLUDE_WARNED_HELP = ("A run whose student stopped learning (or that raised another training warning) says nothing "
                       "about its method. Off: it counts in the means and each row says how many such runs it holds. "
                       "On: the means, intervals and the best row are taken over the other runs.")


def seeds_of(table: StudyTable) -> Sequence[int]:
    return sorted({r.seed for r in table.results})


# ---- grouping any runs (Runs and Compare): the study table and band figure over the groups -----------------

NO_GROUP = "none"
TAG = "tag"
# Groups read from a run rather than one spec field: how the Runs table shows them.
def method_name(record: Any) -> str:
    """The run's method without its settings ("FitNets + KD", not "FitNets + KD ρ=4"): settings group apart."""
    from kdcore.methods import get_method

    spec = record.spec
    if spec.teacher is None:
        return method_text(record)
    presets = sorted({h.preset or "custom hint" for h in spec.hints})
    return " + ".join(presets + [get_method(p.method).short for p in [*spec.losses, spec.logit]])


DERIVED_GROUPS = {"method": method_name, "student": lambda r: r.spec.student,
                  "teacher": lambda r: r.teacher_label or "no teacher", "dataset": lambda r: r.spec.dataset.name}
NO_TEACHER_GROUP = "no teacher"
_TEACHER_FIELDS = ("logit.", "teacher.", "hints.", "losses.")  # settings of distillation itself
_COVERED = {"student", "dataset.name", "teacher.source", "teacher.run_id", "teacher.model", "logit.method"}


def group_keys(records: Sequence[Any]) -> list[str]:
    """What the runs can be grouped by: the method, student, teacher, dataset, a tag, then every spec field
    (dotted) whose value differs between `records` (the seed, name and tags excepted)."""
    fields = differing_fields([r.spec.to_dict() for r in records], ignore=_NOT_SWEPT) if len(records) > 1 else []
    return [NO_GROUP, *DERIVED_GROUPS, TAG, *[f for f in fields if f not in _COVERED]]


def group_key_label(key: str) -> str:
    return {NO_GROUP: "no grouping", TAG: "tag (a run with several is in each)"}.get(key, field_label(key))


def group_values(record: Any, key: str) -> list[str]:
    """The group(s) a run falls in under `key`: one value, except for tags (one group per tag)."""
    if key == TAG:
        return list(record.tags) or ["(no tag)"]
    if key in DERIVED_GROUPS:
        return [str(DERIVED_GROUPS[key](record))]
    if record.spec.teacher is None and key.startswith(_TEACHER_FIELDS):
        return [NO_TEACHER_GROUP]  # a run without a teacher has no ρ to speak of: its default would mislead
    value = flatten(record.spec.to_dict()).get(key)
    return [_value_text(value)]


def _value_text(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _order(value: str) -> tuple:
    """Groups in a readable order: runs without a teacher first, then numbers ascending, then text."""
    if value in (NO_TEACHER_GROUP, NO_TEACHER):
        return (0, 0.0, "")
    try:
        return (1, float(value), "")
    except ValueError:
        return (2, 0.0, value.casefold())


def group_label(key: str, value: str) -> str:
    return value if key in (TAG, "method") or value == NO_TEACHER_GROUP else f"{field_label(key)} = {value}"


def grouped_results(records: Sequence[Any], summaries: Mapping[str, Any], key: str) -> list[RunResult]:
    """Each run as a member of its group(s) under `key`, with its summary (`summaries`: run id -> RunSummary
    or None). A group counts as the scratch baseline only when every run in it learned without a teacher."""
    members = sorted(((value, r) for r in records for value in group_values(r, key)), key=lambda m: _order(m[0]))
    results = [run_result(r, summaries.get(r.id), key=value, label=group_label(key, value)) for value, r in members]
    scratch = {}
    for res in results:
        scratch[res.config_key] = scratch.get(res.config_key, True) and res.is_baseline
    return [replace(res, is_baseline=scratch[res.config_key]) for res in results]


def grouped_table(records: Sequence[Any], summaries: Mapping[str, Any], key: str,
                  selection: str = "best-val", *, exclude_warned: bool = False) -> StudyTable:
    """The study table over arbitrary runs grouped by `key`: one row per group, mean ± std over its runs
    (seeds) at the epoch validation selected, the best group on validation, Δ against a scratch group;
    runs with a training warning counted in each row, or left out of the means (`exclude_warned`)."""
    return build_table("runs", grouped_results(records, summaries, key), selection, name=group_key_label(key),
                       exclude_warned=exclude_warned)


def grouped_frame(table: StudyTable, key: str) -> pd.DataFrame:
    """The grouped table for a page: the study table's cells, its first column named after the grouping;
    columns no group has a value in (agreement among runs without a teacher, say) are left out."""
    frame = table_frame(table).rename(columns={"configuration": field_label(key) if key != TAG else "tag"})
    empty = [c for c in frame.columns[1:] if (frame[c] == "—").all()]
    return frame.drop(columns=empty)


def group_curves(records: Sequence[Any], frames: Mapping[str, pd.DataFrame], key: str, metric: str,
                 x: str = "epoch", left_out: Iterable[str] = ()) -> pd.DataFrame:
    """Long table configuration, seed, `x`, value, warned of one metric for every run in `frames` (run id ->
    its metric frame) but those `left_out` (a grouped table's), each run under its group label(s): what
    `band_figure` averages."""
    parts = []
    skip = set(left_out)
    for r in records:
        frame = frames.get(r.id) if r.id not in skip else None
        if frame is None or not len(frame):
            continue
        points = frame[frame["name"] == metric]
        if not len(points):
            continue
        if x == "epoch" and metric not in EPOCH_METRICS:  # a step metric per epoch: its epoch mean
            points = points.groupby("epoch", as_index=False)["value"].mean()
        for value in group_values(r, key):
            parts.append((value, pd.DataFrame({"configuration": group_label(key, value), "seed": r.spec.seed,
                                               x: points[x].to_numpy(), "value": points["value"].to_numpy(),
                                               "warned": bool(r.warnings)})))
    if not parts:
        return pd.DataFrame(columns=curve_columns(x))
    parts.sort(key=lambda part: _order(part[0]))  # the groups in the grouped table's order
    return pd.concat([frame for _, frame in parts], ignore_index=True)
