"""Where the trainer's time goes beyond a hand-written loop's, piece by piece, on digits KD (one thread, CPU time).

    .venv/bin/python bench/step_overhead.py [--epochs 40]

Built on the trainer's own set-up of examples/digits_kd.yaml (shipped teacher, CPU):
- per call, median of 30 rounds of 200 calls, thread CPU time: the Distiller's step path (student + logit-loss
  terms through `Distiller.__call__`, the terms summed as the trainer does) against the same losses written inline;
  `Distiller.train()` against the student's own `train()`; a reporter hand-off round trip (`call_then_poll`, process
  CPU: both threads); reading one epoch's interval back (`interval_metrics`, 21 steps, 2 terms); the collapse watch
  on the validation split; the fidelity report on the test split;
- per epoch, --epochs epochs alternating in this one thread between the trainer's `_epoch` (evaluation included)
  and bench/run_bench.py's hand-written epoch: process CPU time, garbage collections (`gc.callbacks`) and minor page
  faults of each side.
"""
from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run_bench  # noqa: E402

from kdcore.train import NullCallbacks, Trainer  # noqa: E402
from kdcore.train.fidelity import fidelity_report  # noqa: E402
from kdcore.train.health import CollapseWatch  # noqa: E402
from kdcore.train.reporting import Reporter, interval_metrics  # noqa: E402


def per_call_us(fn, clock=time.thread_time, rounds: int = 30, calls: int = 200) -> float:
    times = []
    for _ in range(rounds):
        start = clock()
        for _ in range(calls):
            fn()
        times.append((clock() - start) / calls * 1e6)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(1)
    spec = run_bench.bench_spec("digits", argparse.Namespace())
    spec = type(spec).from_dict({**spec.to_dict(), "epochs": args.epochs + 1})
    tmp = Path(tempfile.mkdtemp())
    trainer = Trainer(spec, tmp / "trainer")
    trainer._setup()
    hand = Trainer(spec, tmp / "hand")
    hand._setup()

    d, student, lg = trainer.distiller, trainer.student, spec.logit
    d.train()
    x, y = trainer.transfer.x[:spec.batch_size], trainer.transfer.y[:spec.batch_size]
    with torch.no_grad():
        z_t = trainer.teacher(x)

    def distiller_step():
        _, losses = d(x, y, epoch=1, teacher_logits=z_t)
        values = iter(losses.values())
        total = next(values).float()
        for v in values:
            total = total + v.float()

    def inline_step():
        z_s = student(x)
        hard = F.cross_entropy(z_s, y, ignore_index=-1, reduction="sum") / (y != -1).sum().clamp_min(1)
        soft = F.kl_div(F.log_softmax(z_s / lg.rho, 1), F.log_softmax(z_t / lg.rho, 1), reduction="batchmean",
                        log_target=True) * lg.rho ** 2
        return lg.alpha * hard + lg.beta * soft

    reporter = Reporter(NullCallbacks())
    steps = {k: [torch.rand(()) for _ in range(21)] for k in ("hard", "soft")}
    totals = [torch.rand(()) for _ in range(21)]
    watch = CollapseWatch(10, 0.1)
    val_logits = trainer._predict_student(trainer.data.val.x)
    test_logits = trainer._predict_student(trainer.data.test.x)
    print(f"per call (µs), digits KD, batch {spec.batch_size}, torch {torch.__version__}")
    print(f"  Distiller step path {per_call_us(distiller_step):.1f}, same losses inline {per_call_us(inline_step):.1f}")
    print(f"  Distiller.train() {per_call_us(d.train):.1f}, student.train() {per_call_us(student.train):.1f}")
    print(f"  reporter hand-off round trip {per_call_us(lambda: reporter.call_then_poll((len, ())), time.process_time):.1f}"
          f" (process CPU)")
    print(f"  interval read-back (21 steps, 2 terms) "
          f"{per_call_us(lambda: interval_metrics(steps, totals, epoch=1, last_step=21)):.1f}")
    print(f"  collapse watch on {len(val_logits)} validation samples "
          f"{per_call_us(lambda: watch.update(1, val_logits, trainer.data.val.y)):.1f}")
    test_y, teacher_test = trainer.data.test.y, trainer.teacher_test_logits
    fidelity_us = per_call_us(lambda: fidelity_report(test_logits, teacher_test, test_y, 4.0, teacher_ece=0.1), calls=50)
    print(f"  fidelity report on {len(test_logits)} test samples {fidelity_us:.1f}")
    reporter.close()

    # whole epochs, alternating in this thread
    side = {"now": ""}
    collections = {"trainer": 0, "hand": 0}
    gc.callbacks.append(lambda phase, info: phase == "start" and side["now"] and collections.__setitem__(
        side["now"], collections[side["now"]] + 1))
    cpu = {"trainer": [], "hand": []}
    faults = {"trainer": 0, "hand": 0}
    hand_epochs = run_bench.handwritten_epochs(hand, tmp / "hand")
    trainer.best_val, step = None, 0
    for epoch in range(1, args.epochs + 1):
        for name in (("trainer", "hand") if epoch % 2 else ("hand", "trainer")):
            side["now"] = name
            before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
            if name == "trainer":
                step, metrics = trainer._epoch(epoch, step)
                trainer.reporter.call_then_poll((trainer.cb.on_epoch, epoch, step, metrics))
            else:
                next(hand_epochs)
            cpu[name].append(time.process_time() - start)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            side["now"] = ""
    trainer.reporter.close()
    t, h = cpu["trainer"][3:], cpu["hand"][3:]
    print(f"per epoch, {len(t)} epochs each after 3 warm-up, alternating in one thread (process CPU):")
    print(f"  trainer median {statistics.median(t) * 1e3:.2f} ms, hand-written {statistics.median(h) * 1e3:.2f} ms, "
          f"hand-written / trainer {sum(h) / sum(t):.3f}")
    print(f"  garbage collections: trainer {collections['trainer']}, hand-written {collections['hand']}; "
          f"minor page faults: trainer {faults['trainer']}, hand-written {faults['hand']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
