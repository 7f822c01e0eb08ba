"""The GPU check: every CUDA path once for correctness, then the trainer's overhead and the Fashion-MNIST
pipeline, within one time budget. Each section runs as its own process with its own time limit, so a
hang or a crash in one still leaves the others' figures.

    python bench/gpu_check.py --out DIR [--budget-s 400] [--device cuda]
    python bench/gpu_check.py --out DIR --device cpu --quick      # dry run of the same script on a CPU

Sections: env (card, torch, driver), tests (tests/test_device_paths.py with KD_TEST_DEVICE, and the
trainer/worker tests, which pick the GPU by themselves through device auto), trainer_bench, profile
(torch.profiler over student and teacher steps: where a step's time goes), pipeline
(bench/fmnist_pipeline.py). Writes DIR/gpu_check.json (every figure) and one log per section; prints a
short table last.

The Fashion-MNIST IDX files come from KD_DATA_DIR/fashion-mnist (or the Debian package); wheels for
pydantic/SQLAlchemy travel beside the checkout where the GPU machine lacks them (see bench/RESULTS.md)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, share of the budget it may use at most, minimum seconds worth starting it with)
SECTIONS = ("env", "tests", "trainer_bench", "profile", "pipeline")


def run_logged(name: str, cmd: list[str], out: Path, timeout_s: float, env: dict | None = None) -> dict:
    """Run `cmd` with its output in out/<name>.log, killed (with its children) at timeout_s; the log's
    tail is echoed afterwards. Returns rc ('timeout' when killed) and seconds."""
    started = time.perf_counter()
    log_path = out / f"{name}.log"
    print(f"\n=== {name}: {' '.join(cmd)} (limit {timeout_s:.0f}s)", flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc = "timeout"
    if rc == "timeout":
        with open(log_path, "a") as log:
            log.write(f"\n[gpu_check] killed after {timeout_s:.0f}s\n")
    seconds = time.perf_counter() - started
    tail = log_path.read_text(errors="replace").splitlines()[-25:]
    print("\n".join(f"  {line[:400]}" for line in tail))
    print(f"=== {name}: rc {rc} in {seconds:.1f}s", flush=True)
    return {"rc": rc, "seconds": round(seconds, 1), "log": log_path.name}


def section_env(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "python": platform.python_version(), "cuda_available": torch.cuda.is_available(),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    if torch.cuda.is_available() and device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        info.update(card=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                    multiprocessors=p.multi_processor_count)
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as err:
            info["nvidia_smi"] = f"not available ({err})"
    return info


def parse_pytest(log_text: str) -> dict:
    """Per-test outcomes from pytest -v lines (complete even when the run was cut short), and the
    FAILED/ERROR lines of its -ra summary, which carry the first line of each error."""
    outcomes = re.findall(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL)", log_text, re.M)
    counts: dict[str, int] = {}
    for _, outcome in outcomes:
        counts[outcome.lower()] = counts.get(outcome.lower(), 0) + 1
    failures = [line.strip() for line in log_text.splitlines() if re.match(r"^(FAILED|ERROR) ", line)]
    if not failures:
        failures = [f"{name} {outcome}" for name, outcome in outcomes if outcome in ("FAILED", "ERROR")]
    return {"counts": counts, "failures": failures}


def parse_bench(log_text: str) -> dict:
    out = {}
    if m := re.search(r"\(a\) trainer KD step ([\d,]+) img/s vs hand-written ([\d,]+) img/s: ([\d.]+)x", log_text):
        out["a_trainer_img_s"], out["a_hand_img_s"] = (float(m.group(i).replace(",", "")) for i in (1, 2))
        out["a_ratio"] = float(m.group(3))
    if m := re.search(r"\(b\) KD epoch with teacher cache ([\d,]+) img/s vs student-only ([\d,]+) img/s: "
                      r"time ratio ([\d.]+)x", log_text):
        out["b_cache_img_s"], out["b_scratch_img_s"] = (float(m.group(i).replace(",", "")) for i in (1, 2))
        out["b_ratio"] = float(m.group(3))
    return out


def profile_main(device: str, out: Path, quick: bool) -> int:
    """Where a training step's time goes: torch.profiler over a slice of the trainer's own epoch for the
    pipeline's student (KD, cached teacher logits) and its teacher; plus img/s against the batch size."""
    import tempfile

    import torch
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, str(ROOT / "bench"))
    from fmnist_pipeline import BUDGETS
    from fmnist_pipeline import spec as pipeline_spec

    from kdcore.models import build_model
    from kdcore.train import NullCallbacks, Trainer
    from kdcore.train.checkpoint import FORMAT, model_record, save_atomic
    from kdcore.train.teacher_cache import TeacherCache

    b = dict(BUDGETS["tiny" if quick else "full"])
    results: dict = {}
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = build_model(b["teacher"], 10, 1, 28)
        save_atomic({"format": FORMAT, "model": model_record(b["teacher"], 10, 1, 28), "state_dict": t.state_dict()},
                    tmp / "teacher.pt")
        teacher = {"source": "checkpoint", "checkpoint": str(tmp / "teacher.pt")}
        kd = {"rho": 4.0, "alpha": 0.1, "beta": 0.9}
        cases = [("student_kd_cached", dict(teacher=teacher, logit=kd), 512),
                 ("teacher", dict(student=b["teacher"]), 512)]
        if not quick:  # a larger batch, and the step as CUDA graphs (compile's reduce-overhead; compiles first)
            cases += [("student_kd_cached", dict(teacher=teacher, logit=kd), 2048),
                      ("student_kd_cached_cuda_graphs", dict(teacher=teacher, logit=kd, cuda_graphs=True), 512)]
        for label, over, batch in cases:
            graphs = over.pop("cuda_graphs", False)
            s = pipeline_spec(b, device, batch_size=batch, **over)
            trainer = Trainer(s, tmp / f"{label}{batch}", NullCallbacks())
            trainer._setup()
            if graphs:  # a candidate for the trainer, measured here first: the student's step as CUDA graphs
                trainer.distiller.use_compiled_student(torch.compile(trainer.student, mode="reduce-overhead"))
            steps = 3 if quick else 60
            n = min(len(trainer.transfer), steps * batch)
            trainer.transfer.x, trainer.transfer.y = trainer.transfer.x[:n], trainer.transfer.y[:n]
            if trainer.teacher_cache is not None:
                trainer.teacher_cache = TeacherCache(n, 10, s.teacher_cache_views, trainer.augment, s.seed,
                                                     trainer.device)
            # the cache fills while the first epoch runs; later epochs showing the same view read it
            every = trainer.teacher_cache.views if trainer.teacher_cache is not None else 1
            # _epoch ends with an evaluation: a small one, so the steps dominate what is timed
            keep = torch.arange(256, device=trainer.device)
            trainer.data.val, trainer.data.test = trainer.data.val.subset(keep), trainer.data.test.subset(keep)
            trainer.teacher_test_logits = (trainer.teacher_test_logits[keep]
                                           if trainer.teacher_test_logits is not None else None)
            trainer.probe_idx = trainer.probe_idx[:0]
            trainer._epoch(1, 0)  # warm-up: cuDNN autotuning, allocator, lazy inits
            sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
            sync()
            t0 = time.perf_counter()
            trainer._epoch(1 + every, 0)
            sync()
            wall = time.perf_counter() - t0
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
            with profile(activities=activities) as prof:
                trainer._epoch(1 + 2 * every, 0)
                sync()
            ka = prof.key_averages()
            device_us = sum(e.self_device_time_total for e in ka) if trainer.device.type == "cuda" else 0.0
            name = f"{label}_b{batch}"
            results[name] = {"steps": -(-n // batch), "epoch_wall_s_incl_eval": round(wall, 3),
                             "images_per_s_incl_eval": round(n / wall), "device_kernel_s": round(device_us / 1e6, 3),
                             "kernel_launches": sum(e.count for e in ka if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                                                    "cudaLaunchKernelExC")),
                             "graph_launches": sum(e.count for e in ka if e.key == "cudaGraphLaunch")}
            sort = "self_cuda_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
            lines += [f"##### {name}: {results[name]}", ka.table(sort_by=sort, row_limit=14, max_name_column_width=60)]
            lines += [ka.table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=60)]
            del trainer
            (out / "profile.txt").write_text("\n".join(lines))  # after each case: a cut-short run keeps the rest
            (out / "profile.json").write_text(json.dumps(results))
    (out / "profile.txt").write_text("\n".join(lines))
    print(json.dumps(results, indent=1))
    (out / "profile.json").write_text(json.dumps(results))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget-s", type=float, default=400.0, help="wall-clock budget for all sections")
    p.add_argument("--quick", action="store_true", help="tiny sizes everywhere (a CPU dry run)")
    p.add_argument("--skip", default="", help="comma-separated sections to leave out")
    p.add_argument("--pipeline-args", default="", help="extra fmnist_pipeline.py options, e.g. '--stages 12'")
    p.add_argument("--tests", default="tests/test_device_paths.py tests/test_trainer.py", help="test files")
    p.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one in-process section
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.section == "profile":
        return profile_main(args.device, out, args.quick)

    t_start = time.perf_counter()
    left = lambda: args.budget_s - (time.perf_counter() - t_start)  # noqa: E731
    skip = set(filter(None, args.skip.split(",")))
    py = sys.executable
    report: dict = {"command": " ".join(sys.argv), "device": args.device, "quick": args.quick, "sections": {}}
    sec = report["sections"]

    def save() -> None:
        report["total_seconds"] = round(time.perf_counter() - t_start, 1)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))

    report["env"] = section_env(args.device)
    print(json.dumps(report["env"], indent=1), flush=True)
    save()
    env = {"KD_TEST_DEVICE": args.device, "PYTHONUNBUFFERED": "1", "KD_LOCAL_WORKER": "0"}

    if "tests" not in skip:
        tests = args.tests.split()
        marks = "not postgres and not browser" + (" and not slow" if args.quick else "")
        sec["tests"] = run_logged("tests", [py, "-m", "pytest", *tests, "-q", "-m", marks, "-p", "no:cacheprovider",
                                            "-v", "--durations=12", "-o", "addopts=-ra"],
                                  out, min(left() * 0.4, 150), env)
        sec["tests"].update(parse_pytest((out / "tests.log").read_text()))
        save()

    if "trainer_bench" not in skip:
        size = ["--train-size", "1024", "--repeats", "1"] if args.quick else ["--train-size", "54000", "--repeats", "3"]
        sec["trainer_bench"] = run_logged("trainer_bench", [py, "bench/trainer_bench.py", "--device", args.device, *size],
                                          out, min(left() * 0.2, 45), env)
        sec["trainer_bench"].update(parse_bench((out / "trainer_bench.log").read_text()))
        save()

    if "profile" not in skip:
        quick = ["--quick"] if args.quick else []
        sec["profile"] = run_logged("profile", [py, __file__, "--out", str(out), "--device", args.device,
                                                "--section", "profile", *quick], out, min(left() * 0.3, 70), env)
        if (out / "profile.json").is_file():
            sec["profile"]["figures"] = json.loads((out / "profile.json").read_text())
            (out / "profile.json").unlink()  # folded into gpu_check.json
        save()

    if "pipeline" not in skip:
        budget = ["--budget", "tiny", "--stages", "12", "--seeds", "1"] if args.quick else ["--budget", "full"]
        sec["pipeline"] = run_logged("pipeline", [py, "bench/fmnist_pipeline.py", *budget, "--device", args.device,
                                                  "--json", str(out / "pipeline.json"), *args.pipeline_args.split()],
                                   out, max(left() - 5, 10), env)
        if (out / "pipeline.json").is_file():
            sec["pipeline"]["figures"] = json.loads((out / "pipeline.json").read_text())
        save()

    save()
    print("\n=== summary")
    print(f"card: {report['env'].get('card', 'cpu')} | torch {report['env']['torch']} | total "
          f"{report['total_seconds']}s")
    for name, s in sec.items():
        brief = {k: v for k, v in s.items() if k not in ("log", "figures", "failures")}
        print(f"{name}: {json.dumps(brief)}")
        for f in s.get("failures", [])[:20]:
            print(f"   {f[:300]}")
    if fig := sec.get("pipeline", {}).get("figures"):
        st = fig["stages"]
        print("pipeline: " + json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "device"} for k, v in st.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
