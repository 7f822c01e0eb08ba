"""Figures and small tables of the dark-knowledge lab: plain functions from arrays / DataFrames to
plotly figures, no Streamlit (unit-tested in tests/test_lab_app.py).

Figures are assembled as plain dicts and built once with validation off: plotly's property-by-property
API (update_layout, add_vline, ...) costs tens of milliseconds per figure, too slow for a ρ slider that
must answer in well under 300 ms. The unit tests re-validate every figure, so a typo still fails there."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from kdcore.lab.softlabels import effective_classes, soften

TEACHER_COLOR = "#636EFA"
STUDENT_COLOR = "#EF553B"
TRUE_COLOR = "#00A676"
GREY = "#9AA0A6"
MARKER_COLOR = "#E8710A"  # the current ρ on charts against ρ: an orange that reads on a light and a dark page
HEIGHT = 330
# Light (nothing) to dark blue (much), given as stops: a named scale may be re-themed in the browser.
HEAT_SCALE = [[0.0, "#f7fbff"], [0.25, "#c6dbef"], [0.5, "#6baed6"], [0.75, "#2171b5"], [1.0, "#08306b"]]
# On a dark page the same blues run the other way, from near the page's background (nothing) to bright (much),
# so the matrix is not a white block and "more" still reads as "more visible".
HEAT_SCALE_DARK = [[0.0, "#16202c"], [0.25, "#1f4e79"], [0.5, "#2f7fc1"], [0.75, "#6baed6"], [1.0, "#deebf7"]]


def _figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> go.Figure:
    return go.Figure(data=data, layout=layout, _validate=False)


def _layout(*, title: str | None, x_title: str | None = None, y_title: str | None = None, height: int = HEIGHT,
            legend: bool = True, subtitle: str | None = None, **extra: Any) -> dict[str, Any]:
    """A lab chart's layout. Titles are kept short, details in a smaller subtitle: plotly does not wrap a
    title, so a long one is cut off in an 800 px window."""
    title_dict = {"text": title, "x": 0, "xanchor": "left"} if title else None
    if title_dict and subtitle:
        title_dict["subtitle"] = {"text": subtitle}
    layout: dict[str, Any] = {
        "title": title_dict,
        "height": height, "showlegend": legend,
        "margin": {"l": 10, "r": 10, "t": (90 if subtitle else 60) if title else 30, "b": 10},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
        "hovermode": "closest",
        "modebar": {"orientation": "v"},  # the toolbar down the right edge, clear of the title
        "xaxis": {"title": {"text": x_title}}, "yaxis": {"title": {"text": y_title}},
        "shapes": [], "annotations": [],
        # No plotly template: Streamlit's theme fills an empty one in the browser, and the default
        # template would be deep-copied into every figure (most of the cost, 6x the JSON).
        "template": {},
    }
    for key, value in extra.items():
        if key in ("xaxis", "yaxis"):
            layout[key].update(value)
        else:
            layout[key] = value
    if layout["title"] is None:
        del layout["title"]
    return layout


def _empty(message: str, title: str | None = None) -> go.Figure:
    layout = _layout(title=title, legend=False, xaxis={"visible": False}, yaxis={"visible": False})
    layout["annotations"] = [{"text": message, "showarrow": False, "x": 0.5, "y": 0.5, "xref": "paper",
                              "yref": "paper", "font": {"size": 14, "color": "gray"}}]
    return _figure([], layout)


def _vline(layout: dict[str, Any], x: float | None, label: str, *, log_x: bool = False) -> None:
    """A dashed vertical line at x (data units) across the plot, labelled at its foot. On a log axis a
    shape takes data units but an annotation takes log10 of them (plotly's convention)."""
    if x is None:
        return
    layout["shapes"].append({"type": "line", "x0": x, "x1": x, "xref": "x", "y0": 0, "y1": 1, "yref": "paper",
                             "line": {"dash": "dash", "color": MARKER_COLOR, "width": 2}})
    at = float(np.log10(x)) if log_x else x
    # Near the right end of a ρ axis (0.5 to 50) the label goes left of the line, or it would be cut off.
    flip = log_x and x >= 20
    layout["annotations"].append({"text": label, "x": at, "xref": "x", "y": 0, "yref": "paper",
                                  "showarrow": False, "xanchor": "right" if flip else "left", "yanchor": "bottom",
                                  "xshift": -4 if flip else 4,
                                  "font": {"color": MARKER_COLOR, "size": 14, "weight": "bold"}})


def rho_label(rho: float | None) -> str:
    """The marker's label on a chart against ρ: "ρ = 4" (the slider's value, as the slider writes it)."""
    return f"ρ = {rho:g}" if rho is not None else ""


def _hline(layout: dict[str, Any], y: float, label: str, *, where: str = "bottom right") -> None:
    """A dashed horizontal line at y across the plot, labelled at one end."""
    layout["shapes"].append({"type": "line", "x0": 0, "x1": 1, "xref": "paper", "y0": y, "y1": y, "yref": "y",
                             "line": {"dash": "dash", "color": "lightgray", "width": 2}})
    vertical, horizontal = where.split()
    layout["annotations"].append({"text": label, "x": 1 if horizontal == "right" else 0, "xref": "paper", "y": y,
                                  "yref": "y", "showarrow": False, "xanchor": horizontal,
                                  "yanchor": "top" if vertical == "bottom" else "bottom", "font": {"color": "gray"}})


# ρ axes run from 0.5 to 50 on a log scale; plotly's own minor ticks there read "5, 1, 2, 5, 10, 2, 5".
DIAGONAL_GREY = "#9e9e9e"
# Presentation mode, for a projector: no sidebar, no header bar, larger text everywhere, charts included
# (Streamlit sizes chart text in rem: 24 px at the root makes it 18 px instead of 12).
PRESENTATION_CSS = """<style>
section[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], header[data-testid="stHeader"] { display: none; }
html { font-size: 24px; }
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li { font-size: 1.05rem; }
[data-testid="stMetricValue"] [data-testid="stMarkdownContainer"] p { font-size: 2.25rem; }
/* A slider's value (ρ) large, bold, in the text's colour, and clear above the thumb: Streamlit's offset is in px,
   so at this root size its thin red label would sit on the track. */
[data-testid="stSliderThumbValue"] { top: auto; bottom: calc(100% + 0.3rem); color: inherit; }
[data-testid="stSliderThumbValue"] [data-testid="stMarkdownContainer"] p {
  font-size: 1.5rem; font-weight: 700; line-height: 1.1; }
[data-testid="stSlider"] [role="group"] { padding-top: 1.2rem; }
</style>"""
PROJECTOR_HEIGHT = 1.25


def for_projector(fig: go.Figure) -> go.Figure:
    """A lab chart for presentation mode, in place: taller, as its text grows with the page's (Streamlit's
    chart theme sizes chart text in rem, so PRESENTATION_CSS's root font size enlarges it)."""
    fig.layout.height = round((fig.layout.height or HEIGHT) * PROJECTOR_HEIGHT)
    return fig


RHO_TICKS = {"type": "log", "tickvals": [0.5, 1, 2, 5, 10, 20, 50],
             "ticktext": ["0.5", "1", "2", "5", "10", "20", "50"]}


def _tickangle(names: Sequence[Any]) -> int:
    return -30 if max(len(str(n)) for n in names) > 3 else 0


def image_for_display(image: np.ndarray, size: int = 224) -> np.ndarray:
    """A (C, H, W) uint8 image as H×W (grey) or H×W×3, enlarged by whole-pixel blocks (8×8 digits stay sharp)."""
    img = np.asarray(image)
    c, h, w = img.shape
    scale = max(1, size // max(h, w))
    img = img.repeat(scale, axis=1).repeat(scale, axis=2)
    return img[0] if c == 1 else np.transpose(img[:3], (1, 2, 0))


def sample_label(index: int, true_name: str, predicted_name: str) -> str:
    verdict = "teacher: right" if true_name == predicted_name else f"teacher says {predicted_name}"
    return f"{true_name} · test image #{index} ({verdict})"


def _pct(p: float) -> str:
    """A probability in words students read: 21%, 6.2%, 0.051%, < 0.001% (no scientific notation)."""
    if p >= 0.1:
        return f"{p:.0%}"
    if p >= 0.001:
        return f"{p:.1%}"
    if p >= 1e-5:
        return f"{p * 100:.2g}%"
    return "< 0.001%"


def with_article(noun: str) -> str:
    """'a Shirt', 'an Ankle boot', 'an mlp_64', 'an 8', 'a 7' (by the first sound, near enough for class
    and model names)."""
    first = noun.split()[0] if noun.split() else noun
    vowel_sound = noun[:1].lower() in "aeiou8" or noun.startswith(("mlp", "MLP")) or first in ("11", "18")
    return f"{'an' if vowel_sound else 'a'} {noun}"


# ---- the teacher's answer at ρ -------------------------------------------------------------------
LOG_FLOOR = 1e-8  # the bottom of the log-probability axis: one in a hundred million


def _answer_text(probs: Sequence[float], log_scale: bool) -> list[str]:
    if log_scale:
        return [_pct(p) for p in probs]
    return [f"{p:.0%}" if p >= 0.005 else ("<1%" if p >= 0.0005 else "") for p in probs]


def _answer_bars(probs: Sequence[float], log_scale: bool) -> dict[str, Any]:
    """The parts of an answer's bar trace that change with ρ: heights and labels. On the log axis bars
    rise from 10⁻⁸, the bottom of the axis."""
    probs = [float(p) for p in probs]
    if log_scale:
        return {"y": [max(p, LOG_FLOOR) - LOG_FLOOR for p in probs], "base": LOG_FLOOR,
                "text": _answer_text(probs, True)}
    return {"y": probs, "text": _answer_text(probs, False)}


def _answer_trace(classes: list[str], probs: Sequence[float], true_class: str, log_scale: bool,
                  **extra: Any) -> dict[str, Any]:
    colors = [TRUE_COLOR if c == true_class else TEACHER_COLOR for c in classes]
    # constraintext none: a narrow bar's label keeps its size ("100%" stays readable beside "5%").
    return {"type": "bar", "x": classes, "marker": {"color": colors}, "textposition": "outside",
            "constraintext": "none", "cliponaxis": False, "name": "teacher", "customdata": [float(p) for p in probs],
            "hovertemplate": "%{x}: %{customdata:.4f}<extra></extra>", **_answer_bars(probs, log_scale), **extra}


def _answer_yaxis(log_scale: bool) -> dict[str, Any]:
    """The probability axis, fixed whatever ρ: linear 0–100 %, or log from 10⁻⁸ to 1."""
    if log_scale:
        return {"type": "log", "range": [-8, 0.3], "dtick": 2, "exponentformat": "power", "automargin": True,
                "title": {"text": "probability (log scale)"}}
    return {"range": [0, 1.12], "tickformat": ".0%"}


def distribution_figure(frame: pd.DataFrame, rho: float, true_class: str, *, log_scale: bool = False) -> go.Figure:
    """The teacher's soft labels of one sample (frame columns class, teacher): the true class in green,
    the others in blue, each bar labelled with its probability. With `log_scale` the y axis is the log of
    the probability, down to 10⁻⁸: at ρ = 1 the dark knowledge is there, in probabilities too small to see
    on a linear axis."""
    classes = [str(c) for c in frame["class"]]
    data = [_answer_trace(classes, frame["teacher"], true_class, log_scale)]
    layout = _layout(title=f"What the teacher answers at ρ = {rho:g}", subtitle="green: the true class",
                     y_title="probability",
                     height=360, legend=False, xaxis={"type": "category", "tickangle": _tickangle(classes)},
                     yaxis=_answer_yaxis(log_scale))
    return _figure(data, layout)


def two_temperatures_figure(logits: np.ndarray, class_names: Sequence[str], rhos: tuple[float, float],
                            true_class: str, *, log_scale: bool = False) -> go.Figure:
    """One sample's answer at two temperatures side by side, on one shared probability axis (the right
    panel's y axis is the left one's), so the softening from the first ρ to the second is seen, not read."""
    classes = [str(c) for c in class_names]
    z = np.asarray(logits, dtype=float)
    # Twice the bars in one width: a label wider than its bar shrinks rather than overlap its neighbours'.
    data = [_answer_trace(classes, soften(z, rho), true_class, log_scale, xaxis=axis, yaxis="y",
                          name=f"ρ = {rho:g}", constraintext="both") for rho, axis in zip(rhos, ("x", "x2"))]
    ticks = {"type": "category", "tickangle": _tickangle(classes)}
    layout = _layout(title="One image at two temperatures", y_title="probability",
                     subtitle="one probability axis for both; green: the true class",
                     height=380, legend=False, xaxis={**ticks, "domain": [0, 0.47]}, yaxis=_answer_yaxis(log_scale))
    layout["xaxis2"] = {**ticks, "domain": [0.53, 1], "anchor": "y"}
    layout["margin"]["t"] = 110  # title, subtitle, then each panel's ρ above it
    layout["annotations"] = [{"text": f"ρ = {rho:g}", "x": x, "xref": "paper", "y": 1.0, "yref": "paper",
                              "xanchor": "center", "yanchor": "bottom", "showarrow": False,
                              "font": {"size": 16, "weight": "bold"}} for rho, x in zip(rhos, (0.235, 0.765))]
    return _figure(data, layout)


def rho_animation_figure(logits: np.ndarray, class_names: Sequence[str], true_class: str,
                         rhos: Sequence[float], *, log_scale: bool = False, frame_ms: int = 500) -> go.Figure:
    """One sample's answer animated through `rhos` from the lowest to the highest: plotly's own frames,
    a ρ slider under the chart and a Play / Pause button. It all runs in the browser, so playing it
    costs the server nothing and leaves nothing running there."""
    classes = [str(c) for c in class_names]
    z = np.asarray(logits, dtype=float)
    steps = sorted(float(r) for r in rhos)
    names = [f"{r:g}" for r in steps]
    answers = [soften(z, r) for r in steps]
    # Streamlit's theme draws the first title in bold; each frame's title is bold too, so it does not flicker.
    frames = [{"name": name, "data": [{"type": "bar", **_answer_bars(p, log_scale), "customdata": [float(v) for v in p]}],
               "traces": [0], "layout": {"title": {"text": f"<b>What the teacher answers at ρ = {name}</b>"}}}
              for name, p in zip(names, answers)]
    data = [_answer_trace(classes, answers[0], true_class, log_scale)]
    # redraw: the bar labels and the title (ρ = …) change with every frame, not only the bar heights.
    play = {"frame": {"duration": frame_ms, "redraw": True}, "transition": {"duration": frame_ms // 2},
            "fromcurrent": True, "mode": "immediate"}
    pause = {"frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}, "mode": "immediate"}
    layout = _layout(title=f"What the teacher answers at ρ = {names[0]}", y_title="probability", height=440,
                     subtitle="green: the true class; ▶ Play under the chart",
                     legend=False, xaxis={"type": "category", "tickangle": _tickangle(classes)},
                     yaxis=_answer_yaxis(log_scale))
    layout["margin"]["b"] = 20
    # Buttons at the left under the chart, the ρ slider to their right with its value at its right end.
    layout["updatemenus"] = [{
        "type": "buttons", "direction": "left", "showactive": False, "x": 0, "xanchor": "left", "y": -0.14,
        "yanchor": "top", "pad": {"t": 30, "r": 0},
        "buttons": [{"label": "▶ Play", "method": "animate", "args": [None, play]},
                    {"label": "❚❚ Pause", "method": "animate", "args": [[None], pause]}]}]
    layout["sliders"] = [{
        "active": 0, "x": 0.26, "len": 0.74, "xanchor": "left", "y": -0.14, "yanchor": "top", "pad": {"t": 30},
        "currentvalue": {"prefix": "ρ = ", "xanchor": "right", "font": {"size": 16}},
        "steps": [{"label": name, "method": "animate",
                   "args": [[name], {**pause, "transition": {"duration": frame_ms // 2}}]} for name in names]}]
    return go.Figure(data=data, layout=layout, frames=frames, _validate=False)


def similar_classes_sentence(similar: pd.DataFrame, top_class: str, true_class: str, rho: float) -> str:
    """Plain words: which classes the teacher finds similar to this sample, with their share at ρ."""
    if not len(similar):
        return f"The teacher puts everything on **{top_class}**."
    parts = [f"**{row['class']}** ({_pct(row['prob'])})" for _, row in similar.iterrows()]
    listing = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    lead = (f"The teacher says **{top_class}**" if top_class == true_class
            else f"The teacher says **{top_class}** (the true class is **{true_class}**)")
    return f"{lead}; the classes it finds most similar are {listing} at ρ = {rho:g}."


# ---- entropy and effective number of classes -------------------------------------------------------
def entropy_figure(sample_curve: pd.DataFrame, test_curve: pd.DataFrame, num_classes: int,
                   rho: float | None = None, *, value: str = "entropy") -> go.Figure:
    """Entropy (nats) or effective number of classes against ρ (log axis), for the chosen sample and
    averaged over the test set, with the ceiling (ln K or K) dashed."""
    ceiling = float(np.log(num_classes)) if value == "entropy" else float(num_classes)
    names = {"entropy": ("Entropy of the answer", "in nats", "entropy (nats)", f"ln {num_classes} = maximum"),
             "effective_classes": ("Effective number of classes", "e^entropy", "classes in play",
                                   f"all {num_classes} classes")}
    title, subtitle, y_title, ceiling_label = names[value]
    data = [
        {"type": "scatter", "x": test_curve["rho"].to_numpy(), "y": test_curve[value].to_numpy(), "mode": "lines",
         "name": "test-set average", "line": {"color": GREY, "width": 3}},
        {"type": "scatter", "x": sample_curve["rho"].to_numpy(), "y": sample_curve[value].to_numpy(),
         "mode": "lines", "name": "this sample", "line": {"color": TEACHER_COLOR, "width": 3}},
    ]
    layout = _layout(title=title, subtitle=subtitle, x_title="temperature ρ (log scale)", y_title=y_title,
                     xaxis=RHO_TICKS, yaxis={"range": [0 if value == "entropy" else 1, ceiling * 1.08]})
    _hline(layout, ceiling, ceiling_label)
    _vline(layout, rho, rho_label(rho), log_x=True)
    return _figure(data, layout)


def effective_classes_at(curve: pd.DataFrame, rho: float) -> float:
    """The effective number of classes read off a curve at ρ (log-linear interpolation)."""
    return float(np.interp(np.log(rho), np.log(curve["rho"]), curve["effective_classes"]))


def hesitation_sentence(logits: np.ndarray, test_curve: pd.DataFrame, rhos: Sequence[float], *,
                        played: bool = False) -> str:
    """How many classes the teacher hesitates between, for this image and on an average test image, at the ρ
    the answer is shown at: `rhos` is the slider's ρ alone, the two charts' ρ side by side (left, right), or
    with `played` the first and last ρ of the animation, which runs in the browser (so no one ρ is shown)."""
    here = [float(effective_classes(soften(np.asarray(logits, dtype=float), rho))) for rho in rhos]
    average = [effective_classes_at(test_curve, rho) for rho in rhos]
    if played:
        return (f"As ρ rises from {rhos[0]:g} to {rhos[-1]:g} the teacher goes from hesitating between about "
                f"**{here[0]:.1f}** classes for this image to **{here[-1]:.1f}** (on an average test image from "
                f"**{average[0]:.1f}** to **{average[-1]:.1f}**; section 3 shows every ρ in between).")
    if len(rhos) == 2 and rhos[0] != rhos[1]:
        return (f"The teacher hesitates between about **{here[0]:.1f}** classes for this image at ρ = {rhos[0]:g} "
                f"(left) and **{here[1]:.1f}** at ρ = {rhos[1]:g} (right); on an average test image "
                f"**{average[0]:.1f}** and **{average[1]:.1f}** (section 3 shows it for every ρ).")
    return (f"At ρ = {rhos[-1]:g} the teacher hesitates between about **{here[-1]:.1f}** classes for this image "
            f"and **{average[-1]:.1f}** on an average test image (section 3 shows it for every ρ).")


# ---- the class-similarity matrix ------------------------------------------------------------------
def similarity_figure(matrix: pd.DataFrame, rho: float, *, dark: bool = False) -> go.Figure:
    """Average soft labels per true class at ρ as a heatmap. The diagonal (the teacher being right)
    is left blank so that the colour shows only the dark knowledge: what else each class resembles.
    `dark`: the page is dark, so the colour scale starts near its background rather than at white."""
    values = matrix.to_numpy(dtype=float)
    shown = values.copy()
    np.fill_diagonal(shown, np.nan)
    names = [str(c) for c in matrix.columns]
    top = float(np.nanmax(shown)) if np.isfinite(shown).any() else 1.0
    text = [["" if not np.isfinite(v) else _short_pct(v) for v in row] for row in shown]
    data = [{"type": "heatmap", "z": shown, "x": names, "y": [str(r) for r in matrix.index], "customdata": values,
             "colorscale": HEAT_SCALE_DARK if dark else HEAT_SCALE, "zmin": 0, "zmax": max(top, 1e-9),
             # No font size: plotly then sizes the cell labels to the narrowest cell, up to the chart's
             # font size, so they fit in an 800 px window as on a projector.
             "text": text, "texttemplate": "%{text}", "hoverongaps": False,
             "hovertemplate": "a %{y} gets %{customdata:.2%} of its probability on %{x}<extra></extra>",
             "colorbar": {"title": {"text": "average<br>probability"}, "thickness": 12,
                          "tickformat": ".0%" if top >= 0.1 else ".1%" if top >= 0.01 else ".2%"}}]
    # The blank diagonal in a neutral grey that reads the same on a light or a dark page (not the page's
    # background, which is black in dark mode).
    diagonal = np.where(np.eye(len(values), dtype=bool), 1.0, np.nan)
    data.append({"type": "heatmap", "z": diagonal, "x": names, "y": [str(r) for r in matrix.index],
                 "colorscale": [[0, DIAGONAL_GREY], [1, DIAGONAL_GREY]], "showscale": False, "hoverinfo": "skip",
                 "hoverongaps": False})
    layout = _layout(title=f"Average soft label per true class at ρ = {rho:g}",
                     subtitle="the diagonal (the teacher being right) left blank",
                     x_title="probability given to …", y_title="images of …", height=460, legend=False,
                     xaxis={"type": "category", "tickangle": _tickangle(names)},
                     yaxis={"type": "category", "autorange": "reversed"})
    return _figure(data, layout)


CELL_LABEL_CHARS = 4  # "15%", "0.4%", "100%": the longest cell label, by which plotly sizes the labels' font


def _short_pct(p: float) -> str:
    """A cell label of at most CELL_LABEL_CHARS: a whole percentage from 1%, one decimal below; nothing under
    0.1%, too little to colour the cell."""
    if p >= 0.0095:
        return f"{p:.0%}"
    if p >= 0.00095:
        return f"{p:.1%}"
    return ""


def pairs_markdown(pairs: pd.DataFrame) -> str:
    """The most similar pairs as a numbered markdown list: "1. **T-shirt/top ↔ Shirt**: 16% …"."""
    lines = []
    for i, row in enumerate(pairs.itertuples(index=False), start=1):
        lines.append(f"{i}. **{row.class_a} ↔ {row.class_b}** — {with_article(row.class_a)} gives {_pct(row.a_to_b)} "
                     f"of its probability to {row.class_b}, {with_article(row.class_b)} {_pct(row.b_to_a)} "
                     f"to {row.class_a}")
    return "\n".join(lines)


# ---- why ρ² ---------------------------------------------------------------------------------------
def gradient_figure(curve: pd.DataFrame, rho: float | None = None) -> go.Figure:
    """Mean gradient size of the soft term on the student's logits against ρ, with and without ρ²
    (log-log), the hard term's gradient as a reference line."""
    x = curve["rho"].to_numpy()
    data = [
        {"type": "scatter", "x": x, "y": curve["with_rho2"].to_numpy(), "mode": "lines",
         "name": "soft term × ρ² (Hinton)", "line": {"color": TEACHER_COLOR, "width": 3}},
        {"type": "scatter", "x": x, "y": curve["without_rho2"].to_numpy(), "mode": "lines",
         "name": "soft term without ρ²", "line": {"color": STUDENT_COLOR, "width": 3}},
    ]
    if "hard" in curve and curve["hard"].notna().any():
        data.append({"type": "scatter", "x": x, "y": curve["hard"].to_numpy(), "mode": "lines",
                     "name": "hard-label term", "line": {"color": GREY, "dash": "dash", "width": 2}})
    layout = _layout(title="How hard each term pulls", subtitle="mean gradient size on the student's logits",
                     x_title="temperature ρ (log scale)",
                     y_title="gradient size (log scale)", xaxis=RHO_TICKS,
                     yaxis={"type": "log", "exponentformat": "power", "dtick": 1})  # powers of ten only
    # The legend in the empty bottom-left corner: three entries above the plot wrap into the title.
    layout["legend"] = {"orientation": "v", "x": 0.01, "xanchor": "left", "y": 0.02, "yanchor": "bottom"}
    _vline(layout, rho, rho_label(rho), log_x=True)
    return _figure(data, layout)


# ---- experiments ---------------------------------------------------------------------------------
def sweep_figure(frame: pd.DataFrame, teacher_acc: float | None = None, rho: float | None = None) -> go.Figure:
    """Student test accuracy and teacher–student agreement against ρ (log axis), a marker at `rho`."""
    title = "Temperature sweep"
    done = frame.dropna(subset=["test_acc"]) if len(frame) else frame
    if len(done) == 0:
        return _empty("No finished run yet", title)
    data = [
        {"type": "scatter", "x": done["rho"].to_numpy(), "y": done["test_acc"].to_numpy(), "mode": "lines+markers",
         "name": "student test accuracy", "line": {"color": STUDENT_COLOR, "width": 3}, "marker": {"size": 9},
         **_error_bars(done, "test_std")},
        {"type": "scatter", "x": done["rho"].to_numpy(), "y": done["agreement"].to_numpy(), "mode": "lines+markers",
         "name": "agrees with the teacher", "line": {"color": TEACHER_COLOR, "width": 3, "dash": "dot"},
         "marker": {"size": 9}, **_error_bars(done, "agreement_std")},
    ]
    if "n" in done and done["n"].max() > 1:
        title += f": mean ± std over {int(done['n'].max())} seeds"
    # The axis spans the swept ρ and the slider's, which may lie outside them (0.5 or 50).
    shown = [float(r) for r in frame["rho"]] + ([float(rho)] if rho is not None else [])
    layout = _layout(title=title, x_title="temperature ρ (log scale)", y_title="fraction of test images",
                     xaxis={"type": "log", "tickvals": list(frame["rho"]),
                            "ticktext": [f"{r:g}" for r in frame["rho"]],
                            "range": [float(np.log10(min(shown))) - 0.1, float(np.log10(max(shown))) + 0.1]},
                     yaxis={"tickformat": ".1%"})
    if teacher_acc is not None:
        _hline(layout, teacher_acc, f"teacher {teacher_acc:.1%}")
    _vline(layout, rho, rho_label(rho), log_x=True)
    return _figure(data, layout)


def _error_bars(frame: pd.DataFrame, column: str) -> dict[str, Any]:
    """Plotly error bars from a std column over seeds (nothing when the frame has none)."""
    if column not in frame or not np.isfinite(frame[column].to_numpy(dtype=float)).any():
        return {}
    return {"error_y": {"type": "data", "array": np.nan_to_num(frame[column].to_numpy(dtype=float)).tolist(),
                        "visible": True, "thickness": 1.5}}


def alpha_figure(frame: pd.DataFrame, teacher_acc: float | None = None) -> go.Figure:
    """Test accuracy and agreement of the three (α, β) settings side by side."""
    title = "Soft labels, hard labels, or both"
    done = frame.dropna(subset=["test_acc"]) if len(frame) else frame
    if len(done) == 0:
        return _empty("No finished run yet", title)
    data = [{"type": "bar", "x": list(done["setting"]), "y": done[column].to_numpy(), "name": name,
             "marker": {"color": color}, "text": [f"{v:.1%}" for v in done[column]], "textposition": "outside",
             "cliponaxis": False, **_error_bars(done, f"{column.split('_')[0]}_std")}
            for column, name, color in (("test_acc", "test accuracy", STUDENT_COLOR),
                                        ("agreement", "agrees with the teacher", TEACHER_COLOR))]
    if "n" in done and done["n"].max() > 1:
        title += f" (mean ± std over {int(done['n'].max())} seeds)"
    # Bars start at 0: a bar's length is its value, so a 0.6-point gap looks like one.
    layout = _layout(title=title, y_title="fraction of test images", barmode="group",
                     yaxis={"range": [0, 1.12], "tickformat": ".0%"})
    if teacher_acc is not None:
        _hline(layout, teacher_acc, f"teacher {teacher_acc:.1%}", where="top left")
    return _figure(data, layout)


def omitted_figure(table: pd.DataFrame, omitted_name: str) -> go.Figure:
    """Per-class test accuracy of the omitted-class student before and after the bias correction."""
    rows = table[table["index"] >= 0]
    classes = [str(c) for c in rows["class"]]
    data = [{"type": "bar", "x": classes, "y": rows[column].to_numpy(), "name": name, "marker": {"color": color},
             "text": [f"{v:.0%}" for v in rows[column]], "textposition": "outside", "cliponaxis": False}
            for column, name, color in (("before", "before the correction", GREY),
                                        ("after", "after the correction", STUDENT_COLOR))]
    layout = _layout(title=f"Test accuracy per class; {omitted_name} was never in the transfer set",
                     y_title="test accuracy", height=380, barmode="group",
                     xaxis={"type": "category", "tickangle": _tickangle(classes)},
                     yaxis={"range": [0, 1.15], "tickformat": ".0%"})
    return _figure(data, layout)


def omitted_summary(table: pd.DataFrame, omitted: int, others: Sequence[int] | None = None) -> pd.DataFrame:
    """The omitted class, a few others and all classes, as a small before/after table."""
    rows = table[table["index"] == omitted]
    rest = table[(table["index"] >= 0) & (table["index"] != omitted)]
    if others is None:
        # The other classes that moved most: where the correction took its predictions from.
        rest = rest.assign(change=(rest["after"] - rest["before"]).abs()).sort_values("change", ascending=False)
        rest = rest.head(3).drop(columns="change").sort_values("index")
    else:
        rest = rest[rest["index"].isin(list(others))]
    out = pd.concat([rows, rest, table[table["index"] < 0]])
    return out[["class", "samples", "before", "after"]].reset_index(drop=True)


# ---- few labels, a teacher ------------------------------------------------------------------------
FEW_LABEL_COLORS = {"from scratch": GREY, "with the teacher (KD)": TEACHER_COLOR}


def few_label_figure(curves: pd.DataFrame, teacher_acc: float | None = None) -> go.Figure:
    """Test accuracy against optimiser steps for each arm (columns arm, seed, step, test_acc): the mean
    over seeds as a line, the lowest to highest seed as a shaded band, the teacher as a dashed line."""
    data: list[dict[str, Any]] = []
    seeds = int(curves["seed"].nunique()) if len(curves) else 0
    for arm, rows in curves.groupby("arm", sort=False):
        color = FEW_LABEL_COLORS.get(str(arm), STUDENT_COLOR)
        stats = rows.groupby("step")["test_acc"].agg(["mean", "min", "max"]).reset_index()
        x = stats["step"].to_numpy()
        if seeds > 1:
            data.append({"type": "scatter", "x": np.concatenate([x, x[::-1]]),
                         "y": np.concatenate([stats["max"].to_numpy(), stats["min"].to_numpy()[::-1]]),
                         "fill": "toself", "fillcolor": color, "opacity": 0.25, "line": {"width": 0},
                         "hoverinfo": "skip", "showlegend": False, "name": f"{arm}, seed range"})
        data.append({"type": "scatter", "x": x, "y": stats["mean"].to_numpy(), "mode": "lines", "name": str(arm),
                     "line": {"color": color, "width": 3},
                     "hovertemplate": "step %{x}: %{y:.1%}<extra>" + str(arm) + "</extra>"})
    subtitle = f"mean of {seeds} seeds; band: lowest to highest seed" if seeds > 1 else None
    # The legend inside, at the bottom right, which the curves have left by then (above, it would wrap into
    # the title in a narrow window).
    layout = _layout(title="Test accuracy while training", subtitle=subtitle, x_title="optimiser steps",
                     y_title="test accuracy", height=380,
                     yaxis={"range": [0, 1.05], "tickformat": ".0%"})
    layout["legend"] = {"orientation": "v", "x": 0.98, "xanchor": "right", "y": 0.05, "yanchor": "bottom"}
    if teacher_acc is not None and np.isfinite(teacher_acc):
        _hline(layout, teacher_acc, f"teacher {teacher_acc:.1%}", where="top left")
    return _figure(data, layout)


def few_label_sentence(summary: pd.DataFrame, gains: np.ndarray, labelled: int) -> str:
    """Plain words: both final accuracies (mean ± std over seeds) and on how many seeds the teacher helped."""
    rows = summary.set_index("arm")
    scratch, kd = rows.iloc[0], rows.iloc[1]

    def acc(row: pd.Series) -> str:
        spread = f" ± {row['std'] * 100:.1f}" if np.isfinite(row["std"]) else ""
        return f"**{row['mean']:.1%}**{spread}"

    better = int((np.asarray(gains) > 0).sum())
    return (f"With {labelled} labelled digits the student from scratch gets {acc(scratch)} of the test digits right; "
            f"with the teacher {acc(kd)}: **{(kd['mean'] - scratch['mean']) * 100:+.1f} points**, ahead on "
            f"{better} of {len(gains)} seeds (each seed draws other labelled images).")
