"""Every chart of the dashboard: functions that take pandas DataFrames and return plotly figures.

No Streamlit here, so each figure is unit-tested on plain data (tests/test_figures.py)."""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

# Human names for the metrics the trainer logs; anything else is shown as logged.
METRIC_LABELS = {
    "loss/total": "total loss",
    "loss/hard": "hard-label loss (α·CE)",
    "loss/soft": "soft-label loss (β·ρ²·D)",
    "loss/logit_mse": "logit MSE",
    "loss/tckd": "DKD target-class loss",
    "loss/nckd": "DKD non-target loss",
    "train/loss": "train loss (epoch)",
    "train/acc": "train accuracy",
    "val/acc": "validation accuracy",
    "test/acc": "test accuracy",
    "teacher/test_acc": "teacher test accuracy",
    "fidelity/agreement": "teacher–student agreement",
    "fidelity/kl_rho1": "KL(teacher ‖ student) at ρ=1",
    "fidelity/kl_rho": "KL(teacher ‖ student) at the run's ρ",
    "calib/ece_student": "student calibration error (ECE)",
    "calib/ece_teacher": "teacher calibration error (ECE)",
    "lr": "learning rate",
    "throughput": "throughput (images/s)",
    "gpu_mem_mb": "peak GPU memory (MiB)",
    "epoch_time": "epoch time (s)",
}

PALETTE = ["#EF553B", "#636EFA", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880"]
TEACHER_COLOR = "#636EFA"
STUDENT_COLOR = "#EF553B"
_HEIGHT = 340


_HINT_LOSS = re.compile(r"^loss/hint/?(\d+)(?:_(\w+))?$")


def metric_label(name: str) -> str:
    """A metric's name in words: `loss/hint0_l2` reads "hint loss, pair 1 (l2)", another `loss/x` "x loss"."""
    if name in METRIC_LABELS:
        return METRIC_LABELS[name]
    hint = _HINT_LOSS.match(name)
    if hint:
        pair, kind = int(hint.group(1)) + 1, hint.group(2)
        return f"hint loss, pair {pair}" + (f" ({kind.replace('_', ' ')})" if kind else "")
    if name.startswith("loss/"):
        return f"{name[5:].replace('_', ' ')} loss"
    return name


def _layout(fig: go.Figure, *, title: str | None, x_title: str | None, y_title: str | None,
            height: int = _HEIGHT) -> go.Figure:
    # The legend goes under the x axis: beside the plot long run names squeeze it to nothing, and above
    # it a legend that wraps to two rows runs into the title. Plotly grows the bottom margin to fit it.
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left") if title else None,
        height=height,
        margin=dict(l=10, r=10, t=50 if title else 20, b=10),
        legend=dict(orientation="h", yanchor="top", y=-0.28, xanchor="left", x=0, title=None),
        hovermode="x unified",
        uirevision=title or "chart",  # a refresh keeps the user's zoom and hidden legend entries
        modebar=dict(orientation="v"),  # the toolbar down the right edge, clear of the title
    )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return fig


def log_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Ticks for a log axis from low to high at 1, 2, 5 × 10^k, written in full ("0.5", "20"): plotly's
    own minor labels read "5" for 0.5 and "2" for 20."""
    if not (low > 0 and high >= low):
        return [], []
    values = [m * 10.0 ** k for k in range(int(np.floor(np.log10(low))) - 1, int(np.ceil(np.log10(high))) + 1)
              for m in (1, 2, 5)]
    values = [v for v in values if low / 1.0001 <= v <= high * 1.0001]
    return values, [f"{v:g}" for v in values]


def fraction_range(values: Sequence[float]) -> list[float] | None:
    """A y range for fractions (0..1) that is honest about small data: never beyond [0, 1], and a single
    value or a flat curve gets a few points either side instead of plotly's ±50%."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if len(v) == 0:
        return None
    low, high = float(v.min()), float(v.max())
    pad = max(0.02, 0.1 * (high - low))
    return [max(0.0, low - pad), min(1.0, high + pad) + (0.005 if high + pad >= 1 else 0.0)]


