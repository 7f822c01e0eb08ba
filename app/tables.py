"""Tables the pages show, built from store records as pandas DataFrames (no Streamlit here)."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from kdcore.summary import WARNED, health_text

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
# Test accuracy at the epoch validation selected (kdcore.summary), and at the last epoch: never the best test.
SELECTED_ACC, LAST_ACC = "test acc (best val)", "test acc (last)"
HEALTH = "health"  # the column that marks a run whose trainer warned (a student that stopped learning)
RUN_COLUMNS = ["status", HEALTH, "name", SELECTED_ACC, LAST_ACC, "agreement", "method", "ρ / α / β",
               "teacher → student", "dataset", "duration", "tags", "notes", "id", "created"]


def notes_preview(notes: str, max_len: int = 60) -> str:
    """A run's notes in one table cell: the first non-empty line, shortened, "…" when more follows."""
    lines = [line.strip() for line in (notes or "").splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    if len(first) > max_len:
        return first[:max_len - 1].rstrip() + "…"
    return first + (" …" if len(lines) > 1 else "")


def notes_markdown(notes: str) -> str:
    """Notes as Markdown that keeps the writer's line breaks (Markdown would join single lines into one)."""
    return "\n".join(line + "  " if line.strip() else line for line in (notes or "").splitlines())


def format_duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def status_text(status: Any) -> str:
    return str(getattr(status, "value", status))


def teacher_student(record: Any) -> str:
    teacher = record.teacher_label
    return f"{teacher} → {record.student}" if teacher else f"{record.student} (no teacher)"


NO_TEACHER = "labels only (no teacher)"


def method_text(record: Any) -> str:
    """The method as the dashboard shows it: a run without a teacher (a teacher run itself, or a baseline)
    learned from labels alone, which is no distillation method, so it is not named like one."""
    return NO_TEACHER if record.spec.teacher is None else record.method_label


def logit_settings(record: Any) -> str:
    spec = record.spec
    if spec.teacher is None:
        return "—"
    lg = spec.logit  # each method has its own parameters: one it lacks shows as "—"
    return " / ".join(f"{v:g}" if isinstance(v, (int, float)) else "—"
                      for v in (getattr(lg, "rho", None), getattr(lg, "alpha", None), getattr(lg, "beta", None)))


def _num(value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return f


def runs_frame(records: Sequence[Any], selected: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One row per run with the columns of the Runs table; accuracies as fractions (NaN when unknown).
    `selected`: run id -> test accuracy at the epoch with the best validation accuracy."""
    selected = selected or {}
    rows = []
    for r in records:
        final = r.final or {}
        rows.append({
            "id": r.id,
            "status": status_text(r.status),
            HEALTH: health_text(r.warnings),
            "name": r.name,
            "dataset": r.dataset,
            "teacher → student": teacher_student(r),
            "method": method_text(r),
            "ρ / α / β": logit_settings(r),
            LAST_ACC: _num(final.get("test/acc")),
            SELECTED_ACC: _num(selected.get(r.id, final.get("test/acc"))),
            "agreement": _num(final.get("fidelity/agreement")),
            "duration": format_duration(r.duration_s),
            "created": r.created_at,
            "tags": ", ".join(r.tags),
            "notes": notes_preview(getattr(r, "notes", "")),
        })
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


SORTS = {
    "newest first": ("created", False),
    "oldest first": ("created", True),
    "test accuracy at best validation": (SELECTED_ACC, False),
    "test accuracy at the last epoch": (LAST_ACC, False),
    "agreement": ("agreement", False),
    "name": ("name", True),
    "status": ("status", True),
}


def filter_runs(frame: pd.DataFrame, *, statuses: Iterable[str] = (), datasets: Iterable[str] = (),
                text: str = "", tags: Iterable[str] = (), sort: str = "newest first") -> pd.DataFrame:
    """The Runs table after the page's filters and sort. `statuses` are plain values ("running")."""
    out = frame
    statuses, datasets, tags = list(statuses), list(datasets), list(tags)
    if statuses:
        out = out[out["status"].isin(statuses)]
    if datasets:
        out = out[out["dataset"].isin(datasets)]
    if text.strip():
        needle = text.strip().lower()
        hay = (out["name"] + " " + out["id"] + " " + out["teacher → student"] + " " + out["method"] + " "
               + out["notes"] + " " + out[HEALTH]).str.lower()
        out = out[hay.str.contains(needle, regex=False)]
    if tags:
        wanted = set(tags)
        out = out[out["tags"].map(lambda s: bool(wanted & {t.strip() for t in s.split(",") if t.strip()}))]
    column, ascending = SORTS.get(sort, SORTS["newest first"])
    return out.sort_values(column, ascending=ascending, na_position="last", kind="stable")


def warned_runs(records: Iterable[Any]) -> list[tuple[Any, str]]:
    """(run, warning) for every warning of the given runs: the full sentences behind the health column."""
    return [(r, w) for r in records for w in r.warnings]


def mark_warned(labels: Mapping[str, str], records: Iterable[Any]) -> dict[str, str]:
    """Run labels (run id -> label) with "⚠ " before those of runs whose trainer warned: legends and tables."""
    warned = {r.id for r in records if r.warnings}
    return {i: f"{WARNED} {label}" if i in warned else label for i, label in labels.items()}


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"logit": {"rho": 4}} -> {"logit.rho": 4}; lists of mappings (hints) get an index: hints.0.preset."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{path}.{i}."))
        else:
            out[path] = value
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "[]"
    return str(value)


