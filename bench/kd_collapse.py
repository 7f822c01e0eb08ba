"""A small student distilled at the spec's default learning rate can die (constant predictions, finite loss):
LeNet-5-half on 1,000 Fashion-MNIST samples, from a LeNet-5 teacher trained on the same subset. Prints the
final test accuracy of scratch, KD at the defaults (SGD lr 0.05, ρ=4, α=0.1, β=0.9, ρ²), KD with
optimizer.clip_grad_norm 1.0 and KD at lr 0.01, and whether the trainer warned that the student stopped learning.

    python bench/kd_collapse.py [--seeds 0] [--epochs 10] [--out /tmp/kd_collapse]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from kdcore.spec import RunSpec
from kdcore.train import train
from kdcore.train.callbacks import RecordingCallbacks

DATA = {"name": "fashion-mnist", "augment": False, "train_limit": 1000}
VARIANTS = {"scratch": None, "KD (defaults)": {}, "KD, clip_grad_norm 1.0": {"clip_grad_norm": 1.0},
            "KD, lr 0.01": {"lr": 0.01}}


def fit(spec: dict, out: Path) -> tuple[float, bool]:
    cb = RecordingCallbacks()
    result = train(RunSpec.from_dict(spec), out, cb, resume=False)
    return float(result.final["test/acc"]), bool(cb.warnings)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0", help="student seeds, comma-separated")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default="/tmp/kd_collapse")
    args = p.parse_args()
    out, started = Path(args.out), time.time()
    base = {"dataset": DATA, "batch_size": 64, "probe_size": 0, "epochs": args.epochs}
    teacher_acc, _ = fit({**base, "student": "lenet5", "seed": 0}, out / "teacher")
    teacher = {"source": "checkpoint", "checkpoint": str(out / "teacher" / "checkpoint.pt")}
    print(f"teacher lenet5 (1,000 samples, {args.epochs} epochs): test acc {100 * teacher_acc:.1f} %\n")
    print("| seed | student lenet5_half | test acc % | warned |\n|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        for label, optimizer in VARIANTS.items():
            spec = {**base, "student": "lenet5_half", "seed": seed}
            if optimizer is not None:
                spec.update(teacher=teacher, optimizer=optimizer)
            acc, warned = fit(spec, out / f"{label.replace(' ', '_').replace(',', '')}_{seed}")
            print(f"| {seed} | {label} | {100 * acc:.1f} | {'yes' if warned else 'no'} |", flush=True)
    print(f"\n(wall time {time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