def empty_figure(message: str, *, title: str | None = None, height: int = _HEIGHT) -> go.Figure:
    """A blank chart that says why it is blank, instead of bare axes."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="gray"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=dict(text=title, x=0) if title else None, height=height,
                      margin=dict(l=10, r=10, t=60 if title else 30, b=10))
    return fig


def smooth(values: Sequence[float], weight: float) -> np.ndarray:
    """TensorBoard-style exponential moving average with bias correction; weight 0 = raw values."""
    v = np.asarray(values, dtype=float)
    if weight <= 0 or len(v) == 0:
        return v
    weight = min(float(weight), 0.999)
    out = np.empty_like(v)
    acc, norm = 0.0, 0.0
    for i, x in enumerate(v):
        if np.isnan(x):
            out[i] = np.nan
            continue
        acc = weight * acc + (1 - weight) * x
        norm = weight * norm + (1 - weight)
        out[i] = acc / norm
    return out


def curves_figure(frame: pd.DataFrame, names: Sequence[str] | None = None, *, x: str = "step",
                  smoothing: float = 0.0, title: str | None = None, y_title: str | None = None,
                  log_y: bool = False, percent: bool = False, from_zero: bool = False) -> go.Figure:
    """Metric curves of one run from a long frame (columns step, epoch, name, value): one line per name.

    With smoothing, the smoothed line is drawn over a faint raw line, as in TensorBoard."""
    if names is None:
        names = sorted(frame["name"].unique()) if len(frame) else []
    data = frame[frame["name"].isin(list(names))] if len(frame) else frame
    if data is None or len(data) == 0:
        return empty_figure("No points yet", title=title)
    fig = go.Figure()
    for i, name in enumerate(n for n in names if n in set(data["name"])):
        series = data[data["name"] == name].sort_values(x)
        color = PALETTE[i % len(PALETTE)]
        y = series["value"].to_numpy()
        mode = "lines+markers" if len(series) <= 30 else "lines"
        if smoothing > 0 and len(series) > 1:
            fig.add_trace(go.Scatter(x=series[x], y=y, mode="lines", line=dict(color=color, width=1),
                                     opacity=0.25, showlegend=False, hoverinfo="skip", name=metric_label(name)))
            y = smooth(y, smoothing)
        fig.add_trace(go.Scatter(x=series[x], y=y, mode=mode, name=metric_label(name), line=dict(color=color)))
    shown = [n for n in names if n in set(data["name"])]
    if len(shown) == 1:  # one line: its name goes on the axis, not in a legend
        y_title = y_title or metric_label(shown[0])
    _layout(fig, title=title, x_title=x, y_title=y_title)
    fig.update_layout(showlegend=len(shown) > 1)
    _integer_epochs(fig, data, x)
    if log_y:
        fig.update_yaxes(type="log")
    if percent:
        fig.update_yaxes(tickformat=".0%", range=fraction_range(data["value"]))
    if from_zero:  # a learning rate of 0.0029995 vs 0.003 is not a cliff
        fig.update_yaxes(rangemode="tozero")
    return fig


def overlay_figure(frame: pd.DataFrame, metric: str, *, x: str = "step", smoothing: float = 0.0,
                   percent: bool | None = None, log_y: bool = False, height: int = _HEIGHT) -> go.Figure:
    """One metric of several runs overlaid: frame columns run (a label), the x column, name, value.
    `log_y` draws the y axis on a log scale (losses over orders of magnitude)."""
    data = frame[frame["name"] == metric] if len(frame) else frame
    title = metric_label(metric)
    if len(data) == 0:
        return empty_figure(f"No run has logged {title} yet", title=title)
    fig = go.Figure()
    groups = list(data.groupby("run", sort=False))
    markers = max(len(g) for _, g in groups) <= 30  # the same style for every run
    for i, (run, series) in enumerate(groups):
        series = series.sort_values(x)
        y = smooth(series["value"].to_numpy(), smoothing) if smoothing > 0 else series["value"]
        fig.add_trace(go.Scatter(x=series[x], y=y, mode="lines+markers" if markers else "lines", name=str(run),
                                 line=dict(color=PALETTE[i % len(PALETTE)])))
    _layout(fig, title=title, x_title=x, y_title=title, height=height)
    _integer_epochs(fig, data, x)
    if log_y:
        fig.update_yaxes(type="log")
    elif percent if percent is not None else _is_fraction_metric(metric):
        fig.update_yaxes(tickformat=".0%", range=None if smoothing > 0 else fraction_range(data["value"]))
    return fig


def _integer_epochs(fig: go.Figure, data: pd.DataFrame, x: str) -> None:
    """Epochs are whole numbers: no tick at epoch 1.5."""
    if x == "epoch" and len(data):
        last = int(pd.to_numeric(data["epoch"], errors="coerce").max())
        fig.update_xaxes(tick0=0, dtick=max(1, -(-last // 10)))


def _is_fraction_metric(name: str) -> bool:
    return name.endswith("/acc") or name.endswith("acc") or name == "fidelity/agreement"


def sweep_figure(frame: pd.DataFrame, field: str) -> go.Figure:
    """A sweep's swept value against final test accuracy and agreement: frame columns value, test_acc, agreement."""
    title = f"Final accuracy and agreement against {field}"
    if len(frame) == 0:
        return empty_figure("No run of this sweep has finished yet", title=title)
    data = frame.copy()
    numeric = pd.to_numeric(data["value"], errors="coerce")
    categorical = numeric.isna().any()
    data = data.assign(_x=data["value"].astype(str) if categorical else numeric).sort_values("_x")
    fig = go.Figure()
    for column, label, color in (("test_acc", "test accuracy", STUDENT_COLOR), ("agreement", "agreement", TEACHER_COLOR)):
        if column in data and data[column].notna().any():
            fig.add_trace(go.Scatter(x=data["_x"], y=data[column], mode="lines+markers", name=label,
                                     line=dict(color=color)))
    _layout(fig, title=title, x_title=field, y_title="fraction")
    fig.update_yaxes(tickformat=".0%")
    if not categorical and (numeric > 0).all() and numeric.max() / max(numeric.min(), 1e-12) >= 8:
        tickvals, ticktext = log_ticks(float(numeric.min()), float(numeric.max()))
        fig.update_xaxes(type="log", tickvals=tickvals, ticktext=ticktext)
    return fig


