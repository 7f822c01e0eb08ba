"""The lab's shipped files: a small trained teacher per dataset (a KD Studio checkpoint) and a bundle of
its test-set logits, so the lab works offline seconds after launch with nothing trained by the user.

Both are plain dicts of tensors and primitives, loaded with torch.load(weights_only=True).
`scripts/train_lab_teachers.py` rebuilds them with the real trainer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdcore.data import dataset_info
from kdcore.errors import KDError
from kdcore.train.checkpoint import FORMAT, load_checkpoint, load_model_from_checkpoint, save_atomic

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
BUNDLE_FORMAT = "kdstudio-lab-bundle-v1"
# The datasets the lab ships a teacher for, in the order the page offers them.
LAB_DATASETS: tuple[str, ...] = ("digits", "fashion-mnist")


def dataset_slug(dataset: str) -> str:
    """File-name form of a dataset name: fashion-mnist -> fashion_mnist."""
    return dataset_info(dataset).name.replace("-", "_")


def teacher_path(dataset: str) -> Path:
    """kdcore/assets/teacher_<dataset>.pt: a trainer-format checkpoint (load_model_from_checkpoint works)."""
    return ASSETS_DIR / f"teacher_{dataset_slug(dataset)}.pt"


def bundle_path(dataset: str) -> Path:
    """kdcore/assets/lab_<dataset>.pt: the teacher's test-set logits, labels and a few sample images."""
    return ASSETS_DIR / f"lab_{dataset_slug(dataset)}.pt"


@dataclass(frozen=True)
class LabBundle:
    """What the lab page needs, as numpy arrays (no model, no dataset files)."""

    dataset: str
    class_names: list[str]
    labels: np.ndarray            # (N,) test labels
    teacher_logits: np.ndarray    # (N, K) float32, the shipped teacher on the whole test split
    student_logits: np.ndarray    # (N, K) float32, a small student trained on hard labels only
    sample_indices: np.ndarray    # (S,) positions in the test split of the samples with an image
    sample_images: np.ndarray     # (S, C, H, W) uint8
    teacher_name: str
    student_name: str
    teacher_test_acc: float
    student_test_acc: float

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def image_of(self, test_index: int) -> np.ndarray:
        """The uint8 image (C, H, W) of a test sample that ships with the bundle."""
        where = np.flatnonzero(self.sample_indices == test_index)
        if not len(where):
            raise KDError(f"test sample {test_index} has no shipped image; pick one of the listed samples")
        return self.sample_images[int(where[0])]


def slim_checkpoint(checkpoint: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A trainer checkpoint without optimizer/scheduler state (half the bytes, nothing to resume)."""
    if checkpoint.get("format") != FORMAT:
        raise KDError("not a KD Studio checkpoint")
    keep = {k: checkpoint[k] for k in ("format", "model", "state_dict", "epoch", "step", "spec", "history")
            if k in checkpoint}
    keep["state_dict"] = {k: v.detach().cpu().contiguous() for k, v in keep["state_dict"].items()}
    keep.update(extra)
    return keep


def save_teacher(checkpoint: dict[str, Any], path: Path, **extra: Any) -> None:
    save_atomic(slim_checkpoint(checkpoint, **extra), path)


def save_bundle(path: Path, *, dataset: str, class_names: list[str], labels: torch.Tensor,
                teacher_logits: torch.Tensor, student_logits: torch.Tensor, sample_indices: torch.Tensor,
                sample_images: torch.Tensor, teacher_name: str, student_name: str,
                teacher_test_acc: float, student_test_acc: float) -> None:
    # float16 logits halve the file; softmax at ρ ≥ 0.5 does not see the ~1e-3 relative rounding.
    save_atomic({
        "format": BUNDLE_FORMAT, "dataset": dataset, "class_names": list(class_names),
        "labels": labels.to(torch.int16).cpu(),
        "teacher_logits": teacher_logits.to(torch.float16).cpu(),
        "student_logits": student_logits.to(torch.float16).cpu(),
        "sample_indices": sample_indices.to(torch.int32).cpu(),
        "sample_images": sample_images.to(torch.uint8).cpu(),
        "teacher_name": teacher_name, "student_name": student_name,
        "teacher_test_acc": float(teacher_test_acc), "student_test_acc": float(student_test_acc),
    }, path)


def load_bundle(dataset: str, path: str | Path | None = None) -> LabBundle:
    """The shipped bundle of a dataset; a missing or foreign file fails with one sentence."""
    path = Path(path) if path is not None else bundle_path(dataset)
    if not path.is_file():
        raise KDError(f"the lab has no shipped teacher for {dataset} ({path.name} is missing); "
                      "run scripts/train_lab_teachers.py")
    data = load_checkpoint(path)  # weights_only=True
    if data.get("format") != BUNDLE_FORMAT:
        raise KDError(f"{path.name} is not a lab bundle")
    return LabBundle(
        dataset=str(data["dataset"]), class_names=[str(c) for c in data["class_names"]],
        labels=data["labels"].long().numpy(),
        teacher_logits=data["teacher_logits"].float().numpy(),
        student_logits=data["student_logits"].float().numpy(),
        sample_indices=data["sample_indices"].long().numpy(),
        sample_images=data["sample_images"].numpy(),
        teacher_name=str(data["teacher_name"]), student_name=str(data["student_name"]),
        teacher_test_acc=float(data["teacher_test_acc"]), student_test_acc=float(data["student_test_acc"]),
    )


def load_lab_teacher(dataset: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The shipped teacher as a model in eval mode, and its model record."""
    path = teacher_path(dataset)
    if not path.is_file():
        raise KDError(f"the lab has no shipped teacher for {dataset} ({path.name} is missing); "
                      "run scripts/train_lab_teachers.py")
    model, record = load_model_from_checkpoint(path)
    return model.eval(), record