def spec_comparison(specs: Mapping[str, Mapping[str, Any]], *, only_differences: bool = False) -> pd.DataFrame:
    """Specs side by side: one row per dotted field, one column per run label, plus a bool column
    `differs` (True where the runs disagree). Values are strings so mixed types sit in one column."""
    flat = {label: flatten(spec) for label, spec in specs.items()}
    fields: list[str] = []
    for f in flat.values():
        fields += [k for k in f if k not in fields]
    rows = []
    for field in fields:
        values = [_cell(f.get(field)) for f in flat.values()]
        row = {"field": field, **dict(zip(flat.keys(), values)), "differs": len(set(values)) > 1}
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["field", *flat.keys(), "differs"])
    if only_differences:
        frame = frame[frame["differs"]]
    return frame.set_index("field")


def differing_fields(specs: Sequence[Mapping[str, Any]], ignore: Iterable[str] = ("name", "tags")) -> list[str]:
    """Dotted fields whose value is not the same in every spec (a sweep's swept field, for one)."""
    if len(specs) < 2:
        return []
    flat = [flatten(s) for s in specs]
    keys: list[str] = []
    for f in flat:
        keys += [k for k in f if k not in keys]
    skip = set(ignore)
    return [k for k in keys if k not in skip and len({_cell(f.get(k)) for f in flat}) > 1]


FINAL_COLUMNS = {"test/acc": "test acc", "val/acc": "val acc", "fidelity/agreement": "agreement",
                 "fidelity/kl_rho1": "KL to teacher (ρ=1)", "calib/ece_student": "ECE",
                 "teacher/test_acc": "teacher acc"}


def final_metrics_table(records: Sequence[Any], labels: Mapping[str, str]) -> pd.DataFrame:
    """Final metrics of several runs: one row per run (its label), one column per metric, and the health
    column when a run's trainer warned; metrics no run has are left out."""
    rows = {labels[r.id]: {**{col: _num((r.final or {}).get(name)) for name, col in FINAL_COLUMNS.items()},
                           HEALTH: health_text(r.warnings) or None}  # last: the label carries the ⚠ already
            for r in records}
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=[*FINAL_COLUMNS.values(), HEALTH])
    frame.index.name = "run"
    return frame.dropna(axis=1, how="all")


def sweep_frame(records: Sequence[Any], field: str) -> pd.DataFrame:
    """A sweep's runs as rows: columns run, value (of `field`), status, test_acc, agreement."""
    rows = []
    for r in records:
        value = flatten(r.spec.to_dict()).get(field)
        rows.append({"run": r.name, "id": r.id, "value": value, "status": str(getattr(r.status, "value", r.status)),
                     "test_acc": _num((r.final or {}).get("test/acc")),
                     "agreement": _num((r.final or {}).get("fidelity/agreement"))})
    return pd.DataFrame(rows, columns=["run", "id", "value", "status", "test_acc", "agreement"])


FIELD_NAMES = {"logit.rho": "ρ", "logit.alpha": "α", "logit.beta": "β", "logit.method": "method",
               "optimizer.lr": "lr", "transfer.label_fraction": "label fraction"}
MAX_LABEL_FIELDS = 3  # more differing fields than this and a run is labelled by its name


def field_label(field: str) -> str:
    """A spec field as a legend shows it: ρ for logit.rho, the dotted path otherwise."""
    return FIELD_NAMES.get(field, field)


def _value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else _cell(value)


