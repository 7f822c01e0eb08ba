"""A teacher's quality before anyone distils from it: test accuracy and calibration (ECE) on a dataset.

Each teacher is loaded as a run would load it and scored on the dataset's test split on the CPU at the CPU
evaluation batch; a teacher file's logits go through the run's test-logit cache (kdcore.train.split_logits)
under the same key a CPU run uses, so the check and a later run score one teacher once. An ensemble is
scored as its members' distributions combined at ρ=1, the way the spec combines them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from kdcore.errors import KDError
from kdcore.spec import DataSpec, EnsembleSpec, TeacherSpec
from kdcore.train.ensemble import combine_logits
from kdcore.train.fidelity import accuracy, expected_calibration_error
from kdcore.train.split_logits import cached_split_logits, evaluation_key, teacher_file

CPU = torch.device("cpu")


@dataclass(frozen=True)
class HeldOutSplit:
    """The dataset's test split as runs see it (normalised with the train split's statistics)."""

    x: Tensor
    y: Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    key: str | None = None  # names x's contents when the splits were kept (DatasetBundle.key)


@dataclass(frozen=True)
class TeacherScore:
    """One teacher (or a whole ensemble) on the test split."""

    name: str
    accuracy: float
    ece: float
    logits: Tensor  # N×C float32 on the CPU

    @staticmethod
    def of(name: str, logits: Tensor, y: Tensor) -> "TeacherScore":
        return TeacherScore(name, accuracy(logits, y), expected_calibration_error(logits, y), logits)


def load_test_split(dataset: DataSpec) -> HeldOutSplit:
    """The test split a run on `dataset` is scored on (same split seed and normalisation)."""
    from kdcore.data import load_dataset
    from kdcore.train.trainer import SPLIT_SEED

    data = load_dataset(dataset.name, val_fraction=dataset.val_fraction, seed=SPLIT_SEED, device=CPU,
                        path=dataset.path)
    return HeldOutSplit(data.test.x, data.test.y, data.info.num_classes, tuple(data.info.input_shape),
                        data.split_key("test"))


def evaluate_teacher(teacher: TeacherSpec, split: HeldOutSplit, *, eval_batch: int | None = None,
                     who: str = "teacher") -> TeacherScore:
    """Load `teacher` as a run does and score it on `split` on the CPU. Raises KDError (one sentence) when
    it cannot be loaded or does not fit the dataset's classes or input shape."""
    from kdcore.train.trainer import EVAL_BATCH, channels_last_for_eval, load_one_teacher, predict

    c, h, _ = split.input_shape
    model, record = load_one_teacher(teacher, split.num_classes, c, h, who=who)
    model.eval()
    batch = eval_batch or EVAL_BATCH["cpu"]

    def compute() -> Tensor:
        with channels_last_for_eval(model, CPU) as cl:
            return predict(model, split.x, batch, CPU, "fp32", cl)

    try:
        logits = cached_split_logits(teacher_file(teacher), split.x, evaluation_key("cpu", "fp32", batch, False),
                                     compute, inputs_key=split.key)
    except RuntimeError as err:  # e.g. a torchvision model that cannot take this input
        raise KDError(f"the {who} ({record['name']}) cannot run on this dataset's "
                      f"{c}×{h}×{split.input_shape[2]} images ({str(err).splitlines()[0]})") from None
    if logits.dim() != 2 or logits.shape[1] != split.num_classes:
        raise KDError(f"the {who} ({record['name']}) gives {logits.shape[-1]} class scores but the dataset has "
                      f"{split.num_classes} classes")
    return TeacherScore.of(str(record["name"]), logits, split.y)


def ensemble_score(members: Sequence[TeacherScore], weights: Sequence[float] | None, combine: str,
                   y: Tensor) -> TeacherScore:
    """The ensemble's distribution at ρ=1 (members combined by `combine` with `weights`, equal if None)."""
    w = list(weights) if weights else [1.0] * len(members)
    logits = combine_logits([m.logits for m in members], w, combine, 1.0)
    return TeacherScore.of(f"{combine} ensemble", logits, y)


def evaluate_teachers(teacher: TeacherSpec | EnsembleSpec, dataset: DataSpec, *,
                      eval_batch: int | None = None) -> tuple[list[TeacherScore], TeacherScore | None]:
    """Every member's score and, for an ensemble, the combined one (None for a single teacher)."""
    split = load_test_split(dataset)
    if isinstance(teacher, TeacherSpec):
        return [evaluate_teacher(teacher, split, eval_batch=eval_batch)], None
    scores = [evaluate_teacher(m, split, eval_batch=eval_batch, who=f"teacher{i} (ensemble member)")
              for i, m in enumerate(teacher.members)]
    return scores, ensemble_score(scores, teacher.weights, teacher.combine, split.y)