def distribution_figure(frame: pd.DataFrame, rho: float, *, title: str | None = None) -> go.Figure:
    """Teacher and student soft labels of one sample side by side: frame columns class, teacher, student."""
    title = title or f"Soft labels at ρ = {rho:g}"
    fig = go.Figure()
    for column, color in (("teacher", TEACHER_COLOR), ("student", STUDENT_COLOR)):
        if column in frame and frame[column].notna().any():
            fig.add_trace(go.Bar(x=frame["class"].astype(str), y=frame[column], name=column, marker_color=color))
    if not fig.data:
        return empty_figure("No logits recorded for this sample", title=title)
    _layout(fig, title=title, x_title="class", y_title="probability")
    fig.update_layout(barmode="group", hovermode="closest")
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[0, 1])
    return fig


def per_class_kl_figure(frame: pd.DataFrame, rho: float) -> go.Figure:
    """Mean KL(teacher ‖ student) per true class: frame columns class, kl."""
    title = f"KL(teacher ‖ student) per true class at ρ = {rho:g}"
    if len(frame) == 0 or frame["kl"].isna().all():
        return empty_figure("No teacher: nothing to compare", title=title)
    fig = go.Figure(go.Bar(x=frame["class"].astype(str), y=frame["kl"], marker_color=STUDENT_COLOR, name="KL"))
    _layout(fig, title=title, x_title="true class", y_title="KL (nats)")
    fig.update_layout(hovermode="closest", showlegend=False)
    fig.update_xaxes(type="category")
    return fig


def class_matrix_figure(matrix: pd.DataFrame, title: str, *, log_color: bool = True) -> go.Figure:
    """Average soft label per true class as a heatmap (rows: true class, columns: class).

    With log_color the colour follows log10 of the probability, so the small off-diagonal
    "dark knowledge" is visible next to the near-1 diagonal; the hover shows the probability."""
    if matrix.size == 0 or np.isnan(matrix.to_numpy()).all():
        return empty_figure("No logits recorded", title=title)
    values = matrix.to_numpy(dtype=float)
    z = np.log10(np.clip(values, 1e-6, 1.0)) if log_color else values
    cols = [str(c) for c in matrix.columns]
    rows = [str(r) for r in matrix.index]
    fig = go.Figure(go.Heatmap(
        z=z, x=cols, y=rows, customdata=values, colorscale="Viridis",
        hovertemplate="true %{y}, class %{x}: %{customdata:.4f}<extra></extra>",
        colorbar=dict(title="log₁₀ p" if log_color else "p", thickness=12),
        zmin=-6 if log_color else 0, zmax=0 if log_color else 1,
    ))
    _layout(fig, title=title, x_title="class", y_title="true class", height=380)
    fig.update_layout(hovermode="closest")
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def entropy_figure(frame: pd.DataFrame, rho: float | None = None) -> go.Figure:
    """Mean soft-label entropy against ρ (log axis): frame columns rho, teacher, student."""
    title = "Entropy of the soft labels against ρ"
    fig = go.Figure()
    for column, color in (("teacher", TEACHER_COLOR), ("student", STUDENT_COLOR)):
        if column in frame and frame[column].notna().any():
            fig.add_trace(go.Scatter(x=frame["rho"], y=frame[column], mode="lines", name=column, line=dict(color=color)))
    if not fig.data:
        return empty_figure("No logits recorded", title=title)
    if rho is not None:  # a trace, not a shape: shapes on a log axis take log10 coordinates
        top = float(np.nanmax(frame[["teacher", "student"]].to_numpy()))
        fig.add_trace(go.Scatter(x=[rho, rho], y=[0, top], mode="lines", name=f"chosen ρ = {rho:g}",
                                 line=dict(color="gray", dash="dot"), hoverinfo="skip"))
    _layout(fig, title=title, x_title="ρ (temperature)", y_title="entropy (bits)")
    tickvals, ticktext = log_ticks(float(frame["rho"].min()), float(frame["rho"].max()))
    fig.update_xaxes(type="log", tickvals=tickvals, ticktext=ticktext)
    return fig


