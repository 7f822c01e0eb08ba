"""A whole run through the trainer against a hand-written PyTorch loop doing the same work, as a ratio.

    .venv/bin/python bench/run_bench.py [--repeats 3] [--examples digits fashion-mnist] [--threads 1]

The shipped KD examples (examples/digits_kd.yaml and examples/fmnist_kd.yaml, on the CPU, with the shipped
teacher of the dataset from kdcore/assets in place of the one the example trains first; Fashion-MNIST on a
class-stratified --fmnist-train-limit subset and --fmnist-epochs epochs so a trial takes a minute, not an hour).
Both sides run the teacher on every batch (teacher_cache: off: a hand-written loop has no cache), the same
augmentation, loss, optimiser and schedule, and the same evaluation policy as the spec's (validation every
`val_every` epochs and at the last; the test set with agreement, KL at ρ=1 and ρ and the student's
calibration when validation improved and at the last epoch; the probe samples' logits every epoch) with the
eval batch and memory format the trainer picks for the device, and save the weights at the end. Set-up (data,
models, teacher passes) is excluded on both sides: both start from the trainer's own set-up, and the trainer's
clock runs from the end of its set-up until run() returns (its final checkpoint and files included).

Timing: process CPU time (every thread of the process, so the trainer's reporter thread counts) with torch
limited to --threads threads. Each side runs in a thread of its own and the two take turns an epoch at a time
(the side waiting is blocked), so both halves of a comparison see the same load on a shared machine; each
side's time is the sum of its turns. --warmup runs come first and are not counted (whichever side ran first
would pay the process's one-off costs, such as the first use of each convolution shape). The figure is the
median over --repeats runs of hand-written time / trainer time (the side going first alternates).
1.0 = as fast; target >= 0.97.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdcore.lab.assets import teacher_path  # noqa: E402
from kdcore.spec import RunSpec, load_spec  # noqa: E402
from kdcore.train import NullCallbacks, Trainer  # noqa: E402
from kdcore.train.fidelity import accuracy, expected_calibration_error  # noqa: E402
from kdcore.train.trainer import autocast_for, channels_last_for_eval, lr_factor, predict  # noqa: E402

EXAMPLES = {"digits": "examples/digits_kd.yaml", "fashion-mnist": "examples/fmnist_kd.yaml"}


def bench_spec(name: str, args) -> RunSpec:
    data = load_spec(ROOT / EXAMPLES[name]).to_dict()
    data.update(device="cpu", teacher_cache="off",
                teacher={"source": "checkpoint", "checkpoint": str(teacher_path(name))})
    if name == "fashion-mnist":
        data["dataset"]["train_limit"] = args.fmnist_train_limit
        data["epochs"] = args.fmnist_epochs
    return RunSpec.from_dict(data)


def handwritten_epochs(t: Trainer, out: Path):
    """The plainest loop over a trainer's set-up (models, data, transfer set, probe indices), yielding after
    each epoch's evaluation; the weights are saved after the last yield."""
    spec = t.spec
    student, teacher, dev, prec = t.student, t.teacher, t.device, t.precision
    x_all, y_all = t.transfer.x, t.transfer.y
    lg, o = spec.logit, spec.optimizer
    if o.name == "sgd":
        opt = torch.optim.SGD(student.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                              nesterov=o.nesterov)
    else:
        opt = torch.optim.AdamW(student.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    steps_per_epoch = math.ceil(len(y_all) / spec.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(spec, s, steps_per_epoch))
    teacher.eval()
    # the teacher's test logits and calibration come from the set-up, as the trainer's do
    teacher_test, teacher_ece = t.teacher_test_logits, t.teacher_ece
    probe_logits = []
    best_val = None
    for epoch in range(1, spec.epochs + 1):
        # the trainer's draws (order and augmentation from the epoch's seed), so both runs validate alike and
        # score the test set at the same epochs
        epoch_seed = spec.seed * 1_000_003 + epoch
        order_gen, aug_gen = torch.Generator().manual_seed(epoch_seed), torch.Generator().manual_seed(epoch_seed)
        perm = torch.randperm(len(y_all), generator=order_gen)
        student.train()
        loss_sum, correct, labelled = 0.0, 0, 0
        for i in range(0, len(perm), spec.batch_size):
            idx = perm[i:i + spec.batch_size]
            x, y = t.augment(x_all[idx], aug_gen), y_all[idx]
            with autocast_for(dev, prec):
                with torch.no_grad():
                    z_t = teacher(x)
                z_s = student(x)
                hard = F.cross_entropy(z_s, y, ignore_index=-1, reduction="sum") / (y != -1).sum().clamp_min(1)
                soft = F.kl_div(F.log_softmax(z_s / lg.rho, 1), F.log_softmax(z_t / lg.rho, 1),
                                reduction="batchmean", log_target=True) * lg.rho ** 2
                loss = lg.alpha * hard + lg.beta * soft
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(y)
            correct += ((z_s.argmax(1) == y) & (y != -1)).sum()
            labelled += (y != -1).sum()
        # what the trainer reports each epoch, read back once
        metrics = {"train/loss": float(loss_sum) / len(y_all), "train/acc": int(correct) / max(int(labelled), 1)}
        last, improved = epoch == spec.epochs, False
        with channels_last_for_eval(student, dev) as cl:
            if last or epoch % spec.evaluation.val_every == 0:
                metrics["val/acc"] = accuracy(predict(student, t.data.val.x, t.eval_batch, dev, prec, cl),
                                              t.data.val.y)
                improved = best_val is None or metrics["val/acc"] > best_val
                best_val = metrics["val/acc"] if improved else best_val
            if last or improved or spec.evaluation.test == "every_epoch":
                test = predict(student, t.data.test.x, t.eval_batch, dev, prec, cl)
                log_t = F.log_softmax(teacher_test, 1)
                log_t_rho = F.log_softmax(teacher_test / lg.rho, 1)
                metrics.update({
                    "test/acc": accuracy(test, t.data.test.y),
                    "agreement": (test.argmax(1) == teacher_test.argmax(1)).float().mean().item(),
                    "kl1": (log_t.exp() * (log_t - F.log_softmax(test, 1))).sum(1).mean().item(),
                    "kl_rho": (log_t_rho.exp() * (log_t_rho - F.log_softmax(test / lg.rho, 1))).sum(1).mean().item(),
                    "ece": expected_calibration_error(test, t.data.test.y), "ece_teacher": teacher_ece,
                })
                probe_logits.append(test[t.probe_idx].cpu())
            else:
                probe_logits.append(predict(student, t.data.test.x[t.probe_idx], t.eval_batch, dev, prec, cl).cpu())
        assert math.isfinite(metrics["train/loss"])
        yield epoch
    torch.save({"state_dict": student.state_dict(), "optimizer": opt.state_dict(), "probes": probe_logits},
               out / "hand.pt")


class Turns:
    """The trainer and the hand-written loop (each in a thread) take turns an epoch at a time, so both see the same
    machine; each side's process CPU time is summed over its own turns (the other side is blocked meanwhile)."""

    def __init__(self, first: str) -> None:
        self.cond = threading.Condition()
        self.first, self.turn = first, None
        self.ready: set[str] = set()
        self.done: set[str] = set()
        self.cpu = {"trainer": 0.0, "hand": 0.0}
        self.mark = 0.0

    def begin(self, side: str) -> None:
        """Set-up done: wait for the other side's set-up, then for this side's first turn."""
        with self.cond:
            self.ready.add(side)
            if len(self.ready) == 2:
                self.turn = self.first
                self.cond.notify_all()
            self.cond.wait_for(lambda: self.turn == side)
            self.mark = time.process_time()

    def switch(self, side: str, finished: bool = False) -> None:
        """End this side's turn (and its run, when finished); wait for its next turn unless the other is done."""
        with self.cond:
            self.cpu[side] += time.process_time() - self.mark
            if finished:
                self.done.add(side)
            other = "hand" if side == "trainer" else "trainer"
            if other not in self.done:
                self.turn = other
                self.cond.notify_all()
                if not finished:
                    self.cond.wait_for(lambda: self.turn == side)
            self.mark = time.process_time()


class TurnTaking(NullCallbacks):
    def __init__(self, turns: Turns) -> None:
        self.turns = turns

    def on_epoch(self, epoch: int, step: int, metrics: dict) -> None:
        self.turns.switch("trainer")  # on the reporter thread, while the loop waits for this call


class TurnTrainer(Trainer):
    def _setup(self) -> None:
        super()._setup()
        self.cb.turns.begin("trainer")


def one_pair(spec: RunSpec, out: Path, first: str) -> dict[str, float]:
    """CPU seconds of a whole run (set-up excluded) of the trainer and of the hand-written loop, epochs
    alternating between them. Each side runs in its own thread (set-up included), so neither gets the main
    thread's memory arena or settings."""
    turns = Turns(first)
    threads = torch.get_num_threads()

    def run_trainer() -> None:
        TurnTrainer(spec, out / "trainer", TurnTaking(turns)).run(resume=False)

    def run_hand() -> None:
        (out / "hand").mkdir(parents=True)
        hand = Trainer(spec, out / "hand")
        hand._setup()
        turns.begin("hand")
        for _ in handwritten_epochs(hand, out / "hand"):
            turns.switch("hand")

    def side(name: str, body) -> threading.Thread:
        def target() -> None:
            torch.set_num_threads(threads)  # OpenMP's count is per thread: a new one would use every core
            try:
                body()
            except BaseException:  # the other side would wait for its turn forever
                traceback.print_exc()
                os._exit(1)
            turns.switch(name, finished=True)

        return threading.Thread(target=target, name=f"bench-{name}")

    workers = [side("trainer", run_trainer), side("hand", run_hand)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return turns.cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="runs of each example first, not counted")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--examples", nargs="+", default=list(EXAMPLES), choices=list(EXAMPLES))
    p.add_argument("--fmnist-train-limit", type=int, default=4096)
    p.add_argument("--fmnist-epochs", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    specs = {name: bench_spec(name, args) for name in args.examples}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in specs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(-args.warmup, args.repeats):
            for name, spec in specs.items():
                out = Path(tmp) / f"{name}-{r}"
                cpu = one_pair(spec, out, first="trainer" if r % 2 == 0 else "hand")
                if r >= 0:  # a warm-up run pays the process's one-off costs (kernels' first use) for both sides
                    runs[name].append(cpu)
                print(f"  {'run' if r >= 0 else 'warm-up'} {r + 1 if r >= 0 else ''} {name}: trainer "
                      f"{cpu['trainer']:.3f} s, hand-written {cpu['hand']:.3f} s cpu -> "
                      f"{cpu['hand'] / cpu['trainer']:.3f}x", file=sys.stderr, flush=True)
    print(f"whole run (set-up excluded), process CPU time, {args.threads} thread(s), epochs alternating between the "
          f"trainer and the hand-written loop, {args.repeats} runs of each, torch {torch.__version__}")
    for name, spec in specs.items():
        ratios = sorted(c["hand"] / c["trainer"] for c in runs[name])
        trainer_s = statistics.median(c["trainer"] for c in runs[name])
        hand_s = statistics.median(c["hand"] for c in runs[name])
        print(f"  {name:13s} KD ({spec.student} <- {teacher_path(name).name}, {spec.epochs} epochs, batch "
              f"{spec.batch_size}): hand-written / trainer median {statistics.median(ratios):.3f}x "
              f"(runs {', '.join(f'{x:.3f}' for x in ratios)}); median CPU s trainer {trainer_s:.3f}, "
              f"hand-written {hand_s:.3f} (target >= 0.97x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
