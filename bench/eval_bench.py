"""Evaluation's share of a Fashion-MNIST KD epoch on the CPU: the former per-epoch evaluation (validation and
test at batch 1024, contiguous) against today's (batch and memory format chosen for the CPU; validation each
epoch, the test set only when validation improved and at the end).

    .venv/bin/python bench/eval_bench.py [--train-size 2048] [--repeats 3]

examples/fmnist_kd.yaml's student (cnn_small) and batch, the shipped Fashion-MNIST teacher, one torch thread,
process CPU time, best of --repeats. A training epoch is timed on --train-size images through the trainer
(steps only) and scaled per image to the full 54,000; the evaluations are timed on the real 6,000 validation
and 10,000 test images. Page faults (minor) of each evaluation are counted too: large CPU batches churn them.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdcore.lab.assets import teacher_path  # noqa: E402
from kdcore.spec import RunSpec, load_spec  # noqa: E402
from kdcore.train import Trainer  # noqa: E402
from kdcore.train.trainer import channels_last_for_eval, predict  # noqa: E402

FULL_TRAIN = 54_000


def timed(fn) -> tuple[float, int]:
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.process_time()
    fn()
    return time.process_time() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-size", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_spec(ROOT / "examples/fmnist_kd.yaml").to_dict()
    data.update(device="cpu", epochs=1, teacher={"source": "checkpoint", "checkpoint": str(teacher_path("fashion-mnist"))})
    data["dataset"]["train_limit"] = args.train_size
    t = Trainer(RunSpec.from_dict(data), tempfile.mkdtemp())
    t._setup()
    student, dev, d = t.student, t.device, t.data
    best: dict[str, tuple[float, int]] = {}

    def keep(name: str, value: tuple[float, int]) -> None:
        best[name] = min(best.get(name, (float("inf"), 0)), value)

    def old_eval():  # what every epoch did before: both splits at 1024, contiguous
        predict(student, d.val.x, 1024, dev, "fp32")
        predict(student, d.test.x, 1024, dev, "fp32")

    def split_now(x):
        with channels_last_for_eval(student, dev) as cl:
            predict(student, x, t.eval_batch, dev, "fp32", cl)

    evaluate = t._evaluate
    t._evaluate = lambda *a, **k: {}  # time the epoch's steps alone
    for r in range(args.repeats):
        keep("train", timed(lambda r=r: t._epoch(1 + r, 0)))
        keep("old", timed(old_eval))
        keep("val", timed(lambda: split_now(d.val.x)))
        keep("test", timed(lambda: split_now(d.test.x)))
    t._evaluate = evaluate
    per_image = best["train"][0] / min(args.train_size, len(t.transfer))
    print(f"Fashion-MNIST KD ({t.spec.student}, batch {t.spec.batch_size}), CPU time, 1 thread, best of {args.repeats}; "
          f"eval batch now {t.eval_batch} with channels_last weights")
    print(f"  training steps: {best['train'][0]:.2f} s for {min(args.train_size, len(t.transfer))} images "
          f"-> {per_image * FULL_TRAIN:.1f} s for a full epoch of {FULL_TRAIN:,}")
    print(f"  evaluation before (val + test at 1024, contiguous): {best['old'][0]:.2f} s, {best['old'][1]:,} page faults")
    print(f"  evaluation now: val {best['val'][0]:.2f} s ({best['val'][1]:,} faults), test {best['test'][0]:.2f} s "
          f"({best['test'][1]:,} faults); val+test {best['val'][0] + best['test'][0]:.2f} s = "
          f"{(best['val'][0] + best['test'][0]) / best['old'][0]:.2f}x of before")
    for label, images in ((f"{args.train_size:,} images", min(args.train_size, len(t.transfer))), ("full", FULL_TRAIN)):
        steps = per_image * images
        share = lambda e, steps=steps: e / (steps + e)  # noqa: E731
        print(f"  share of an epoch ({label}): before {share(best['old'][0]):.0%}; now, val+test "
              f"{share(best['val'][0] + best['test'][0]):.0%}, val only {share(best['val'][0]):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
