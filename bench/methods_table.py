"""Every registered distillation method on one Fashion-MNIST teacher → student pair, several seeds,
through the project's own trainer: test accuracy mean ± std, and agreement with the teacher.

Each method runs with its registered defaults (the authors' settings). Logit methods replace the
logit block; hint presets get one pair of layers (`--hint-layers`); feature and relation methods are
added under `losses` with cross-entropy alone as the logit term (KD with α = 1, β = 0), which is how
RepDistiller and mdistiller report them. A method that cannot be built for the pair (FSP and KD-SVD
need equal widths, OFD a teacher with BatchNorm) is listed with the one-sentence reason.

    # the CPU budget (a 1,500-image class-stratified subset, 3 epochs, 3 seeds)
    python bench/methods_table.py --budget tiny --device cpu --markdown table.md
    # a GPU (the whole training set, 15 epochs)
    python bench/methods_table.py --budget full --device cuda --markdown table.md
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from kdcore.errors import KDError
from kdcore.methods import all_methods
from kdcore.spec import RunSpec
from kdcore.train import RecordingCallbacks, train

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = {
    "tiny": {"train_limit": 1500, "epochs": 3, "seeds": 3, "batch": 64},
    "small": {"train_limit": 6000, "epochs": 5, "seeds": 3, "batch": 128},
    "full": {"train_limit": None, "epochs": 15, "seeds": 3, "batch": 256},
}
CE_ONLY = {"method": "kd", "alpha": 1.0, "beta": 0.0}


def run_specs(args: argparse.Namespace) -> list[tuple[str, str, dict]]:
    """(row name, family, spec fields beyond the common ones) for scratch and every registered method."""
    teacher = {"source": "checkpoint", "checkpoint": args.teacher_checkpoint}
    t_layer, s_layer = args.hint_layers.split(":")
    rows = [("scratch", "baseline", {"teacher": None})]
    for record in all_methods():
        if args.only and record.name not in args.only:
            continue
        if record.slot == "logit":
            extra = {"logit": {"method": record.name}}
        elif record.slot == "hints":
            extra = {"logit": CE_ONLY, "hints": [{"teacher_layer": t_layer, "student_layer": s_layer,
                                                  "preset": record.name}]}
        else:
            extra = {"logit": CE_ONLY, "losses": [{"method": record.name}]}
        rows.append((record.name, record.family, {"teacher": teacher, **extra}))
    return rows


def one_run(fields: dict, seed: int, budget: dict, args: argparse.Namespace) -> dict:
    spec = RunSpec.from_dict({
        "dataset": {"name": "fashion-mnist", "train_limit": budget["train_limit"], "augment": False},
        "student": args.student, "epochs": budget["epochs"], "batch_size": budget["batch"], "seed": seed,
        "device": args.device, "probe_size": 0, "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 5e-4},
        "schedule": {"name": "cosine"}, **fields})
    cb = RecordingCallbacks()
    with tempfile.TemporaryDirectory() as out:
        train(spec, out, cb, resume=False)
    final = cb.epochs[-1][2]
    return {"test_acc": 100 * final["test/acc"], "agreement": 100 * final.get("fidelity/agreement", float("nan"))}


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", choices=list(BUDGETS), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", type=int, help="override the budget's number of seeds")
    p.add_argument("--teacher-checkpoint", default=str(ROOT / "kdcore" / "assets" / "teacher_fashion_mnist.pt"))
    p.add_argument("--student", default="lenet5_half")
    p.add_argument("--hint-layers", default="pool:pool", help="teacher:student layer of the hint presets' pair")
    p.add_argument("--only", nargs="*", help="run only these methods (and scratch)")
    p.add_argument("--json", help="write every run's figures here")
    p.add_argument("--markdown", help="write the table here")
    args = p.parse_args()
    budget = dict(BUDGETS[args.budget])
    if args.seeds:
        budget["seeds"] = args.seeds
    torch.set_num_threads(max(1, torch.get_num_threads()) if args.device != "cpu" else 1)

    results: dict[str, dict] = {}
    started = time.perf_counter()
    for name, family, fields in run_specs(args):
        runs, reason = [], None
        t0 = time.perf_counter()
        for seed in range(budget["seeds"]):
            try:
                runs.append(one_run(fields, seed, budget, args))
            except KDError as err:  # the method does not apply to this pair: say why, once
                reason = str(err).splitlines()[0]
                break
        results[name] = {"family": family, "runs": runs, "reason": reason, "seconds": time.perf_counter() - t0}
        shown = reason or f"test {mean_std([r['test_acc'] for r in runs])} %"
        print(f"{name:16s} {family:9s} {shown}  ({results[name]['seconds']:.0f} s)", flush=True)
    total = time.perf_counter() - started

    lines = [f"| method | family | test accuracy % (mean ± std, {budget['seeds']} seeds) | agreement with the teacher % |",
             "| --- | --- | --- | --- |"]
    for name, r in results.items():
        if r["reason"]:
            lines.append(f"| {name} | {r['family']} | n/a: {r['reason']} | — |")
        else:
            lines.append(f"| {name} | {r['family']} | {mean_std([x['test_acc'] for x in r['runs']])} | "
                         f"{mean_std([x['agreement'] for x in r['runs']]) if name != 'scratch' else '—'} |")
    table = "\n".join(lines)
    print(table)
    print(f"total {total:.0f} s")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"budget": budget, "args": vars(args), "total_s": total,
                                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
