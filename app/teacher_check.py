"""The teachers' quality before launching: each teacher's (and an ensemble's) test accuracy and calibration,
and a warning in plain words when one looks broken, so nobody distils from a broken teacher by mistake.

A finished teacher run is read from its final report; a checkpoint or torchvision teacher (and the ensemble,
which needs every member's logits) is scored by kdcore.train.teacher_quality on the CPU."""
from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdcore.errors import KDError
from kdcore.spec import DataSpec, TeacherSpec

NOT_SCORED = "not scored"  # what the table shows for a teacher's unknown accuracy or ECE (the note says why)
FAR_BELOW = 0.2  # a member this far (in accuracy) below the ensemble's best looks broken
PENDING = "new-teacher"  # app.forms.PENDING_TEACHER: a teacher run this submission trains first
UPLOAD_DIGEST = re.compile(r"-[0-9a-f]{16}(?=\.pt$)")  # app.forms.save_upload names a file after its content


@dataclass(frozen=True)
class Score:
    accuracy: float | None = None
    ece: float | None = None
    problem: str | None = None  # why it cannot be scored, as a sentence's second half


@dataclass(frozen=True)
class TeacherCheck:
    """Scores of the members kdcore evaluated (by index; None: not evaluated) and of the ensemble."""

    members: list[Score | None]
    ensemble: Score | None = None


@dataclass
class QualityTable:
    rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def members_of(teacher: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The single teachers of a spec's teacher mapping (one, or an ensemble's members)."""
    if not teacher:
        return []
    return [dict(m) for m in teacher.get("members", [teacher])]


def needs_evaluation(member: Mapping[str, Any]) -> bool:
    """Whether a teacher's quality is known only by scoring it (not from a run's report)."""
    return member.get("source") in ("checkpoint", "torchvision")


def slow_to_evaluate(members: Sequence[Mapping[str, Any]]) -> bool:
    """Torchvision weights are large (and may be downloaded): scored only when asked."""
    return any(m.get("source") == "torchvision" for m in members)


def fingerprint(member: Mapping[str, Any]) -> str:
    """What a teacher's score depends on besides its spec: its file's size and modification time."""
    from kdcore.train.split_logits import teacher_file

    try:
        path = teacher_file(TeacherSpec.model_validate(member))
        stat = Path(path).stat() if path else None
    except (ValueError, OSError):
        return ""
    return f"{stat.st_size}:{stat.st_mtime_ns}" if stat else ""


def scorable_runs(members: Sequence[Mapping[str, Any]], records: Mapping[str, Any]) -> set[str]:
    """The members' finished runs whose checkpoint is on disk (an ensemble's row needs their logits)."""
    from kdcore.paths import run_dir
    from kdcore.train.checkpoint import CHECKPOINT_NAME

    ids = {m.get("run_id") for m in members if m.get("source") == "run"}
    return {i for i in ids if i in records and records[i].status.value == "completed"
            and (run_dir(i) / CHECKPOINT_NAME).is_file()}


def check_teachers(teacher: Mapping[str, Any], dataset: Mapping[str, Any], scorable_runs: set[str],
                   eval_batch: int | None = None) -> TeacherCheck:
    """Score every checkpoint and torchvision member, and the runs in `scorable_runs` (finished, with a
    checkpoint), on the dataset's test split; then the ensemble, when every member could be scored."""
    from kdcore.train.teacher_quality import TeacherScore, ensemble_score, evaluate_teacher, load_test_split

    members = members_of(teacher)
    try:
        split = load_test_split(DataSpec.model_validate(dataset))
    except (KDError, ValueError):  # the dataset cannot be read: its own field says why
        return TeacherCheck([None] * len(members))
    scores: list[Score | None] = []
    logits: list[TeacherScore | None] = []
    for member in members:
        wanted = needs_evaluation(member) or member.get("run_id") in scorable_runs
        try:
            spec = TeacherSpec.model_validate(member) if wanted else None
        except ValueError:
            spec = None  # an empty field: the form already says what is missing
        if spec is None:
            scores.append(None)
            logits.append(None)
            continue
        try:
            scored = evaluate_teacher(spec, split, eval_batch=eval_batch)
        except KDError as err:
            scores.append(Score(problem=str(err).rstrip(".")))
            logits.append(None)
        else:
            scores.append(Score(scored.accuracy, scored.ece))
            logits.append(scored)
    ensemble = None
    weights = teacher.get("weights")
    fits = not weights or (len(weights) == len(members) and min(weights) >= 0 and sum(weights) > 0)
    if len(members) > 1 and fits and all(s is not None for s in logits):  # else the form says what is wrong
        combined = ensemble_score(logits, weights, teacher.get("combine") or "mean", split.y)
        ensemble = Score(combined.accuracy, combined.ece)
    return TeacherCheck(scores, ensemble)


