"""The teacher's layers as the New-experiment form lists them: one model's, or every ensemble member's
named as the trainer names them (`teacher0.<layer>`, `teacher1.<layer>`, ...)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd


def teacher_layer_table(models: Sequence[str | None],
                        table: Callable[[str], pd.DataFrame | str]) -> pd.DataFrame | str | None:
    """The layer table of the teacher (`table(model)` lists one model at the teacher's own input), the
    members' tables stacked with their `teacherN.` prefix for an ensemble. None while no teacher's
    architecture is known; a string saying which member cannot be listed, and why."""
    known = [(i, m) for i, m in enumerate(models) if m]
    if not known:
        return None
    if len(models) == 1:
        return table(known[0][1])
    frames = []
    for i, model in known:
        layers = table(model)
        if isinstance(layers, str):
            return f"teacher{i} ({model}): {layers}"
        layers = layers.copy()
        layers["path"] = f"teacher{i}." + layers["path"].astype(str)
        layers.insert(0, "teacher", f"teacher{i} · {model}")
        frames.append(layers)
    return pd.concat(frames, ignore_index=True)
