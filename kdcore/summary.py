"""How a finished run is summarised, and how its epoch is selected: on validation, never on test.

A run reports validation accuracy (`val/acc`) at every validated epoch and the test metrics only at the
epochs where validation improved and at the last epoch (`evaluation.test: selected`, the default), so the
test set is read exactly at the epochs a summary can select. Selection looks at validation accuracy alone:
`select_epoch` is not even given the test numbers.

A `RunSummary` has these fields:

- `selection`: how `selected_epoch` was chosen, ``"best-val"`` (the first epoch with the highest validation
  accuracy) or ``"last"`` (the last epoch). A run without validation accuracy (``val_fraction: 0``) asked for
  ``best-val`` is summarised at its last epoch and says ``"last"``.
- `selected_epoch`, `last_epoch`: epoch numbers (1-based).
- `val_acc`: validation accuracy at the selected epoch.
- `test_acc`: test accuracy at the selected epoch; `test_acc_last`: at the last epoch.
- `agreement`, `kl_to_teacher`, `ece`: teacher–student top-1 agreement, KL(teacher ‖ student) at ρ = 1
  and the student's expected calibration error, on the test set at the selected epoch (NaN when unknown,
  e.g. no teacher).

A run's health warnings (`run_warnings`) are the one-sentence warnings its trainer raised, a student that
stopped learning while its loss stayed finite above all: such a run's numbers say nothing about the method,
so every table that shows or averages runs marks it (`health_text`), and a study table can leave it out.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

SELECTIONS = ("best-val", "last")
VAL_METRIC = "val/acc"
TEST_METRIC = "test/acc"
# Summary field -> the epoch metric it is read from, at the selected epoch.
AT_SELECTED = {"test_acc": TEST_METRIC, "agreement": "fidelity/agreement", "kl_to_teacher": "fidelity/kl_rho1",
               "ece": "calib/ece_student"}


@dataclass(frozen=True)
class RunSummary:
    selection: str
    selected_epoch: int
    last_epoch: int
    val_acc: float
    test_acc: float
    test_acc_last: float
    agreement: float = math.nan
    kl_to_teacher: float = math.nan
    ece: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def select_epoch(val_acc_by_epoch: Mapping[int, float], last_epoch: int,
                 selection: str = "best-val") -> tuple[int, str]:
    """The selected epoch and how it was chosen. Only validation accuracy is given: no path selects on test."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, not {selection!r}")
    scored = {e: v for e, v in val_acc_by_epoch.items() if _finite(v)}
    if selection == "last" or not scored:
        return last_epoch, "last"
    best = max(scored.values())
    return min(e for e, v in scored.items() if v == best), "best-val"


def summarize(epoch_metrics: Mapping[int, Mapping[str, float]], selection: str = "best-val") -> RunSummary | None:
    """A run's summary from its epoch metrics ({epoch: {name: value}}); None before its first epoch."""
    if not epoch_metrics:
        return None
    last = max(epoch_metrics)
    epoch, used = select_epoch({e: m.get(VAL_METRIC, math.nan) for e, m in epoch_metrics.items()}, last, selection)
    chosen = epoch_metrics[epoch]

    def value(metrics: Mapping[str, float], name: str) -> float:
        v = metrics.get(name)
        return float(v) if _finite(v) else math.nan

    return RunSummary(selection=used, selected_epoch=epoch, last_epoch=last, val_acc=value(chosen, VAL_METRIC),
                      test_acc_last=value(epoch_metrics[last], TEST_METRIC),
                      **{field: value(chosen, name) for field, name in AT_SELECTED.items()})


def epoch_table(points: Iterable[Any]) -> dict[int, dict[str, float]]:
    """{epoch: {name: value}} from the store's epoch metric points (objects with epoch, name, value)."""
    out: dict[int, dict[str, float]] = {}
    for p in points:
        out.setdefault(int(p.epoch), {})[p.name] = float(p.value)
    return out


def summarize_points(points: Iterable[Any], selection: str = "best-val") -> RunSummary | None:
    """`summarize` over the store's epoch metric points of one run."""
    return summarize(epoch_table(points), selection)


# What a summary reads from the store (the names `summarize` looks at).
SELECTION_METRICS = [VAL_METRIC, *AT_SELECTED.values()]


# ---- health: the warnings a run's trainer raised -----------------------------------------------------------
WARNINGS_KEY = "warnings"  # where the trainer and the worker keep them in a run's info
WARNED = "⚠"  # the mark of a run with a warning, in every table and legend
_SHORT_MAX = 40


def run_warnings(info: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The warnings in a run's info (its store record's `info`, or a trained run's), oldest first."""
    found = (info or {}).get(WARNINGS_KEY) or ()
    return tuple(str(w) for w in ([found] if isinstance(found, str) else found))


def warning_short(message: str) -> str:
    """A warning in a few words for a table cell: "collapsed at epoch 2" for a student that stopped learning,
    else the sentence's first clause, shortened."""
    collapsed = re.search(r"stopped learning at epoch (\d+)", message)
    if collapsed:
        return f"collapsed at epoch {collapsed.group(1)}"
    clause = re.split(r"[:;.]", message.strip(), maxsplit=1)[0].strip()
    return clause if len(clause) <= _SHORT_MAX else clause[:_SHORT_MAX - 1].rstrip() + "…"


def health_text(warnings: Iterable[str]) -> str:
    """A run's mark in a table: "" for a healthy run, "⚠ collapsed at epoch 2" (and "+1 more") else."""
    warnings = list(warnings)
    if not warnings:
        return ""
    more = f" (+{len(warnings) - 1} more)" if len(warnings) > 1 else ""
    return f"{WARNED} {warning_short(warnings[0])}{more}"
