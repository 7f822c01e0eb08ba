"""Teachers on Fashion-MNIST, on a CPU budget: a student from scratch, from the best single teacher and
from an ensemble of three; and a student that sees a downscaled view (14×14, 7×7) of what a 28×28 teacher
sees, against its scratch twin at the same resolution. Prints mean ± std over seeds as Markdown.

    python bench/teachers_bench.py [--seeds 3] [--student-limit 1000] [--epochs 4] [--out /tmp/teachers_bench]
    python bench/teachers_bench.py --only resolution --sizes 14,7 --seeds 10   # more seeds of the resolution rows

Budget (chosen for a shared, heavily loaded 2-core CPU): students train on a class-stratified subset of
`--student-limit` samples for `--epochs` epochs; the two extra teachers (LeNet-5 seed 1, LeNet-5-half) on
`--teacher-limit` samples (5,000) for `--teacher-epochs` epochs (3). The packaged LeNet-5 teacher
(kdcore/assets) was trained on all of the training set.
Test accuracy on the full 10,000-image test set at the last epoch."""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from kdcore.spec import RunSpec
from kdcore.train import train

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = str(ROOT / "kdcore" / "assets" / "teacher_fashion_mnist.pt")
DATA = {"name": "fashion-mnist", "augment": False}


def fit(data: dict, out: Path) -> float:
    """The run's final test accuracy; a run already finished in `out` (same spec) is read, not retrained,
    so an interrupted bench continues where it stopped."""
    spec = RunSpec.from_dict(data)
    done = _finished(out, spec)
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    result = train(spec, out, resume=False)
    return float(result.final["test/acc"])


def _finished(out: Path, spec: RunSpec) -> float | None:
    import csv

    if not (out / "metrics.csv").is_file() or not (out / "spec.yaml").is_file():
        return None
    if RunSpec.from_yaml((out / "spec.yaml").read_text()).to_dict() != spec.to_dict():
        return None
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    if rows and "name" in rows[0]:  # long format (kind, epoch, step, name, value)
        last = [r for r in rows if r["name"] == "test/acc" and int(r["epoch"]) == spec.epochs]
        return float(last[-1]["value"]) if last else None
    if not rows or int(rows[-1]["epoch"]) != spec.epochs or not rows[-1].get("test/acc"):  # older wide format
        return None
    return float(rows[-1]["test/acc"])


def extra_teachers(args, out: Path) -> list[tuple[str, str, float]]:
    """(label, checkpoint, test acc) of the two teachers trained here, plus the packaged one."""
    made = [("lenet5 (packaged, all 54,000 samples; test acc 89.8 %)", PACKAGED, None)]
    for name, seed in (("lenet5", 1), ("lenet5_half", 0)):
        path = out / f"teacher_{name}_{seed}"
        spec = {"dataset": {**DATA, "train_limit": args.teacher_limit or None}, "student": name,
                "epochs": args.teacher_epochs,
                "batch_size": 128,
                "seed": seed, "probe_size": 0, "optimizer": {"lr": 0.05}}
        acc = fit(spec, path)
        samples = f"{args.teacher_limit:,} samples" if args.teacher_limit else "all 54,000 samples"
        made.append((f"{name} (seed {seed}, {samples}, {args.teacher_epochs} epochs; test acc "
                      f"{100 * acc:.1f} %)", str(path / "checkpoint.pt"), acc))
    return made


def student(args, seed: int, teacher: dict | None, size: int | None = None) -> dict:
    spec = {"dataset": {**DATA, "train_limit": args.student_limit}, "student": args.student, "epochs": args.epochs,
            "batch_size": 64, "seed": seed, "probe_size": 0}
    if teacher is not None:
        spec["teacher"] = teacher
    if size is not None:  # the resolution experiment's own budget (the same as the test's)
        spec.update(student_input={"size": size}, epochs=args.res_epochs, batch_size=32,
                    evaluation={"val_every": 100}, dataset={**DATA, "train_limit": args.res_limit})
    return spec


def summary(values: list[float]) -> str:
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--student", default="mlp_64")
    p.add_argument("--student-limit", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--out", default="/tmp/teachers_bench")
    p.add_argument("--sizes", default="14,7", help="student input sizes of the resolution experiment")
    p.add_argument("--res-limit", type=int, default=300, help="resolution experiment: training samples")
    p.add_argument("--res-epochs", type=int, default=8, help="resolution experiment: epochs")
    p.add_argument("--teacher-limit", type=int, default=5000, help="the two extra teachers' training samples (0: all)")
    p.add_argument("--teacher-epochs", type=int, default=3, help="the two extra teachers' epochs")
    p.add_argument("--only", choices=("all", "teachers", "resolution"), default="all",
                   help="run one experiment only (e.g. more seeds of the resolution experiment)")
    args = p.parse_args()
    out = Path(args.out)
    started = time.time()
    if args.only != "resolution":
        teachers_experiment(args, out)
    if args.only != "teachers":
        resolution_experiment(args, out)
    print(f"\n(wall time {time.time() - started:.0f} s)")


def teachers_experiment(args, out: Path) -> None:
    teachers = extra_teachers(args, out)
    single = [{"source": "checkpoint", "checkpoint": path} for _, path, _ in teachers]
    ensemble = {"members": single, "combine": "mean"}
    seeds = range(args.seeds)
    accs: dict[str, list[float]] = {"scratch": [], "ensemble": []}
    per_teacher: dict[int, list[float]] = {i: [] for i in range(len(single))}
    for seed in seeds:
        accs["scratch"].append(fit(student(args, seed, None), out / f"scratch_{seed}"))
        for i, t in enumerate(single):
            per_teacher[i].append(fit(student(args, seed, t), out / f"single{i}_{seed}"))
        accs["ensemble"].append(fit(student(args, seed, ensemble), out / f"ensemble_{seed}"))
    best = max(per_teacher, key=lambda i: statistics.mean(per_teacher[i]))
    print(f"## teachers ({args.student} student, {args.student_limit} samples, {args.epochs} epochs, "
          f"{args.seeds} seeds)\n")
    print("| student trained | test accuracy % (mean ± std) |\n|---|---|")
    print(f"| from scratch | {summary(accs['scratch'])} |")
    for i, (label, _, _) in enumerate(teachers):
        mark = " (best single)" if i == best else ""
        print(f"| from {label}{mark} | {summary(per_teacher[i])} |")
    print(f"| from the ensemble of the three (mean of probabilities) | {summary(accs['ensemble'])} |")


def resolution_experiment(args, out: Path) -> None:
    seeds = range(args.seeds)
    packaged = {"source": "checkpoint", "checkpoint": PACKAGED}
    print(f"\n## resolution (teacher: packaged LeNet-5 at 28×28; {args.student} student, {args.res_limit} samples, "
          f"{args.res_epochs} epochs, {args.seeds} seeds)\n")
    print("| student input | scratch % | distilled % | gain (points) | gain per seed (points) |\n|---|---|---|---|---|")
    for size in [int(v) for v in args.sizes.split(",") if v]:
        scratch = [fit(student(args, s, None, size), out / f"res{size}_scratch_{s}") for s in seeds]
        kd = [fit(student(args, s, packaged, size), out / f"res{size}_kd_{s}") for s in seeds]
        gain = statistics.mean(kd) - statistics.mean(scratch)
        per_seed = ", ".join(f"{100 * (k - c):+.1f}" for k, c in zip(kd, scratch))
        print(f"| {size}×{size} | {summary(scratch)} | {summary(kd)} | {100 * gain:+.2f} | {per_seed} |")


if __name__ == "__main__":
    main()
