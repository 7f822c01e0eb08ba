"""A study's table: one row per configuration, mean ± std over seeds at the epoch each run's selection
picked (on validation, or the last), the best configuration chosen on validation, and the paired
difference in test accuracy against the scratch baseline with a 95% t-interval.

A run whose trainer raised a warning (a student that stopped learning: kdcore.summary's health) is kept in
the means by default, and its row says how many such runs it holds ("5/5, 1 ⚠"); `exclude_warned` leaves
them out of every mean, interval and the choice of the best row, and the row says that too. Nothing is
dropped without a word."""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kdcore.errors import KDError
from kdcore.studies.expand import config_key, study_runs_tags
from kdcore.studies.spec import MAX_RUNS
from kdcore.studies.stats import MeanStd, PairedDifference, mean_std, paired_difference
from kdcore.summary import SELECTION_METRICS, SELECTIONS, WARNED, RunSummary, summarize_points

FORMATS = ("markdown", "csv", "latex")


@dataclass(frozen=True)
class RunResult:
    """One run of a study with its summary (None until it has finished an epoch)."""

    run_id: str
    name: str
    status: str
    seed: int
    config_key: str
    label: str
    is_baseline: bool
    summary: RunSummary | None
    params: float
    seconds: float
    spec: dict[str, Any] = field(repr=False, default_factory=dict)
    warnings: tuple[str, ...] = ()  # what its trainer warned about (kdcore.summary.run_warnings)

    @property
    def finished(self) -> bool:
        return self.status == "completed" and self.summary is not None

    @property
    def warned(self) -> bool:
        return bool(self.warnings)


@dataclass(frozen=True)
class ConfigRow:
    key: str
    label: str
    is_baseline: bool
    runs: int  # every run of the configuration, finished or not
    test_acc: MeanStd
    val_acc: MeanStd
    agreement: MeanStd
    kl_to_teacher: MeanStd
    ece: MeanStd
    params: float
    seconds: MeanStd
    vs_baseline: PairedDifference | None = None
    best: bool = False
    warned: int = 0  # finished runs with a warning: in the means, or left out of them (StudyTable.exclude_warned)


