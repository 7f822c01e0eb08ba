"""Fashion-MNIST time-to-accuracy through the project's own trainer (issue 8).

Stages: (1) a teacher; (2) 3 seeds of a <100K-parameter student from scratch and 3 with KD;
(3) the few-label regime (600 labels: scratch on those 600, KD over the whole train set as an
unlabelled transfer set); (4) a feature method (AT by default) on the student of stage 2.
Prints every accuracy, the means, each stage's time and the total; --json writes them too.

    # a GPU (targets: teacher >= 95.0, KD mean >= 93.5, few-label KD >= 92.5 and >= scratch + 10,
    # stages 1+2 <= 150 s on one H100)
    python bench/fmnist_pipeline.py --budget full --device cuda
    # a smoke run of the same code on a CPU
    python bench/fmnist_pipeline.py --budget tiny --device cpu
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

from kdcore.spec import RunSpec
from kdcore.train import RecordingCallbacks, train

BUDGETS = {
    # epochs per stage; 'subset' trims the train split so the CPU smoke run takes a minute or two
    "tiny": {"teacher": "cnn_small", "teacher_epochs": 3, "student_epochs": 2, "few_epochs": 3, "seeds": 2,
             "batch": 256, "subset": 4096},
    "full": {"teacher": "wrn_16_4", "teacher_epochs": 15, "student_epochs": 15, "few_epochs": 15, "seeds": 3,
             "batch": 512, "subset": None},
}
STUDENT = "cnn_small"
FEW_LABELS = 600
TRAIN_SIZE = 54_000  # Fashion-MNIST train split after the 10% validation hold-out


def spec(b: dict, device: str, **over) -> RunSpec:
    base = dict(dataset={"name": "fashion-mnist", "augment": True, "train_limit": b["subset"]},
                student=b.get("student", STUDENT), epochs=b["student_epochs"],
                batch_size=b["batch"], device=device, probe_size=0,
                optimizer={"name": "sgd", "lr": 0.2 if b["batch"] >= 512 else 0.1, "momentum": 0.9,
                           "weight_decay": 5e-4, "nesterov": True},
                schedule={"name": "cosine", "warmup_epochs": 1 if b["student_epochs"] > 2 else 0})
    base.update(over)
    return RunSpec.from_dict(base)


def run(s: RunSpec, out: Path) -> dict:
    cb = RecordingCallbacks()
    t0 = time.perf_counter()
    train(s, out, cb, resume=False)
    final = cb.epochs[-1][2]
    result = {"test_acc": 100 * final["test/acc"], "agreement": 100 * final.get("fidelity/agreement", float("nan")),
              "params": cb.info["student_params"], "device": cb.info["device"], "cache": cb.info["teacher_cache"],
              "seconds": round(time.perf_counter() - t0, 1),
              "train_seconds": round(sum(m["epoch_time"] for _, _, m in cb.epochs), 1)}
    curve = [round(100 * m["val/acc"], 2) for _, _, m in cb.epochs if "val/acc" in m]
    print(f"  run {out.name}: {s.student}, {s.epochs} epochs, batch {s.batch_size}: {json.dumps(result)}; "
          f"val acc by epoch {curve}", flush=True)
    return {**result, "val_curve": curve}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=BUDGETS, default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--feature", default="at", choices=["at", "fitnets", "ofd"])
    p.add_argument("--rho", type=float, default=4.0)
    p.add_argument("--json", help="write all figures to this file")
    p.add_argument("--out", help="keep run folders here (default: a temporary folder)")
    p.add_argument("--student", default=STUDENT, help=f"zoo model of stages 2-4 (default {STUDENT})")
    p.add_argument("--teacher-checkpoint", help="skip stage 1 and distil from this checkpoint")
    p.add_argument("--stages", default="1234", help="which stages to run, e.g. 12 (default all)")
    p.add_argument("--seeds", type=int, help="seeds of stage 2 (default: the budget's)")
    p.add_argument("--batch", type=int, help="batch size (default: the budget's)")
    args = p.parse_args()
    b = dict(BUDGETS[args.budget], student=args.student)
    if args.seeds:
        b["seeds"] = args.seeds
    if args.batch:
        b["batch"] = args.batch
    results: dict = {"budget": args.budget, "torch": torch.__version__, "stages": {}}
    if torch.cuda.is_available() and args.device != "cpu":
        results["card"] = torch.cuda.get_device_name()
    t_all = time.perf_counter()

    def save() -> None:
        results["total_seconds"] = time.perf_counter() - t_all
        if args.json:  # after every stage: a run cut short still leaves the stages it finished
            Path(args.json).write_text(json.dumps(results, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)

        def stage(name, fn):
            if name[0] not in args.stages:
                return
            t0 = time.perf_counter()
            value = fn()
            results["stages"][name] = {"seconds": time.perf_counter() - t0, **value}
            print(f"[{name}] {time.perf_counter() - t0:.1f}s: {json.dumps(value)}", flush=True)
            save()

        teacher_ckpt = Path(args.teacher_checkpoint) if args.teacher_checkpoint else root / "teacher" / "checkpoint.pt"
        if not args.teacher_checkpoint:
            stage("1_teacher", lambda: run(spec(b, args.device, student=b["teacher"], epochs=b["teacher_epochs"]),
                                           root / "teacher"))
        teacher = {"source": "checkpoint", "checkpoint": str(teacher_ckpt)}
        kd = {"rho": args.rho, "alpha": 0.1, "beta": 0.9}

        def students():
            out = {"scratch": [], "kd": []}
            for seed in range(b["seeds"]):
                out["scratch"].append(run(spec(b, args.device, seed=seed), root / f"scratch{seed}")["test_acc"])
                out["kd"].append(run(spec(b, args.device, seed=seed, teacher=teacher, logit=kd),
                                     root / f"kd{seed}")["test_acc"])
            return {**out, "scratch_mean": statistics.mean(out["scratch"]), "kd_mean": statistics.mean(out["kd"])}

        stage("2_students", students)

        def few_labels():
            fraction = FEW_LABELS / (b["subset"] or TRAIN_SIZE)
            partial = {"kind": "partial_labels", "label_fraction": fraction}
            scratch = run(spec(b, args.device, epochs=b["few_epochs"] * 10, transfer=partial), root / "few_scratch")
            kd_run = run(spec(b, args.device, epochs=b["few_epochs"], transfer=partial, teacher=teacher,
                              logit={"rho": args.rho, "alpha": 0.5, "beta": 0.5}), root / "few_kd")
            return {"labels": FEW_LABELS, "scratch": scratch["test_acc"], "kd": kd_run["test_acc"],
                    "gain": kd_run["test_acc"] - scratch["test_acc"]}

        stage("3_few_labels", few_labels)
        hints = [{"teacher_layer": "block2", "student_layer": "stage1", "preset": args.feature},
                 {"teacher_layer": "block3", "student_layer": "stage2", "preset": args.feature}] \
            if b["teacher"].startswith("wrn") else \
            [{"teacher_layer": "stage1", "student_layer": "stage1", "preset": args.feature},
             {"teacher_layer": "stage2", "student_layer": "stage2", "preset": args.feature}]
        stage("4_feature", lambda: run(spec(b, args.device, teacher=teacher, logit=kd, hints=hints),
                                       root / "feature"))
    s = results["stages"]
    if "1_teacher" in s and "2_students" in s:
        results["stages_1_2_seconds"] = s["1_teacher"]["seconds"] + s["2_students"]["seconds"]
    save()
    parts = []
    if "1_teacher" in s:
        parts.append(f"teacher {s['1_teacher']['test_acc']:.2f}")
    if "2_students" in s:
        parts.append(f"scratch mean {s['2_students']['scratch_mean']:.2f} | KD mean {s['2_students']['kd_mean']:.2f}")
    if "3_few_labels" in s:
        parts.append(f"few-label scratch {s['3_few_labels']['scratch']:.2f} -> KD {s['3_few_labels']['kd']:.2f}")
    if "4_feature" in s:
        parts.append(f"{args.feature} {s['4_feature']['test_acc']:.2f}")
    if "stages_1_2_seconds" in results:
        parts.append(f"stages 1+2 {results['stages_1_2_seconds']:.1f}s")
    print(" | ".join(parts + [f"total {results['total_seconds']:.1f}s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