def describe(member: Mapping[str, Any], records: Mapping[str, Any], named: Any = None) -> str:
    """A teacher in a few words: the run's name and model, the checkpoint's model and file, the weights."""
    source = member.get("source")
    if source == "run":
        if member.get("run_id") == PENDING:
            return "the new teacher this submission trains"
        r = records.get(member.get("run_id"))
        return f"{r.name} ({r.student})" if r is not None else f"run {member.get('run_id')}"
    if source == "checkpoint":
        model = member.get("model") or (named(member["checkpoint"]) if named and member.get("checkpoint") else None)
        file = UPLOAD_DIGEST.sub("", Path(member.get("checkpoint") or "").name) or "no file yet"
        return f"{model or 'checkpoint'} · {file}"
    return f"{member.get('model')} ({member.get('weights') or 'DEFAULT'} weights)"


def _pct(value: float) -> str:
    return f"{value:.1%}"


def quality_table(teacher: Mapping[str, Any] | None, check: TeacherCheck | None, records: Mapping[str, Any],
                  num_classes: int, dataset_title: str, named: Any = None, noted: Collection[int] = ()) -> QualityTable:
    """One row per teacher (and one for an ensemble) with test accuracy, ECE and a note, and the warnings
    a user must read before distilling. `noted`: the teachers (by index) whose form fields already say what is
    wrong with them; a teacher that cannot be scored is then not warned about a second time."""
    members = members_of(teacher)
    table = QualityTable()
    several = len(members) > 1
    chance = 1.0 / max(num_classes, 1)
    accuracies: list[tuple[str, str, float]] = []  # (row label, how a warning names it, accuracy)
    for i, member in enumerate(members):
        what = describe(member, records, named)
        who = f"teacher{i} · {what}" if several else what
        subject = f"{what} (teacher{i})" if several else what  # how a warning names it
        acc = ece = None
        note = ""
        scored = check.members[i] if check is not None and i < len(check.members) else None
        record = records.get(member.get("run_id")) if member.get("source") == "run" else None
        if member.get("source") == "run":
            if member.get("run_id") == PENDING:
                note = "trained first by this submission: its accuracy is known once it completes"
            elif record is None:
                note = "not in the store"
            elif record.status.value != "completed":
                note = "not finished: its accuracy is known once it completes"
            else:  # a finished run's own report
                acc, ece = record.final.get("test/acc"), record.final.get("calib/ece_student")
        elif scored is None:
            note = "not checked yet"
        elif scored.problem and i in noted:
            note = f"{NOT_SCORED} (the note under its field says why)"
        elif scored.problem:
            note = "does not fit this dataset"
            table.warnings.append(f"{subject} cannot teach on {dataset_title}: {scored.problem}.")
        else:
            acc, ece = scored.accuracy, scored.ece
        if acc is not None and acc == acc:
            accuracies.append((who, subject, acc))
            if acc < 2 * chance:
                note = "near chance"
                table.warnings.append(f"{subject} is near chance ({_pct(acc)} on the test set, where guessing "
                                      f"gets {_pct(chance)}): check it before distilling from it.")
        table.rows.append({"teacher": who, "run": member.get("run_id") if member.get("source") == "run" else "",
                           "test accuracy": acc, "calibration error (ECE)": ece, "note": note})
    if several and accuracies:
        _, best_subject, best = max(accuracies, key=lambda a: a[2])
        for who, subject, acc in accuracies:
            if best - acc > FAR_BELOW and acc >= 2 * chance:
                row = next(r for r in table.rows if r["teacher"] == who)
                row["note"] = "far below the others"
                table.warnings.append(f"{subject} is far below the ensemble's best ({_pct(acc)} against "
                                      f"{_pct(best)} for {best_subject}): check it before distilling from it.")
    if several:
        ens = check.ensemble if check is not None else None
        combine = (teacher or {}).get("combine") or "mean"
        table.rows.append({"teacher": f"ensemble ({'mean of probabilities' if combine == 'mean' else 'geometric mean'}"
                                      f", at ρ=1)", "run": "",
                           "test accuracy": ens.accuracy if ens else None,
                           "calibration error (ECE)": ens.ece if ens else None,
                           "note": "" if ens else "known once every teacher can be scored"})
    if not any(row["run"] for row in table.rows):  # no run among the teachers: the column says nothing
        for row in table.rows:
            del row["run"]
    return table
