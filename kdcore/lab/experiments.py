"""The lab's one-click experiments as RunSpecs for the run store, and their results read back.

Three experiments, each submitted to the store (a background worker trains them) and tagged
`lab:<experiment>:<dataset>` so the lab page finds them again:
- the temperature sweep: one KD student per ρ in RHO_SWEEP;
- Hinton's omitted-class experiment: a student distilled from a transfer set without one class,
  scored before and after the bias correction (fitted on the validation split, see kdcore.lab.bias);
- soft labels only (α = 0) against hard labels only (β = 0) against both.
All use the dataset's shipped teacher (kdcore/assets) and a CPU-friendly student."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from kdcore.data import dataset_info
from kdcore.errors import KDError
from kdcore.lab.assets import LAB_DATASETS, teacher_path
from kdcore.lab.bias import BiasFit, correction_table, fit_class_bias, per_class_accuracy
from kdcore.spec import RunSpec

RHO_SWEEP: tuple[float, ...] = (1, 2, 4, 8, 16, 32)
EXPERIMENTS = ("rho-sweep", "omit", "alpha")
# (label, α, β) of the soft/hard comparison, in the order the page shows them.
ALPHA_SETTINGS: tuple[tuple[str, float, float], ...] = (
    ("hard labels only (β = 0)", 1.0, 0.0),
    ("soft labels only (α = 0)", 0.0, 1.0),
    ("both (α = 0.1, β = 0.9)", 0.1, 0.9),
)
# The class Hinton-style omission leaves out by default: the digit 3 (as in the paper), the trouser.
DEFAULT_OMITTED = {"digits": 3, "fashion-mnist": 1}

# Students and schedules sized for a laptop CPU (each run well under a minute on two quiet cores).
STUDENT_RECIPES: dict[str, dict[str, Any]] = {
    "digits": {"student": "mlp_64", "epochs": 30, "batch_size": 64,
               "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 5e-4}},
    "fashion-mnist": {"student": "lenet5_half", "epochs": 5, "batch_size": 128,
                      "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 5e-4}},
}
# The omitted-class run, soft labels only: chosen with bench/omitted_class.py (see bench/RESULTS.md);
# on Fashion-MNIST it takes the trouser from 0% to ~90% of the test trousers after the bias correction.
OMIT_RECIPES: dict[str, dict[str, Any]] = {
    "digits": {"rho": 8.0, "alpha": 0.0, "beta": 1.0, "epochs": 30},
    "fashion-mnist": {"rho": 4.0, "alpha": 0.0, "beta": 1.0, "epochs": 10},
}


class StoreLike(Protocol):
    def submit(self, spec: RunSpec, *, name: str | None = None, tags: Sequence[str] = (), **kw: Any) -> str: ...
    def submit_sweep(self, base: RunSpec, field: Any, values: list, *, tags: Sequence[str] = (),
                     **kw: Any) -> list[str]: ...
    def list_runs(self, *, tag: str | None = None, **kw: Any) -> list[Any]: ...


def experiment_tag(experiment: str, dataset: str) -> str:
    if experiment not in EXPERIMENTS:
        raise KDError(f"unknown lab experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}")
    return f"lab:{experiment}:{dataset_info(dataset).name}"


def _check_dataset(dataset: str) -> str:
    name = dataset_info(dataset).name
    if name not in LAB_DATASETS:
        raise KDError(f"the lab ships teachers for {', '.join(LAB_DATASETS)} only, not {dataset}")
    return name


def base_spec(dataset: str, *, rho: float = 4.0, alpha: float = 0.1, beta: float = 0.9,
              overrides: dict[str, Any] | None = None) -> RunSpec:
    """A KD run from the shipped teacher to the dataset's lab student. No augmentation, so the
    teacher's logits are computed once and cached (the student sees exactly what the teacher saw)."""
    dataset = _check_dataset(dataset)
    recipe = STUDENT_RECIPES[dataset]
    data: dict[str, Any] = {
        "name": f"lab {dataset}",
        "dataset": {"name": dataset, "augment": False},
        "student": recipe["student"],
        "teacher": {"source": "checkpoint", "checkpoint": str(teacher_path(dataset))},
        "logit": {"method": "kd", "rho": rho, "alpha": alpha, "beta": beta},
        "epochs": recipe["epochs"], "batch_size": recipe["batch_size"],
        "optimizer": dict(recipe["optimizer"]), "schedule": {"name": "cosine"}, "seed": 0,
    }
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return RunSpec.from_dict(data)


