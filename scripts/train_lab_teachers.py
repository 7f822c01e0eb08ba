"""Train the dark-knowledge lab's shipped teachers with the real trainer and write kdcore/assets/.

    .venv/bin/python scripts/train_lab_teachers.py                      # both datasets (~5 min on 2 CPU cores)
    .venv/bin/python scripts/train_lab_teachers.py --datasets digits    # seconds

For each dataset it writes
  teacher_<dataset>.pt  a KD Studio checkpoint (optimizer state dropped), loadable with weights_only=True
                        by kdcore.train.checkpoint.load_model_from_checkpoint and usable as a RunSpec teacher;
  lab_<dataset>.pt      the teacher's and a small hard-label student's test-set logits (float16), the test
                        labels and a few sample images, so the lab page needs neither the dataset nor a model.
Runs are seeded; rerunning gives the same recipe (bit-identical weights are not promised across machines).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install -e .`

from kdcore.data import load_dataset, stratified_subset  # noqa: E402
from kdcore.lab.assets import ASSETS_DIR, LAB_DATASETS, dataset_slug, save_bundle, save_teacher  # noqa: E402
from kdcore.spec import RunSpec  # noqa: E402
from kdcore.train import train  # noqa: E402
from kdcore.train.callbacks import NullCallbacks  # noqa: E402
from kdcore.train.checkpoint import load_checkpoint, load_model_from_checkpoint  # noqa: E402
from kdcore.train.fidelity import accuracy  # noqa: E402
from kdcore.train.trainer import SPLIT_SEED, predict  # noqa: E402

# CPU-friendly recipes: the Fashion-MNIST teacher is LeNet-5 (62K parameters, ~250 KB), ~90% test accuracy.
TEACHERS: dict[str, dict] = {
    "digits": {
        "name": "lab teacher (digits)", "dataset": {"name": "digits"}, "student": "cnn_small",
        "epochs": 30, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 5e-4},
        "schedule": {"name": "cosine"}, "seed": 0,
    },
    "fashion-mnist": {
        "name": "lab teacher (fashion-mnist)", "dataset": {"name": "fashion-mnist"}, "student": "lenet5",
        "epochs": 12, "batch_size": 128, "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 5e-4},
        "schedule": {"name": "cosine"}, "seed": 0,
    },
}
# A small student trained on hard labels only: the "student" side of the lab's ρ² chart.
STUDENTS: dict[str, dict] = {
    "digits": {"student": "mlp_64", "epochs": 10, "batch_size": 64},
    "fashion-mnist": {"student": "mlp_64", "epochs": 2, "batch_size": 128},
}
SAMPLES_PER_CLASS = {"digits": 36, "fashion-mnist": 12}


class PrintLog(NullCallbacks):
    def on_log(self, message: str) -> None:
        print("   ", message, flush=True)


def build_one(dataset: str, out: Path, work: Path) -> None:
    started = time.perf_counter()
    teacher_spec = RunSpec.from_dict({**TEACHERS[dataset], "device": "cpu", "probe_size": 0})
    print(f"{dataset}: training the teacher {teacher_spec.student} for {teacher_spec.epochs} epochs", flush=True)
    result = train(teacher_spec, work / f"teacher_{dataset_slug(dataset)}", PrintLog(), resume=False)
    checkpoint = load_checkpoint(result.out_dir / "checkpoint.pt")

    s = STUDENTS[dataset]
    student_spec = RunSpec.from_dict({
        "name": f"lab hard-label student ({dataset})", "dataset": {"name": dataset, "augment": False},
        "student": s["student"], "epochs": s["epochs"], "batch_size": s["batch_size"],
        "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 5e-4}, "device": "cpu", "probe_size": 0})
    print(f"{dataset}: training the hard-label student {student_spec.student}", flush=True)
    student_result = train(student_spec, work / f"student_{dataset_slug(dataset)}", PrintLog(), resume=False)

    data = load_dataset(dataset, val_fraction=teacher_spec.dataset.val_fraction, seed=SPLIT_SEED, device="cpu")
    teacher, _ = load_model_from_checkpoint(result.out_dir / "checkpoint.pt")
    student, _ = load_model_from_checkpoint(student_result.out_dir / "checkpoint.pt")
    cpu = torch.device("cpu")
    t_logits = predict(teacher, data.test.x, 1024, cpu, "fp32")
    s_logits = predict(student, data.test.x, 1024, cpu, "fp32")
    t_acc, s_acc = accuracy(t_logits, data.test.y), accuracy(s_logits, data.test.y)

    picks = stratified_subset(data.test.y, per_class=SAMPLES_PER_CLASS[dataset], seed=SPLIT_SEED)
    images = (data.denormalize(data.test.x[picks]).clamp(0, 1) * 255).round().to(torch.uint8)

    out.mkdir(parents=True, exist_ok=True)
    teacher_file, bundle_file = out / f"teacher_{dataset_slug(dataset)}.pt", out / f"lab_{dataset_slug(dataset)}.pt"
    save_teacher(checkpoint, teacher_file, lab={"test_acc": t_acc, "recipe": "scripts/train_lab_teachers.py"})
    save_bundle(bundle_file, dataset=dataset, class_names=list(data.info.class_names), labels=data.test.y,
                teacher_logits=t_logits, student_logits=s_logits, sample_indices=picks, sample_images=images,
                teacher_name=teacher_spec.student, student_name=student_spec.student,
                teacher_test_acc=t_acc, student_test_acc=s_acc)
    print(f"{dataset}: teacher test acc {t_acc:.4f}, student test acc {s_acc:.4f}; "
          f"{teacher_file.name} {teacher_file.stat().st_size / 1024:.0f} KB, "
          f"{bundle_file.name} {bundle_file.stat().st_size / 1024:.0f} KB "
          f"({time.perf_counter() - started:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(LAB_DATASETS), choices=list(LAB_DATASETS))
    parser.add_argument("--out", type=Path, default=ASSETS_DIR, help="where the .pt files go (default kdcore/assets)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (keep it small on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="kd_lab_teachers_") as tmp:
        for dataset in args.datasets:
            build_one(dataset, args.out, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
