"""A run's metrics as one CSV in long format: every series the run view plots, one row per point.

Columns: kind (`step`: loss terms, learning rate, throughput, GPU memory, averaged over the steps since the
previous row; `epoch`: accuracies, agreement, KL, calibration, epoch time, once per epoch), epoch, step,
name (the metric as logged, e.g. `loss/total`, `val/acc`), value. Rows come in the order they were logged.
Read it with pandas: `pd.read_csv(path).pivot_table(index="step", columns="name", values="value")`."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

COLUMNS = ["kind", "epoch", "step", "name", "value"]


def long_rows(steps: Iterable[Mapping[str, Any]], epochs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the CSV from the trainer's step rows and epoch history ({"epoch", "step", metric: value, ...}),
    step rows first within each step, each group in the order its metrics were logged."""
    out: list[tuple[int, int, dict[str, Any]]] = []
    for order, (kind, rows) in enumerate((("step", steps), ("epoch", epochs))):
        for row in rows:
            for name, value in row.items():
                if name not in ("epoch", "step"):
                    out.append((int(row["step"]), order, {"kind": kind, "epoch": int(row["epoch"]),
                                                          "step": int(row["step"]), "name": name, "value": value}))
    return [row for _, _, row in sorted(out, key=lambda r: (r[0], r[1]))]


def points_rows(points: Sequence[Any], kinds: Mapping[tuple[int, str], str]) -> list[dict[str, Any]]:
    """Rows of the CSV from stored metric points (step, epoch, name, value) and their kinds by (step, name)."""
    rows = [{"kind": kinds.get((p.step, p.name), "step"), "epoch": p.epoch, "step": p.step, "name": p.name,
             "value": p.value} for p in points]
    return sorted(rows, key=lambda r: (r["step"], r["kind"] != "step"))


def to_text(rows: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    Path(path).write_text(to_text(rows))