def rho_sweep_specs(dataset: str, rhos: Sequence[float] = RHO_SWEEP, **kw: Any) -> list[RunSpec]:
    base = base_spec(dataset, **kw)
    return [base.model_copy(update={"name": f"lab ρ sweep {base.dataset.name} [ρ={r:g}]",
                                    "logit": base.logit.model_copy(update={"rho": float(r)})}) for r in rhos]


def alpha_specs(dataset: str, **kw: Any) -> list[RunSpec]:
    base = base_spec(dataset, **kw)
    return [base.model_copy(update={"name": f"lab soft vs hard {base.dataset.name} [{label}]",
                                    "logit": base.logit.model_copy(update={"alpha": a, "beta": b})})
            for label, a, b in ALPHA_SETTINGS]


def omitted_class_spec(dataset: str, omitted: int | None = None, *, overrides: dict[str, Any] | None = None,
                       **recipe: Any) -> RunSpec:
    """Hinton's experiment: the transfer set loses every training sample of class `omitted`."""
    dataset = _check_dataset(dataset)
    info = dataset_info(dataset)
    omitted = DEFAULT_OMITTED[dataset] if omitted is None else int(omitted)
    if not 0 <= omitted < info.num_classes:
        raise KDError(f"class {omitted} is not one of the {info.num_classes} classes of {info.title}")
    params = {**OMIT_RECIPES[dataset], **recipe}
    spec = base_spec(dataset, rho=params["rho"], alpha=params["alpha"], beta=params["beta"],
                     overrides={"epochs": params["epochs"], **(overrides or {})})
    data = spec.to_dict()
    data["name"] = f"lab omitted class {dataset} [{info.class_names[omitted]} left out, ρ={params['rho']:g}]"
    data["transfer"] = {"kind": "omit_classes", "omit_classes": [omitted]}
    return RunSpec.from_dict(data)


# ---- submitting --------------------------------------------------------------------------------
def submit_rho_sweep(store: StoreLike, dataset: str) -> list[str]:
    specs = rho_sweep_specs(dataset)
    base = specs[0]
    return store.submit_sweep(base.model_copy(update={"name": f"lab ρ sweep {base.dataset.name}"}), "logit.rho",
                              [float(r) for r in RHO_SWEEP], tags=["lab", experiment_tag("rho-sweep", dataset)])


def submit_alpha_comparison(store: StoreLike, dataset: str) -> list[str]:
    base = base_spec(dataset)
    return store.submit_sweep(base.model_copy(update={"name": f"lab soft vs hard {base.dataset.name}"}),
                              ["logit.alpha", "logit.beta"], [[a, b] for _, a, b in ALPHA_SETTINGS],
                              tags=["lab", experiment_tag("alpha", dataset)])


def submit_omitted_class(store: StoreLike, dataset: str, omitted: int | None = None) -> str:
    spec = omitted_class_spec(dataset, omitted)
    return store.submit(spec, tags=["lab", experiment_tag("omit", dataset)])


# ---- reading results back ----------------------------------------------------------------------
def latest_group(records: Sequence[Any]) -> list[Any]:
    """The runs of the newest submission among `records` (one sweep id, or a single run)."""
    if not records:
        return []
    newest = max(records, key=lambda r: r.created_at)
    if newest.sweep_id is None:
        return [newest]
    group = [r for r in records if r.sweep_id == newest.sweep_id]
    return sorted(group, key=lambda r: r.created_at)


def _status(record: Any) -> str:
    return getattr(record.status, "value", str(record.status))


def _final(record: Any, key: str) -> float:
    value = (record.final or {}).get(key)
    return float(value) if value is not None else float("nan")


def rho_sweep_frame(records: Sequence[Any]) -> pd.DataFrame:
    """One row per ρ of the newest sweep: rho, status, epoch, epochs, test_acc, agreement, run_id."""
    rows = [{"rho": float(r.spec.logit.rho), "status": _status(r), "epoch": int(getattr(r, "epoch", 0)),
             "epochs": int(r.spec.epochs), "test_acc": _final(r, "test/acc"),
             "agreement": _final(r, "fidelity/agreement"), "run_id": r.id} for r in latest_group(records)]
    frame = pd.DataFrame(rows, columns=["rho", "status", "epoch", "epochs", "test_acc", "agreement", "run_id"])
    return frame.sort_values("rho", kind="stable").reset_index(drop=True)


