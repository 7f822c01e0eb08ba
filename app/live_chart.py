"""The run view's live curves as Vega-Lite charts (Altair), which a refresh updates in place.

Streamlit names a plotly chart by a hash of its figure, so each new point mounts a new chart in the browser:
the slot is blank until plotly has drawn, and old copies linger hidden until the rerun ends. A Vega-Lite chart
whose spec stays the same from one refresh to the next keeps its view, and Streamlit only swaps its data.
So everything that depends on the data (series names, ranges, the number of points) stays out of the spec
here; the spec depends only on the chart's kind (title, x axis, percent, from zero)."""
from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from app.figures import PALETTE, metric_label, smooth

HEIGHT = 300
COLUMNS = ["x", "value", "series", "layer"]


def curves_data(frame: pd.DataFrame | None, names: Sequence[str], *, x: str, smoothing: float) -> pd.DataFrame:
    """The points of a live chart: columns x, value, series (a readable name), layer ("raw" drawn faint
    behind, "line" on top: the smoothed curve, or the raw one when there is no smoothing)."""
    if frame is None or len(frame) == 0 or not names:
        return pd.DataFrame(columns=COLUMNS)
    parts = []
    for name in names:
        series = frame[frame["name"] == name].sort_values(x)
        if len(series) == 0:
            continue
        values = series["value"].to_numpy(dtype=float)
        label = metric_label(name)
        if smoothing > 0 and len(series) > 1:
            parts.append(pd.DataFrame({"x": series[x].to_numpy(), "value": values, "series": label, "layer": "raw"}))
            values = smooth(values, smoothing)
        parts.append(pd.DataFrame({"x": series[x].to_numpy(), "value": values, "series": label, "layer": "line"}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


def curves_spec(*, title: str, x: str, percent: bool = False, from_zero: bool = False,
                y_title: str | None = None, note: str | None = None) -> dict:
    """The Vega-Lite spec (no data: `st.vega_lite_chart(curves_data(...), spec)`) of one run's curves: one
    colour per series, the raw curve faint behind the line. `note` is written under the title (why the
    chart is still empty)."""
    x_axis = alt.Axis(title=x, tickMinStep=1, format="d") if x == "epoch" else alt.Axis(title=x)
    y_axis = alt.Axis(title=y_title or "", format=".0%" if percent else "~g")
    base = alt.Chart().encode(
        x=alt.X("x:Q", axis=x_axis, scale=alt.Scale(zero=False, nice=False)),
        y=alt.Y("value:Q", axis=y_axis, scale=alt.Scale(zero=from_zero)),
        color=alt.Color("series:N", scale=alt.Scale(range=PALETTE),
                        legend=alt.Legend(orient="bottom", title=None, labelLimit=320)),
        tooltip=[alt.Tooltip("series:N", title="series"), alt.Tooltip("x:Q", title=x),
                 alt.Tooltip("value:Q", title="value", format=".2%" if percent else ".4g")],
    )
    raw = base.transform_filter(alt.datum.layer == "raw").mark_line(opacity=0.25, strokeWidth=1)
    line = base.transform_filter(alt.datum.layer == "line").mark_line(point=x == "epoch", strokeWidth=2)
    # grey: readable on a light and on a dark page (Vega's default subtitle colour is black)
    heading = (alt.TitleParams(title, anchor="start", subtitle=note, subtitleColor="#8c8c8c") if note
               else alt.TitleParams(title, anchor="start"))
    return alt.layer(raw, line).properties(title=heading, height=HEIGHT).to_dict()


def waiting_note(title: str, status: str) -> str:
    """What an empty chart of the run view says: when its curve will come, or that it never came."""
    if status in ("queued", "running"):
        return "appears after the first epoch" if x_of(title) == "epoch" else "appears with the first steps"
    return "not logged by this run"


def x_of(title: str) -> str:
    return "epoch" if title in ("Accuracy", "Teacher–student agreement", "KL to the teacher") else "step"
