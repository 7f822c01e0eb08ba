"""A small student distilled at the spec's default learning rate can die (constant predictions, finite loss):
LeNet-5-half on 1,000 Fashion-MNIST samples, from a LeNet-5 teacher trained on the same subset. Prints the
final test accuracy of scratch, KD at the defaults (SGD lr 0.05, ρ=4, α=0.1, β=0.9, ρ²), KD with
optimizer.clip_grad_norm 1.0 and KD at lr 0.01, and whether the trainer warned that the student stopped learning.

    python bench/kd_collapse.py [--seeds 0] [--epochs 10] [--out /tmp/kd_collapse]
    python bench/kd_collapse.py --probe --seeds 0,1,2   # gradient norms: at initialisation, and per step
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from kdcore.spec import RunSpec
from kdcore.train import train
from kdcore.train.callbacks import RecordingCallbacks

DATA = {"name": "fashion-mnist", "augment": False, "train_limit": 1000}
VARIANTS = {"scratch": None, "KD (defaults)": {}, "KD, clip_grad_norm 1.0": {"clip_grad_norm": 1.0},
            "KD, lr 0.01": {"lr": 0.01}}


def fit(spec: dict, out: Path, resume: bool = False) -> tuple[float, bool]:
    cb = RecordingCallbacks()
    result = train(RunSpec.from_dict(spec), out, cb, resume=resume)
    return float(result.final["test/acc"]), bool(cb.warnings)


def probe(spec: dict, out: Path, epochs: int = 2) -> None:
    """The gradient norm of the first batch by loss term, then of every step of the first `epochs` epochs."""
    from kdcore.train.trainer import Trainer, params_of

    trainer = Trainer(RunSpec.from_dict(spec), out)
    trainer._setup()
    params = params_of(trainer.optimizer)
    if trainer.teacher is not None:
        x, y = trainer.transfer.x[:64], trainer.transfer.y[:64]
        terms = trainer.distiller.logit_loss(trainer.student(x), trainer.teacher(x).detach(), y)
        norms = {k: float(torch.cat([g.flatten() for g in torch.autograd.grad(v, params, retain_graph=True)]).norm())
                 for k, v in terms.items()}
        print("  first batch, gradient norm by term: " + ", ".join(f"{k} {v:.3f}" for k, v in norms.items()))
    seen: list[float] = []
    step = trainer.optimizer.step

    def recording_step(*a, **k):
        seen.append(float(torch.nn.utils.clip_grad_norm_(params, float("inf"))))
        return step(*a, **k)

    trainer.optimizer.step = recording_step
    done = 0
    for epoch in range(1, epochs + 1):
        done, metrics = trainer._epoch(epoch, done)
        print(f"  epoch {epoch}: val acc {100 * metrics['val/acc']:.1f} %")
    print("  gradient norm, steps 1-20: " + " ".join(f"{v:.2f}" for v in seen[:20]) +
          f"; max over {len(seen)} steps {max(seen):.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0", help="student seeds, comma-separated")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default="/tmp/kd_collapse")
    p.add_argument("--probe", action="store_true", help="gradient norms of scratch and KD instead of whole runs")
    args = p.parse_args()
    out, started = Path(args.out), time.time()
    base = {"dataset": DATA, "batch_size": 64, "probe_size": 0, "epochs": args.epochs}
    teacher_acc, _ = fit({**base, "student": "lenet5", "seed": 0}, out / "teacher", resume=True)  # a finished teacher is reused
    teacher = {"source": "checkpoint", "checkpoint": str(out / "teacher" / "checkpoint.pt")}
    print(f"teacher lenet5 (1,000 samples, {args.epochs} epochs): test acc {100 * teacher_acc:.1f} %\n")
    if args.probe:
        for seed in (int(s) for s in args.seeds.split(",")):
            for label, teacher_spec in (("scratch", None), ("KD (defaults)", teacher)):
                print(f"seed {seed}, {label}:")
                spec = {**base, "student": "lenet5_half", "seed": seed}
                probe({**spec, "teacher": teacher_spec} if teacher_spec else spec, out / "probe")
        return
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