@dataclass(frozen=True)
class StudyTable:
    study_id: str
    name: str
    selection: str
    rows: list[ConfigRow]
    results: list[RunResult]
    exclude_warned: bool = False

    @property
    def warned(self) -> int:
        """Finished runs with a warning (a run in several groups, under a tag, counts once)."""
        return len({r.run_id for r in self.results if r.finished and r.warned})

    @property
    def left_out(self) -> set[str]:
        """Ids of the runs the means leave out (the warned ones, when asked to)."""
        return {r.run_id for r in self.results if self.exclude_warned and r.warned}

    def with_warned(self, *, excluded: bool) -> StudyTable:
        """The same runs with warned runs kept in the means or left out of them."""
        return build_table(self.study_id, self.results, self.selection, name=self.name, exclude_warned=excluded)

    def health_note(self) -> str | None:
        """One sentence on the warned runs and what the means did with them; None when no run is warned."""
        if not self.warned:
            return None
        runs = "1 such run is" if self.warned == 1 else f"{self.warned} such runs are"
        what = "left out of the means (n counts the runs kept)" if self.exclude_warned else "kept in the means"
        return (f"{WARNED} = a run with a training warning (a student that stopped learning, say), whose numbers "
                f"say nothing about the method; {runs} {what}.")

    @property
    def baseline(self) -> ConfigRow | None:
        return next((r for r in self.rows if r.is_baseline), None)

    @property
    def best(self) -> ConfigRow | None:
        return next((r for r in self.rows if r.best), None)

    def format(self, fmt: str = "markdown") -> str:
        if fmt not in FORMATS:
            raise KDError(f"table format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        header, body = self.cells()
        if fmt == "csv":
            return _csv(self)
        if fmt == "latex":
            marks = {"%": r"\%", "_": r"\_", "±": r"$\pm$", "★": r"$\star$", WARNED: r"\textbf{!}"}
            esc = lambda s: "".join(marks.get(ch, ch) for ch in s)  # noqa: E731
            lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\hline",
                     " & ".join(esc(h) for h in header) + r" \\", r"\hline"]
            lines += [" & ".join(esc(c) for c in row) + r" \\" for row in body]
            return "\n".join([*lines, r"\hline", r"\end{tabular}"])
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        how = ("each run at its epoch with the best validation accuracy" if self.selection == "best-val"
               else "each run at its last epoch")
        note = (f"\nSelection: {self.selection} ({how}); "
                "mean ± std over seeds; ★ = best configuration on validation accuracy"
                + ("; Δ = paired test-accuracy difference to scratch over seeds, 95% t-interval." if self.baseline
                   else "."))
        health = self.health_note()
        return "\n".join(lines) + "\n" + note + (f"\n{health}" if health else "")

    def cells(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows as display strings (accuracies in %, Δ in percentage points)."""
        header = ["configuration", "n", "test acc %", "val acc %", "agreement %", "KL to teacher", "ECE",
                  "params", "time s"]
        has_base = self.baseline is not None
        if has_base:
            header.append(f"Δ test vs {self.baseline.label} (pp, 95% CI)")
        body = []
        for r in self.rows:
            row = [("★ " if r.best else "") + r.label, _count(r, self.exclude_warned), _pm(r.test_acc, 100, 2),
                   _pm(r.val_acc, 100, 2), _pm(r.agreement, 100, 2), _pm(r.kl_to_teacher, 1, 3), _pm(r.ece, 1, 3),
                   f"{r.params:,.0f}" if math.isfinite(r.params) else "—", _pm(r.seconds, 1, 1)]
            if has_base:
                row.append("—" if r.is_baseline or r.vs_baseline is None else _diff(r.vs_baseline))
            body.append(row)
        return header, body


def _count(row: ConfigRow, exclude_warned: bool) -> str:
    """"runs in the mean / runs", and how many warned runs the mean holds ("5/5, 1 ⚠") or left out ("4/5, 1 ⚠ out")."""
    text = f"{row.test_acc.n}/{row.runs}"
    if row.warned:
        text += f", {row.warned} {WARNED} out" if exclude_warned else f", {row.warned} {WARNED}"
    return text


def _pm(m: MeanStd, scale: float, digits: int) -> str:
    if m.n == 0:
        return "—"
    if m.n == 1 or not math.isfinite(m.std):
        return f"{m.mean * scale:.{digits}f}"
    return f"{m.mean * scale:.{digits}f} ± {m.std * scale:.{digits}f}"


def _diff(d: PairedDifference) -> str:
    if d.n == 0:
        return "—"
    if d.n < 2:
        return f"{d.mean * 100:+.2f} (n=1)"
    return f"{d.mean * 100:+.2f} [{d.low * 100:+.2f}, {d.high * 100:+.2f}]"


def _csv(table: StudyTable) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    stats = ("test_acc", "val_acc", "agreement", "kl_to_teacher", "ece", "seconds")
    writer.writerow(["configuration", "best", "n", "runs", *(f"{s}_{k}" for s in stats for k in ("mean", "std")),
                     "params", "diff_test_acc_vs_baseline", "diff_low", "diff_high", "diff_n", "warned",
                     "warned_left_out", "selection"])
    for r in table.rows:
        d = r.vs_baseline
        writer.writerow([r.label, int(r.best), r.test_acc.n, r.runs,
                         *(x for s in stats for x in (getattr(r, s).mean, getattr(r, s).std)), r.params,
                         *((d.mean, d.low, d.high, d.n) if d else ("", "", "", "")), r.warned,
                         int(table.exclude_warned), table.selection])
    return out.getvalue()


def collect_results(store: Any, study_id: str, selection: str = "best-val") -> list[RunResult]:
    """Every run of a study with its summary under `selection`, oldest first."""
    if selection not in SELECTIONS:
        raise KDError(f"selection must be one of {', '.join(SELECTIONS)}, not {selection!r}")
    records = store.list_runs(sweep_id=study_id, limit=MAX_RUNS + 1)
    if not records:
        raise KDError(f"there is no study {study_id!r} in the store (python -m kdcore studies lists them)")
    return [run_result(r, summarize_points(store.metrics(r.id, names=SELECTION_METRICS, kind="epoch"), selection))
            for r in reversed(records)]


def run_result(record: Any, summary: RunSummary | None, *, key: str | None = None,
               label: str | None = None) -> RunResult:
    """One run (a store record) with its summary as a table row's member. `key` and `label` put it in a group
    of the caller's choosing (a dashboard's "group by"); by default its configuration in a study."""
    r = record
    seconds = r.duration_s if r.status.value == "completed" and r.duration_s is not None else math.nan
    return RunResult(
        run_id=r.id, name=r.name, status=r.status.value, seed=r.spec.seed,
        config_key=key if key is not None else config_key(r.spec),
        label=label if label is not None else (study_runs_tags(r.tags)[1] or r.spec.method_label),
        is_baseline=r.spec.teacher is None, summary=summary,
        params=float((r.info or {}).get("student_params", math.nan)), seconds=seconds, spec=r.spec.to_dict(),
        warnings=tuple(r.warnings))


def build_table(study_id: str, results: Sequence[RunResult], selection: str = "best-val",
                name: str | None = None, *, exclude_warned: bool = False) -> StudyTable:
    """Rows in first-submitted order. The best row has the highest mean validation accuracy at the
    selected epochs (the test numbers play no part in it); Δ pairs each row's runs with the baseline's by seed.
    `exclude_warned`: runs with a training warning count in no mean, interval or best (each row says how many)."""
    groups: dict[str, list[RunResult]] = {}
    for res in results:
        groups.setdefault(res.config_key, []).append(res)
    baselines = [k for k, rs in groups.items() if rs[0].is_baseline]
    base_key = baselines[0] if len(baselines) == 1 else None

    def finished(rs):  # the runs a mean is taken over
        return [x for x in rs if x.finished and not (exclude_warned and x.warned)]

    def by_seed(rs):
        return {x.seed: x.summary.test_acc for x in finished(rs)}

    rows = []
    for key, rs in groups.items():
        done = finished(rs)
        stat = lambda attr, done=done: mean_std(getattr(x.summary, attr) for x in done)  # noqa: E731
        params = next((x.params for x in rs if math.isfinite(x.params)), math.nan)
        vs = paired_difference(by_seed(rs), by_seed(groups[base_key])) if base_key and key != base_key else None
        rows.append(ConfigRow(key=key, label=rs[0].label, is_baseline=key == base_key, runs=len(rs),
                              test_acc=stat("test_acc"), val_acc=stat("val_acc"), agreement=stat("agreement"),
                              kl_to_teacher=stat("kl_to_teacher"), ece=stat("ece"), params=params,
                              seconds=mean_std(x.seconds for x in done), vs_baseline=vs,
                              warned=sum(1 for x in rs if x.finished and x.warned)))
    scored = [r for r in rows if r.val_acc.n and math.isfinite(r.val_acc.mean)]
    if scored:
        best = max(scored, key=lambda r: r.val_acc.mean).key
        rows = [ConfigRow(**{**r.__dict__, "best": r.key == best}) for r in rows]
    return StudyTable(study_id=study_id, name=name or study_id, selection=selection, rows=rows, results=list(results),
                      exclude_warned=exclude_warned)


def study_table(store: Any, study_id: str, selection: str = "best-val", *, exclude_warned: bool = False) -> StudyTable:
    results = collect_results(store, study_id, selection)
    records = store.list_runs(sweep_id=study_id, limit=1)
    name = study_runs_tags(records[0].tags)[0] if records else None
    return build_table(study_id, results, selection, name=name, exclude_warned=exclude_warned)