def preview_figure(frame: pd.DataFrame, rho: float) -> go.Figure:
    """The teacher's soft labels of a few samples at ρ, as a heatmap: frame columns sample, class, prob."""
    title = f"Teacher soft labels at ρ = {rho:g}"
    if len(frame) == 0:
        return empty_figure("The teacher has no recorded probe logits", title=title)
    pivot = frame.pivot(index="sample", columns="class", values="prob")
    pivot = pivot.reindex(index=list(dict.fromkeys(frame["sample"])), columns=list(dict.fromkeys(frame["class"])))
    fig = go.Figure(go.Heatmap(
        z=pivot.to_numpy(), x=[str(c) for c in pivot.columns], y=list(pivot.index), colorscale="Blues",
        zmin=0, zmax=1, text=np.round(pivot.to_numpy(), 2), texttemplate="%{text:.2f}",
        hovertemplate="%{y}, class %{x}: %{z:.4f}<extra></extra>", colorbar=dict(title="p", thickness=12),
    ))
    _layout(fig, title=title, x_title="class", y_title=None, height=60 + 40 * len(pivot) + 60)
    fig.update_layout(hovermode="closest")
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def accuracy_bars(frame: pd.DataFrame, *, title: str = "Test accuracy") -> go.Figure:
    """Runs' accuracies side by side: frame columns run, accuracy (0..1), optionally note."""
    if len(frame) == 0:
        return empty_figure("No finished run yet", title=title)
    fig = go.Figure(go.Bar(
        x=frame["run"], y=frame["accuracy"], text=[f"{a:.1%}" for a in frame["accuracy"]], textposition="outside",
        marker_color=[TEACHER_COLOR, "#AAAAAA", STUDENT_COLOR, "#00CC96", "#AB63FA"][: len(frame)] if len(frame) <= 5 else None,
        hovertext=frame["note"] if "note" in frame else None,
    ))
    _layout(fig, title=title, x_title=None, y_title="test accuracy")
    fig.update_layout(showlegend=False, hovermode="closest")
    fig.update_yaxes(range=[0, 1.1], tickformat=".0%")
    return fig


def zoo_figure(frame: pd.DataFrame) -> go.Figure:
    """Parameters against FLOPs per image for the zoo (log-log): frame columns model, family, params, flops."""
    title = "Model zoo: size against compute"
    data = frame.dropna(subset=["params", "flops"]) if len(frame) else frame
    if len(data) == 0:
        return empty_figure("No model measured", title=title)
    fig = go.Figure()
    for family, group in data.groupby("family", sort=True):
        fig.add_trace(go.Scatter(x=group["params"], y=group["flops"], mode="markers", name=str(family),
                                 text=group["model"], marker=dict(size=9),
                                 hovertemplate="%{text}: %{x:,} params, %{y:,} FLOPs<extra></extra>"))
    _layout(fig, title=title, x_title="parameters", y_title="FLOPs per image", height=380)
    fig.update_layout(hovermode="closest")
    # a tick at each power of ten only: plotly's minor log labels read "2" and "5" between 10k and 100k
    fig.update_xaxes(type="log", dtick=1)
    fig.update_yaxes(type="log", dtick=1)
    return fig
