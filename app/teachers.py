"""Views of the teacher side: an ensemble's members beside the ensemble, and a chain of runs (teacher →
assistant → student, or born-again generations) link by link. Data frames and figures; pages lay them out."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.figures import STUDENT_COLOR, TEACHER_COLOR, _layout, empty_figure
from kdcore.lab.softlabels import soften


def ensemble_rows(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Each member's model, size and test accuracy, then the ensemble's (empty for a single teacher). An accuracy
    not scored is None: the table shows teacher_check.NOT_SCORED there, as the New-experiment form's does."""
    members = info.get("teacher_members") or []
    if not members:
        return []
    rows = [{"teacher": m.get("name", f"teacher{i}"), "model": m.get("model", ""), "parameters": m.get("params"),
             "test accuracy": m.get("test_acc")} for i, m in enumerate(members)]
    rows.append({"teacher": "ensemble", "model": info.get("teacher", ""), "parameters": info.get("teacher_params"),
                 "test accuracy": info.get("teacher_test_acc")})
    return rows


def combined(members: Sequence[np.ndarray], weights: Sequence[float], kind: str, rho: float) -> np.ndarray:
    """The ensemble's soft labels at ρ from its members' logits, as the trainer combines them."""
    import torch

    from kdcore.train.ensemble import combine_logits

    z = combine_logits([torch.as_tensor(m, dtype=torch.float32) for m in members], weights, kind, rho)
    return torch.softmax(z / rho, dim=-1).numpy()


def member_distribution_frame(class_names: list[str], members: Sequence[np.ndarray], member_labels: Sequence[str],
                              teacher: Any, student: np.ndarray, rho: float) -> pd.DataFrame:
    """One sample's soft labels at ρ: a column per member, the ensemble's and the student's.
    `members` are the members' logits for this sample; `teacher` is the run's EnsembleSpec."""
    frame = pd.DataFrame({"class": class_names})
    for label, z in zip(member_labels, members):
        frame[label] = soften(z, rho)
    frame["ensemble"] = combined([m[None] for m in members], teacher.normalised_weights, teacher.combine, rho)[0]
    frame["student"] = soften(student, rho)
    return frame


def member_distribution_figure(frame: pd.DataFrame, rho: float, *, title: str) -> go.Figure:
    columns = [c for c in frame.columns if c != "class"]
    fig = go.Figure()
    shades = ["#9DB4FF", "#7FD1B9", "#F5C26B", "#C39BD3", "#A3A3A3"]
    for i, column in enumerate(columns):
        color = {"ensemble": TEACHER_COLOR, "student": STUDENT_COLOR}.get(column, shades[i % len(shades)])
        fig.add_trace(go.Bar(x=frame["class"].astype(str), y=frame[column], name=column, marker_color=color))
    _layout(fig, title=title, x_title="class", y_title="probability")
    fig.update_layout(barmode="group", hovermode="closest")
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[0, 1])
    return fig


# ---- chains ------------------------------------------------------------------------------------------

def chains(records: Sequence[Any]) -> list[list[Any]]:
    """Runs linked teacher → student through `teacher.run_id`, among `records`: each chain of two or more
    in order from its first link (a run teaching two students starts two chains)."""
    by_id = {r.id: r for r in records}

    def teacher_of(r: Any) -> str | None:
        t = r.spec.teacher
        return t.run_id if t is not None and t.source == "run" and t.run_id in by_id else None

    taught = {teacher_of(r) for r in records} - {None}
    out = []
    for last in [r for r in records if r.id not in taught and teacher_of(r)]:
        chain = [last]
        while teacher_of(chain[0]) and len(chain) <= len(records):
            chain.insert(0, by_id[teacher_of(chain[0])])
        out.append(chain)
    return out


def chain_frame(chain: Sequence[Any]) -> pd.DataFrame:
    """Link by link: the run, its model, parameters, test accuracy and agreement with its own teacher."""
    rows = []
    for k, r in enumerate(chain, start=1):
        rows.append({"link": k, "run": r.id, "name": r.name, "model": r.spec.student,
                     "parameters": (r.info or {}).get("student_params"), "status": r.status.value,
                     "test accuracy": r.final.get("test/acc"), "agreement with its teacher":
                     r.final.get("fidelity/agreement") if k > 1 else None})
    return pd.DataFrame(rows)


def chain_figure(frame: pd.DataFrame) -> go.Figure:
    title = "Accuracy and agreement along the chain"
    if frame["test accuracy"].isna().all():
        return empty_figure("No link has finished yet", title=title)
    fig = go.Figure()
    x = [f"{k} · {m}" for k, m in zip(frame["link"], frame["model"])]
    fig.add_trace(go.Scatter(x=x, y=frame["test accuracy"], name="test accuracy", mode="lines+markers",
                             marker_color=STUDENT_COLOR))
    fig.add_trace(go.Scatter(x=x, y=frame["agreement with its teacher"], name="agreement with its teacher",
                             mode="lines+markers", marker_color=TEACHER_COLOR))
    _layout(fig, title=title, x_title="link (generation) · model", y_title="fraction of test samples")
    fig.update_xaxes(type="category")
    fig.update_yaxes(tickformat=".0%")
    return fig
