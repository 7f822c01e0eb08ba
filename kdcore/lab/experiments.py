"""The lab's one-click experiments as RunSpecs for the run store, and their results read back.

Three experiments, each submitted to the store (a background worker trains them) and tagged
`lab:<experiment>:<dataset>` so the lab page finds them again:
- the temperature sweep: one KD student per ρ in RHO_SWEEP and seed in LAB_SEEDS;
- Hinton's omitted-class experiment: a student distilled from a transfer set without one class,
  scored before and after the bias correction (fitted on the validation split, see kdcore.lab.bias);
- soft labels only (α = 0) against hard labels only (β = 0) against both, each over LAB_SEEDS.
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
from kdcore.summary import TEST_METRIC, VAL_METRIC

RHO_SWEEP: tuple[float, ...] = (1, 2, 4, 8, 16, 32)
# Every setting of the sweep and of soft-vs-hard runs with these seeds: a difference smaller than the
# spread over seeds is noise, and the page shows mean ± std so a lecture can see which is which.
LAB_SEEDS: tuple[int, ...] = (0, 1, 2)
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
    def submit_group(self, specs: Sequence[RunSpec], *, tags: Sequence[str] = (), **kw: Any) -> str: ...
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
def _with_seeds(specs: Sequence[RunSpec], seeds: Sequence[int]) -> list[RunSpec]:
    return [s.model_copy(update={"seed": seed, "name": f"{s.name} seed {seed}"}) for s in specs for seed in seeds]


def _submit_group(store: StoreLike, specs: list[RunSpec], tag: str) -> list[str]:
    group = store.submit_group(specs, tags=["lab", tag])
    return [r.id for r in sorted(store.list_runs(sweep_id=group), key=lambda r: r.created_at)]


def submit_rho_sweep(store: StoreLike, dataset: str, seeds: Sequence[int] = LAB_SEEDS) -> list[str]:
    """One student per (ρ, seed), all in one group."""
    return _submit_group(store, _with_seeds(rho_sweep_specs(dataset), seeds), experiment_tag("rho-sweep", dataset))


def submit_alpha_comparison(store: StoreLike, dataset: str, seeds: Sequence[int] = LAB_SEEDS) -> list[str]:
    """One student per ((α, β), seed), all in one group."""
    return _submit_group(store, _with_seeds(alpha_specs(dataset), seeds), experiment_tag("alpha", dataset))


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


_STATUS_ORDER = ("running", "queued", "failed", "cancelled", "completed")
SEED_COLUMNS = ["status", "epoch", "epochs", "test_acc", "test_std", "agreement", "agreement_std", "n", "run_id"]


def _over_seeds(runs: Sequence[Any]) -> dict[str, Any]:
    """The runs of one setting over seeds: the least finished status, mean and sample std of the final test
    accuracy and agreement over the completed runs (n of them), their ids."""
    statuses = [_status(r) for r in runs]
    done = [r for r in runs if _status(r) == "completed"]

    def stats(key: str) -> tuple[float, float]:
        values = np.array([_final(r, key) for r in done], dtype=float)
        values = values[np.isfinite(values)]
        if not len(values):
            return float("nan"), float("nan")
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")

    test, test_std = stats("test/acc")
    agreement, agreement_std = stats("fidelity/agreement")
    return {"status": min(statuses, key=_STATUS_ORDER.index) if statuses else "queued",
            "epoch": min(int(getattr(r, "epoch", 0)) for r in runs), "epochs": int(runs[0].spec.epochs),
            "test_acc": test, "test_std": test_std, "agreement": agreement, "agreement_std": agreement_std,
            "n": len(done), "run_id": ", ".join(r.id for r in runs)}


def rho_sweep_frame(records: Sequence[Any]) -> pd.DataFrame:
    """One row per ρ of the newest sweep, over its seeds: rho, status, epoch, epochs, test_acc (mean),
    test_std, agreement (mean), agreement_std, n (completed seeds), run_id (the runs' ids)."""
    by_rho: dict[float, list[Any]] = {}
    for r in latest_group(records):
        by_rho.setdefault(float(r.spec.logit.rho), []).append(r)
    rows = [{"rho": rho, **_over_seeds(runs)} for rho, runs in sorted(by_rho.items())]
    return pd.DataFrame(rows, columns=["rho", *SEED_COLUMNS])


def alpha_frame(records: Sequence[Any]) -> pd.DataFrame:
    """One row per (α, β) setting of the newest comparison, over its seeds, in ALPHA_SETTINGS order:
    setting, alpha, beta and the columns of rho_sweep_frame."""
    labels = {(a, b): label for label, a, b in ALPHA_SETTINGS}
    groups: dict[tuple[float, float], list[Any]] = {}
    for r in latest_group(records):
        groups.setdefault((float(r.spec.logit.alpha), float(r.spec.logit.beta)), []).append(r)
    rows = [{"setting": labels.get((a, b), f"α = {a:g}, β = {b:g}"), "alpha": a, "beta": b, **_over_seeds(runs)}
            for (a, b), runs in groups.items()]
    order = {label: i for i, (label, _, _) in enumerate(ALPHA_SETTINGS)}
    frame = pd.DataFrame(rows, columns=["setting", "alpha", "beta", *SEED_COLUMNS])
    return frame.sort_values("setting", key=lambda s: s.map(lambda v: order.get(v, 99)), kind="stable") \
        .reset_index(drop=True)


def rho_verdict(records: Sequence[Any]) -> str | None:
    """What the newest sweep shows about "a ρ above 1 helps": the ρ > 1 with the best mean validation accuracy
    (chosen on validation: choosing on the test set would favour whichever ρ got lucky there) against ρ = 1 on
    the test set at the last epoch, paired over seeds with a 95 % t-interval. None until two seeds of both are
    done, or when the runs have no validation split to choose on."""
    from kdcore.studies.stats import paired_difference

    test: dict[float, dict[int, float]] = {}
    val: dict[float, list[float]] = {}
    for r in latest_group(records):
        if _status(r) == "completed" and np.isfinite(_final(r, TEST_METRIC)):
            rho = float(r.spec.logit.rho)
            test.setdefault(rho, {})[int(r.spec.seed)] = _final(r, TEST_METRIC)
            if np.isfinite(_final(r, VAL_METRIC)):
                val.setdefault(rho, []).append(_final(r, VAL_METRIC))
    above = {rho: accs for rho, accs in test.items() if rho > 1 and len(accs) >= 2 and rho in val}
    if 1.0 not in test or len(test[1.0]) < 2 or not above:
        return None
    best = max(above, key=lambda rho: np.mean(val[rho]))
    d = paired_difference(above[best], test[1.0])
    if d.n < 2:
        return None
    chosen = f"ρ = {best:g}, the best ρ above 1 on validation,"
    span = f"{d.mean * 100:+.2f} points on the test set (95 % interval {d.low * 100:+.2f} to {d.high * 100:+.2f}, " \
           f"{d.n} seeds)"
    if d.low > 0:
        return f"{chosen} beats ρ = 1 by {span}: outside the seed noise, a ρ above 1 helps here."
    if d.high < 0:
        return f"{chosen} is below ρ = 1 by {span}: here ρ = 1 is better."
    return f"{chosen} differs from ρ = 1 by {span}: within the seed noise, so this run does not show that a ρ " \
           "above 1 helps."


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
