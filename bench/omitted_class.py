"""Hinton's omitted-class experiment through the real trainer, scored before and after the bias correction.

    .venv/bin/python bench/omitted_class.py --dataset fashion-mnist --omit 1 --rho 8 --epochs 5 --student mlp_64

A student is distilled from the shipped teacher (kdcore/assets) on a transfer set without any training image
of class --omit (RunSpec transfer {kind: omit_classes}). The bias of that class is then fitted on the
VALIDATION split only (two rules: maximise validation accuracy; Hinton's "predict it as often as it occurs")
and the test split is scored once with it. Prints the omitted class, the classes the correction moved most
and all classes, before and after, and appends one JSON line per run to --json."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdcore.lab import experiments as ex  # noqa: E402
from kdcore.lab.assets import load_bundle  # noqa: E402
from kdcore.train import train  # noqa: E402
from kdcore.train.callbacks import NullCallbacks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class PrintLog(NullCallbacks):
    def on_log(self, message: str) -> None:
        print("   ", message, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--omit", type=int, default=None, help="class left out (default: 1 trouser / digit 3)")
    p.add_argument("--student", default=None, help="student model (default: the lab's recipe)")
    p.add_argument("--rho", type=float, default=None)
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--beta", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--augment", action="store_true", help="the dataset's default augmentation (no teacher cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="run folder (default artifacts/omitted_class/<config>)")
    p.add_argument("--json", type=Path, default=ROOT / "artifacts" / "omitted_class.jsonl")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    recipe = {k: v for k, v in (("rho", args.rho), ("alpha", args.alpha), ("beta", args.beta)) if v is not None}
    overrides: dict = {"device": "cpu", "seed": args.seed, "probe_size": 0}
    if args.student:
        overrides["student"] = args.student
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.lr:
        overrides["optimizer"] = {"lr": args.lr}
    if args.augment:
        overrides["dataset"] = {"augment": True}
    spec = ex.omitted_class_spec(args.dataset, args.omit, overrides=overrides, **recipe)
    omitted = ex.omitted_class_of(spec)
    config = (f"{spec.dataset.name} omit={omitted} {spec.student} rho={spec.logit.rho:g} alpha={spec.logit.alpha:g} "
              f"beta={spec.logit.beta:g} epochs={spec.epochs} lr={spec.optimizer.lr:g} bs={spec.batch_size} "
              f"augment={bool(spec.dataset.augment)} seed={spec.seed}")
    out = args.out or ROOT / "artifacts" / "omitted_class" / config.replace(" ", "_").replace("=", "")
    command = ".venv/bin/python bench/omitted_class.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(f"$ {command}\n{config}", flush=True)

    started = time.perf_counter()
    result = train(spec, out, PrintLog(), resume=False)
    train_s = time.perf_counter() - started
    val_z, val_y, test_z, test_y = ex.student_logits_of_run(out / "checkpoint.pt", spec)
    bundle = load_bundle(spec.dataset.name)
    report = ex.omitted_class_report(val_z, val_y, test_z, test_y, omitted, bundle.class_names,
                                     dataset=spec.dataset.name, teacher_test_logits=bundle.teacher_logits)
    names = bundle.class_names
    print(f"teacher test accuracy on {names[omitted]}: {report.teacher_class_acc:.4f}; "
          f"student test accuracy (all classes, uncorrected): {result.final['test/acc']:.4f}; "
          f"train {train_s:.0f} s")
    record = {"command": command, "config": config, "train_s": round(train_s, 1),
              "teacher_class_acc": report.teacher_class_acc, "final": result.final, "methods": {}}
    for method, fit in report.fits.items():
        table = report.tables[method]
        moved = table[(table["index"] >= 0) & (table["index"] != omitted)].assign(
            change=lambda t: (t["after"] - t["before"]).abs()).sort_values("change", ascending=False)
        shown = [omitted, *moved["index"].head(3).tolist()]
        print(f"  bias rule {method!r}: bias {fit.bias:+.3f} fitted on {fit.val_samples} validation images "
              f"(val acc {fit.val_acc_before:.4f} -> {fit.val_acc_after:.4f}, val {names[omitted]} "
              f"{fit.val_class_acc_before:.4f} -> {fit.val_class_acc_after:.4f})")
        for c in [*shown, -1]:
            row = table[table["index"] == c].iloc[0]
            print(f"    test {row['class']:<12} ({int(row['samples']):>5}): {row['before']:.4f} -> {row['after']:.4f}")
        record["methods"][method] = {"fit": fit.to_dict(), "test": table.to_dict(orient="records")}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "a") as f:
        f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