def alpha_frame(records: Sequence[Any]) -> pd.DataFrame:
    """One row per (α, β) setting of the newest comparison: setting, alpha, beta, status, epoch, epochs,
    test_acc, agreement, run_id, in ALPHA_SETTINGS order."""
    labels = {(a, b): label for label, a, b in ALPHA_SETTINGS}
    rows = []
    for r in latest_group(records):
        a, b = float(r.spec.logit.alpha), float(r.spec.logit.beta)
        rows.append({"setting": labels.get((a, b), f"α = {a:g}, β = {b:g}"), "alpha": a, "beta": b,
                     "status": _status(r), "epoch": int(getattr(r, "epoch", 0)), "epochs": int(r.spec.epochs),
                     "test_acc": _final(r, "test/acc"), "agreement": _final(r, "fidelity/agreement"),
                     "run_id": r.id})
    order = {label: i for i, (label, _, _) in enumerate(ALPHA_SETTINGS)}
    frame = pd.DataFrame(rows, columns=["setting", "alpha", "beta", "status", "epoch", "epochs", "test_acc",
                                        "agreement", "run_id"])
    return frame.sort_values("setting", key=lambda s: s.map(lambda v: order.get(v, 99)), kind="stable") \
        .reset_index(drop=True)


@dataclass(frozen=True)
class OmittedClassReport:
    """The omitted-class student scored on the test split, before and after the bias correction."""

    dataset: str
    omitted: int
    class_names: list[str]
    fits: dict[str, BiasFit]          # method -> fit on the validation split
    tables: dict[str, pd.DataFrame]   # method -> correction_table on the test split
    teacher_class_acc: float          # the teacher's test accuracy on the omitted class, for reference

    @property
    def omitted_name(self) -> str:
        return self.class_names[self.omitted]


def student_logits_of_run(checkpoint: str | Path, spec: RunSpec, *, device: str = "cpu"
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(val_logits, val_labels, test_logits, test_labels) of a run's student, on the run's own splits."""
    import torch

    from kdcore.data import load_dataset
    from kdcore.train.checkpoint import load_model_from_checkpoint
    from kdcore.train.trainer import SPLIT_SEED, eval_batch_size, predict

    dev = torch.device(device)
    data = load_dataset(spec.dataset.name, val_fraction=spec.dataset.val_fraction, seed=SPLIT_SEED, device=dev,
                        path=spec.dataset.path)
    model, _ = load_model_from_checkpoint(checkpoint)
    model.to(dev)
    val = predict(model, data.val.x, eval_batch_size(spec, dev), dev, "fp32")
    test = predict(model, data.test.x, eval_batch_size(spec, dev), dev, "fp32")
    return val.cpu().numpy(), data.val.y.cpu().numpy(), test.cpu().numpy(), data.test.y.cpu().numpy()


def omitted_class_report(val_logits: np.ndarray, val_labels: np.ndarray, test_logits: np.ndarray,
                         test_labels: np.ndarray, omitted: int, class_names: Sequence[str], *, dataset: str = "",
                         teacher_test_logits: np.ndarray | None = None,
                         methods: Sequence[str] = ("accuracy", "prior")) -> OmittedClassReport:
    """Fit the omitted class's bias on validation (each method), then score the test split with it."""
    fits = {m: fit_class_bias(val_logits, val_labels, omitted, m) for m in methods}
    tables = {m: correction_table(test_logits, test_labels, fit, class_names) for m, fit in fits.items()}
    teacher_acc = float("nan")
    if teacher_test_logits is not None:
        teacher_acc = float(per_class_accuracy(teacher_test_logits, test_labels, len(class_names))[omitted])
    return OmittedClassReport(dataset, int(omitted), list(class_names), fits, tables, teacher_acc)


def omitted_class_of(spec: RunSpec) -> int:
    if spec.transfer.kind != "omit_classes" or not spec.transfer.omit_classes:
        raise KDError("this run's transfer set omits no class")
    return int(spec.transfer.omit_classes[0])