def run_labels(records: Sequence[Any], max_len: int = 42) -> dict[str, str]:
    """Short unique labels for legends and column headers, saying what tells the runs apart: the spec
    fields that differ ("ρ = 2, α = 0.5": a sweep's runs by the swept value) when at most three do,
    else the names without the prefix they all share ("quick start: "), long ones shortened in the
    middle so both ends stay; the id is added where two would read the same."""
    specs = [getattr(r, "spec", None) for r in records]
    fields: list[str] = []
    if len(records) > 1 and all(s is not None for s in specs):
        dicts = [s.to_dict() for s in specs]
        fields = differing_fields(dicts)
    if 1 <= len(fields) <= MAX_LABEL_FIELDS:
        short = {r.id: ", ".join(f"{field_label(f)} = {_value_text(flatten(d).get(f))}" for f in fields)
                 for r, d in zip(records, dicts)}
    else:
        names = [r.name for r in records]
        prefix = _common_word_prefix(names) if len(names) > 1 else ""
        short = {r.id: _shorten(r.name[len(prefix):] or r.name, max_len) for r in records}
    counts: dict[str, int] = {}
    for label in short.values():
        counts[label] = counts.get(label, 0) + 1
    return {i: (f"{label} ({i})" if counts[label] > 1 else label) for i, label in short.items()}


def _shorten(text: str, max_len: int) -> str:
    """Text cut in the middle to max_len characters: the start and the end (where a name often says its
    setting) both stay."""
    if len(text) <= max_len:
        return text
    head = (max_len - 1) * 3 // 5
    tail = max_len - 1 - head
    return text[:head].rstrip() + "…" + text[-tail:].lstrip()


def _common_word_prefix(names: Sequence[str]) -> str:
    """The longest shared start of all names that ends after a separator (': ', ' ', '-')."""
    first = min(names, key=len)
    end = 0
    for i, ch in enumerate(first):
        if any(n[i] != ch for n in names):
            break
        if ch in " :-_/":
            end = i + 1
    return first[:end]


def metric_groups(names: Iterable[str]) -> dict[str, list[str]]:
    """The run view's charts: which logged metric goes in which chart (charts with no metric are left out)."""
    names = sorted(set(names))
    groups = {
        "Loss terms": [n for n in names if n.startswith("loss/")],
        "Accuracy": [n for n in ("train/acc", "val/acc", "test/acc", "teacher/test_acc") if n in names],
        "Teacher–student agreement": [n for n in ("fidelity/agreement",) if n in names],
        "KL to the teacher": [n for n in ("fidelity/kl_rho1", "fidelity/kl_rho") if n in names],
        "Learning rate": [n for n in ("lr",) if n in names],
        "Throughput": [n for n in ("throughput",) if n in names],
        "GPU memory": [n for n in ("gpu_mem_mb",) if n in names],
    }
    # the total first: it is the curve people read; a single term equals the total, so it is left out
    if "loss/total" in groups["Loss terms"] and len(groups["Loss terms"]) == 2:
        groups["Loss terms"] = ["loss/total"]
    if "loss/total" in groups["Loss terms"]:
        groups["Loss terms"] = ["loss/total"] + [n for n in groups["Loss terms"] if n != "loss/total"]
    return {title: group for title, group in groups.items() if group}


CHART_ORDER = ("Loss terms", "Accuracy", "Teacher–student agreement", "KL to the teacher", "Learning rate",
               "Throughput", "GPU memory")


def chart_slots(names: Iterable[str], *, has_teacher: bool, on_gpu: bool) -> list[tuple[str, list[str]]]:
    """The run view's charts in a fixed order, including those a run will log but has not yet (the
    accuracy before the first epoch ends): each chart keeps its place on the page from the first
    refresh to the last, so a live refresh updates charts in place instead of moving them about."""
    logged = metric_groups(names)
    expected = {"Loss terms", "Accuracy", "Learning rate", "Throughput"}
    if has_teacher:
        expected |= {"Teacher–student agreement", "KL to the teacher"}
    if on_gpu:
        expected.add("GPU memory")
    return [(title, logged.get(title, [])) for title in CHART_ORDER if title in logged or title in expected]


FROM_ZERO = {"Learning rate", "Throughput", "GPU memory"}  # charts whose y axis should start at 0

EPOCH_METRICS = {"train/loss", "train/acc", "val/acc", "test/acc", "teacher/test_acc", "fidelity/agreement",
                 "fidelity/kl_rho1", "fidelity/kl_rho", "calib/ece_student", "calib/ece_teacher", "epoch_time"}


def x_axis_for(names: Iterable[str]) -> str:
    """Epoch metrics are drawn against the epoch, step metrics against the step."""
    return "epoch" if set(names) <= EPOCH_METRICS else "step"


