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
"""
from __future__ import annotations

import math
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
