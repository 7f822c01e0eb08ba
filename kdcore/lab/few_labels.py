"""Few labels, a teacher: the lab's demonstration that distillation helps when labels are scarce.

A small student sees only a handful of labelled digits (a stratified few per class). Trained from scratch it
has nothing else to learn from; distilled, it also learns from the shipped teacher's soft labels on every
other training image, whose label it never sees (the survey's "partial labels" motive). The teacher itself
was trained on all the training labels: what the demonstration shows is that its knowledge reaches the
student through soft labels alone.

Both students are ordinary RunSpecs trained by the real trainer, in-process and on the CPU (seconds on
digits), with the same seeds, the same labelled images per seed and the same number of optimiser steps;
nothing goes to the run store."""
from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kdcore.lab.experiments import STUDENT_RECIPES, base_spec
from kdcore.spec import RunSpec

DATASET = "digits"
# Fractions of the training labels kept; 5 % is about 6 labelled images per digit.
LABEL_FRACTIONS: tuple[float, ...] = (0.025, 0.05, 0.1)
DEFAULT_FRACTION = 0.05
SEEDS: tuple[int, ...] = (0, 1, 2)
KD_EPOCHS = 20
RHO = 4.0
ALPHA, BETA = 0.1, 0.9
ARMS = ("from scratch", "with the teacher (KD)")
STUDENT = STUDENT_RECIPES[DATASET]["student"]  # both arms: the lab's digits student


def _train_labels():
    from kdcore.data import load_dataset
    from kdcore.train.trainer import SPLIT_SEED

    return load_dataset(DATASET, seed=SPLIT_SEED, device="cpu").train.y


def train_size() -> int:
    """Training images of the demonstration's dataset (labelled or not)."""
    return len(_train_labels())


def labelled_count(fraction: float, seed: int = 0) -> int:
    """How many training images keep their label at `fraction` (a stratified pick, as the trainer makes it)."""
    from kdcore.data import stratified_subset

    return len(stratified_subset(_train_labels(), fraction=fraction, seed=seed))


def specs(fraction: float, seed: int) -> dict[str, RunSpec]:
    """The two students of one seed: from scratch on the labelled images only, and distilled from the
    shipped teacher on all training images (labels on the same few). The scratch student takes as many
    optimiser steps as the distilled one, on its smaller set, so neither is short of training."""
    from kdcore.data import num_batches

    kd = base_spec(DATASET, rho=RHO, alpha=ALPHA, beta=BETA, overrides={
        "name": f"few labels {fraction:.1%} KD seed {seed}", "epochs": KD_EPOCHS, "seed": seed, "device": "cpu",
        "transfer": {"kind": "partial_labels", "label_fraction": fraction},
        "evaluation": {"test": "every_epoch"}, "probe_size": 0, "checkpoint_every_s": 10**6})
    steps = KD_EPOCHS * num_batches(train_size(), kd.batch_size, merge_single=True)
    scratch_epochs = math.ceil(steps / num_batches(labelled_count(fraction, seed), kd.batch_size, merge_single=True))
    scratch = kd.model_copy(update={"name": f"few labels {fraction:.1%} scratch seed {seed}", "teacher": None,
                                    "epochs": scratch_epochs})
    return {ARMS[0]: RunSpec.from_dict(scratch.to_dict()), ARMS[1]: kd}


@dataclass(frozen=True)
class FewLabelResult:
    fraction: float
    labelled: int                 # labelled training images each student sees
    unlabelled: int               # further training images, seen only through the teacher's soft labels
    teacher_test_acc: float
    curves: pd.DataFrame          # arm, seed, step, epoch, test_acc: every epoch of every run
    final: pd.DataFrame           # arm, seed, test_acc: the last epoch of every run

    def summary(self) -> pd.DataFrame:
        """Per arm: mean and sample std of the final test accuracy over seeds, and n."""
        g = self.final.groupby("arm", sort=False)["test_acc"]
        return pd.DataFrame({"arm": list(g.groups), "mean": g.mean().to_numpy(), "std": g.std(ddof=1).to_numpy(),
                             "n": g.size().to_numpy()})

    def gains(self) -> np.ndarray:
        """KD minus scratch final test accuracy, seed by seed (same labelled images within a seed)."""
        wide = self.final.pivot(index="seed", columns="arm", values="test_acc")
        return (wide[ARMS[1]] - wide[ARMS[0]]).to_numpy()


def run(fraction: float = DEFAULT_FRACTION, seeds: Sequence[int] = SEEDS) -> FewLabelResult:
    """Train both students for every seed (seconds on two CPU cores) and collect their test curves."""
    from kdcore.train import RecordingCallbacks, train

    rows, finals = [], []
    labelled = unlabelled = 0
    teacher_acc = float("nan")
    for seed in seeds:
        for arm, spec in specs(fraction, seed).items():
            recorder = RecordingCallbacks()
            with tempfile.TemporaryDirectory(prefix="kd-few-labels-") as out:
                train(spec, out, recorder, resume=False)
            for epoch, step, metrics in recorder.epochs:
                rows.append({"arm": arm, "seed": seed, "step": step, "epoch": epoch, "test_acc": metrics["test/acc"]})
            finals.append({"arm": arm, "seed": seed, "test_acc": rows[-1]["test_acc"]})
            if spec.teacher is not None:
                labelled = int(recorder.info["labelled"])
                unlabelled = int(recorder.info["transfer_size"]) - labelled
                teacher_acc = float(recorder.info["teacher_test_acc"])
    return FewLabelResult(float(fraction), labelled, unlabelled, teacher_acc, pd.DataFrame(rows), pd.DataFrame(finals))