def latest_values(frame: pd.DataFrame | None, names: Iterable[str]) -> dict[str, tuple[int, float]]:
    """name -> (epoch, value) of the last point of each metric in a run's frame. The test set is read only at
    epochs where validation improved, so the newest epoch may lack a test accuracy that an earlier one has."""
    if frame is None or not len(frame):
        return {}
    points = frame[frame["name"].isin(list(names))].sort_values("step")
    last = points.groupby("name").tail(1)
    return {row.name: (int(row.epoch), float(row.value)) for row in last.itertuples(index=False)}


def events_text(events: Sequence[Any], limit: int = 200) -> str:
    """The log tail as plain text lines: time, level (when not info) and message."""
    lines = []
    for e in list(events)[-limit:]:
        level = "" if e.level == "info" else f"[{e.level.upper()}] "
        lines.append(f"{e.time:%H:%M:%S}  {level}{e.message}")
    return "\n".join(lines)


def append_points(frame: pd.DataFrame, points: Sequence[Any]) -> pd.DataFrame:
    """The chart's frame with new MetricPoints added (points replace stored ones with the same name and step)."""
    if not points:
        return frame
    new = pd.DataFrame({"step": [p.step for p in points], "epoch": [p.epoch for p in points],
                        "name": [p.name for p in points], "value": [p.value for p in points],
                        "wall_time": [p.wall_time for p in points]})
    if frame is None or len(frame) == 0:
        return new
    out = pd.concat([frame, new], ignore_index=True)
    return out.drop_duplicates(subset=["name", "step"], keep="last").reset_index(drop=True)


# ---- Compare ---------------------------------------------------------------------------------------
PREFERRED_METRICS = ("test/acc", "fidelity/agreement", "loss/total")
METRIC_COLUMNS = ["step", "epoch", "name", "value", "wall_time"]


def default_compare_selection(records: Sequence[Any], requested: str | None = None, count: int = 3) -> list[str]:
    """The runs Compare opens with: those named in `requested` ("id1,id2"), else the latest finished
    runs, else simply the latest (records come newest first)."""
    known = {r.id for r in records}
    wanted = [i for i in (requested or "").split(",") if i in known]
    if wanted:
        return wanted
    done = [r.id for r in records if r.status.value == "completed"]
    return (done or [r.id for r in records])[:count]


def combined_metrics(frames: Iterable[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """One long frame of several runs' (label, metric frame) pairs, the label in a `run` column."""
    parts = [f.assign(run=label) for label, f in frames if len(f)]
    if not parts:
        return pd.DataFrame(columns=[*METRIC_COLUMNS, "run"])
    return pd.concat(parts, ignore_index=True)


def default_metric(names: Sequence[str]) -> str | None:
    """The metric shown first: accuracy, agreement or the total loss when logged, else the first name."""
    preferred = [n for n in PREFERRED_METRICS if n in names]
    return preferred[0] if preferred else (names[0] if names else None)


WALL_TIME = "wall time (s)"  # the Compare x axis of seconds since each run's first point
X_AXES = ("step", "epoch", WALL_TIME)


def overlay_data(frame: pd.DataFrame, metric: str, x: str) -> pd.DataFrame:
    """The points to draw for `metric` against `x`: a step metric drawn per epoch is averaged over each
    epoch (per run); against wall time each run starts at 0 s; anything else is drawn as logged."""
    if x == WALL_TIME:
        data = frame[frame["name"] == metric]
        return data.assign(**{WALL_TIME: data["wall_time"] - data.groupby("run")["wall_time"].transform("min")})
    if x == "epoch" and x_axis_for([metric]) == "step":
        return frame[frame["name"] == metric].groupby(["run", "epoch", "name"], as_index=False)["value"].mean()
    return frame


def sweep_members(records: Iterable[Any], sweep_id: str) -> list[Any]:
    """The runs of one sweep, oldest first (the order its values were given in)."""
    return sorted((r for r in records if r.sweep_id == sweep_id), key=lambda r: r.created_at)


def sweep_label(records: Iterable[Any], sweep_id: str) -> str:
    """"rho · 3 runs · <id>": the swept field(s), the number of runs and the sweep's id."""
    members = sweep_members(records, sweep_id)
    fields = differing_fields([r.spec.to_dict() for r in members])
    return f"{', '.join(fields) or 'sweep'} · {len(members)} runs · {sweep_id}"


def metrics_csv_text(store: Any, run_id: str) -> str:
    """Every stored point of a run as the long CSV of kdcore.metrics_csv (the same format as the run folder's
    metrics.csv): what the dashboard's "Metrics (CSV)" download holds, even while the run trains."""
    from kdcore import metrics_csv

    epochs = store.metrics(run_id, kind="epoch")
    kinds = {(p.step, p.name): "epoch" for p in epochs}
    return metrics_csv.to_text(metrics_csv.points_rows([*store.metrics(run_id, kind="step"), *epochs], kinds))
