"""The Home page's quick start: the digits trio that shows what distillation buys.

A teacher learns from all labels; a scratch student and a KD student see only 5% of them (the
rest of the training set is an unlabelled transfer set for the KD student), the KD run waiting
for its teacher. On this project's 2-core CPU the three finish in well under two minutes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from kdcore.spec import RunSpec

TAG = "quickstart"
LABEL_FRACTION = 0.05
ROLES = ("teacher", "scratch", "kd")
ROLE_TITLES = {"teacher": "Teacher (all labels)", "scratch": "Student from scratch (5% labels)",
               "kd": "KD student (5% labels + teacher)"}


def group_tag(teacher_id: str) -> str:
    return f"{TAG}:{teacher_id}"


def _common(device: str) -> dict[str, Any]:
    return {"dataset": {"name": "digits"}, "batch_size": 64, "device": device, "seed": 0,
            "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 5e-4}, "schedule": {"name": "cosine"}}


def teacher_spec(device: str = "auto") -> RunSpec:
    """A small CNN on every label (about 99% test accuracy after 12 epochs; seconds on a CPU)."""
    return RunSpec.from_dict({**_common(device), "name": "quick start: teacher (cnn_small, all labels)",
                              "student": "cnn_small", "epochs": 12})


def scratch_spec(device: str = "auto") -> RunSpec:
    """The student trained on the 5% of labels it may see, with no teacher: the baseline."""
    return RunSpec.from_dict({**_common(device), "name": "quick start: scratch student (mlp_64, 5% labels)",
                              "student": "mlp_64", "epochs": 60,
                              "transfer": {"kind": "partial_labels", "label_fraction": LABEL_FRACTION}})


def kd_spec(teacher_id: str, device: str = "auto") -> RunSpec:
    """The same student and 5% of labels, plus the teacher's soft labels on the whole training set."""
    return RunSpec.from_dict({
        **_common(device), "name": "quick start: KD student (mlp_64, 5% labels + teacher)",
        "student": "mlp_64", "epochs": 30,
        "teacher": {"source": "run", "run_id": teacher_id},
        "logit": {"method": "kd", "rho": 4.0, "alpha": 0.5, "beta": 0.5, "soft_loss": "kl", "rho_squared": True},
        "transfer": {"kind": "partial_labels", "label_fraction": LABEL_FRACTION},
    })


@dataclass(frozen=True)
class Trio:
    teacher: str
    scratch: str
    kd: str

    def ids(self) -> list[str]:
        return [self.teacher, self.scratch, self.kd]

    def role_of(self, run_id: str) -> str:
        return {self.teacher: "teacher", self.scratch: "scratch", self.kd: "kd"}[run_id]


def submit_trio(store: Any, device: str = "auto", owner: str | None = None) -> Trio:
    """Queue the three runs (teacher first, so a single worker trains it first); the KD run waits for it."""
    teacher_id = store.submit(teacher_spec(device), owner=owner, tags=[TAG, "teacher"])
    tags = [TAG, group_tag(teacher_id)]
    store.set_tags(teacher_id, [TAG, "teacher", group_tag(teacher_id)])
    scratch_id = store.submit(scratch_spec(device), owner=owner, tags=[*tags, "scratch"])
    kd_id = store.submit(kd_spec(teacher_id, device), owner=owner, tags=[*tags, "kd"], depends_on=teacher_id)
    return Trio(teacher_id, scratch_id, kd_id)


def latest_trio(store: Any) -> Trio | None:
    """The most recently launched quick start whose three runs still exist, or None."""
    runs = store.list_runs(tag=TAG, limit=60)
    for run in runs:  # newest first
        group = next((t for t in run.tags if t.startswith(TAG + ":")), None)
        if group is None:
            continue
        members = {r.id: r for r in runs if group in r.tags}
        roles = {}
        for r in members.values():
            role = next((x for x in ROLES if x in r.tags), None)
            if role:
                roles[role] = r.id
        if set(roles) == set(ROLES):
            return Trio(roles["teacher"], roles["scratch"], roles["kd"])
    return None


def trio_frame(records: dict[str, Any], trio: Trio) -> pd.DataFrame:
    """The three runs' test accuracies side by side (finished runs only): columns run, accuracy, note."""
    rows = []
    for role, run_id in zip(ROLES, trio.ids()):
        record = records.get(run_id)
        acc = (record.final or {}).get("test/acc") if record is not None else None
        if acc is None or acc != acc:
            continue
        agreement = (record.final or {}).get("fidelity/agreement")
        note = f"agreement with the teacher {agreement:.1%}" if agreement is not None and agreement == agreement else ""
        rows.append({"run": ROLE_TITLES[role], "accuracy": float(acc), "note": note, "id": run_id})
    return pd.DataFrame(rows, columns=["run", "accuracy", "note", "id"])
