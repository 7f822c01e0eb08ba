"""Start-up: `python -m kdcore train SPEC` until its first training step, against `import torch` alone.

    .venv/bin/python bench/startup_bench.py [--repeats 5] [--threads 1]

What a user runs: for each shipped KD example (examples/digits_kd.yaml, examples/fmnist_kd.yaml, on the CPU,
with the shipped teacher of its dataset from kdcore/assets standing in for the one the example trains first)
a fresh interpreter runs the command line (`python -m kdcore train SPEC --fresh --quiet`, through runpy)
until its second optimiser step returns (a global torch.optim step hook). Two figures: start-up proper, the time
until the first step begins (the Distiller's first forward call: data, models, teacher, optimiser all ready);
and the time to the end of the first step less one step (the second's time), which also counts the first
step's one-off costs (PyTorch's first touch of the activations' memory and first use of each kernel, which a
hand-written loop pays as well: bench/allocator_bench.py measures them there). Each example runs twice: with an
empty cache folder (KD_CACHE_DIR: Fashion-MNIST's files are decoded and the teacher scored on the test set) and
with the folder a previous run left (the decoded data and the teacher's test logits kept). Baselines, in fresh
interpreters too: `import torch` alone, and `import torch` + one torch.optim step (any PyTorch loop's first
optimiser use imports torch._dynamo; the trainer's does the same).

As on a user's machine, the project's modules run from cached bytecode: the children may write it (an
environment's PYTHONDONTWRITEBYTECODE is dropped for them), and an untimed run of each example comes first.
Without the cache every start-up also compiles kdcore's modules (about 0.07 s here).

Each child reports its own CPU time (user + system, interpreter start included) and the wall time since the
parent launched it. Children alternate; the figure is the best of --repeats (a shared machine's load only ever
adds), with the median beside it. Also prints which heavy modules the run had imported by its first step.

    .venv/bin/python bench/startup_bench.py --worker [--repeats 5]

A run launched from the dashboard: a real worker (`python -m kdcore worker --device cpu` on a throwaway SQLite
store, its own KD_HOME, the kept cache folder) is started and left to become idle (polling the queue); then the
example is submitted, and the worker reports the time from its claim (claim_next returning the run) to the end
of the run's first optimiser step, less one step: CPU time of the whole worker process (every thread: heartbeat,
metric writes) and wall time. Each example with the worker as shipped ("warmed": it pays PyTorch's one-offs while
idle, kdcore.jobs.worker.warm_up) and with that warm-up switched off ("cold": the first run claimed pays them).

    .venv/bin/python bench/startup_bench.py --phases [--repeats 5]

Where the command line's own start-up goes, with the cache folder kept: a fresh interpreter imports torch and
takes one torch.optim step first (the floor, out of the way), then runs the command line and marks CPU time at
each phase: importing the trainer's modules, the command line up to Trainer.run (argument parsing, the spec
read and validated), Trainer._setup (data, models, teacher and its test logits, optimiser), and the first
step less the second (the first step's one-offs). Median of --repeats per phase.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdcore.lab.assets import teacher_path  # noqa: E402

HEAVY = ("sklearn", "scipy", "pandas", "torchvision", "matplotlib", "PIL", "sqlalchemy", "streamlit", "plotly",
         "optuna")

CHILD = r"""
import os, resource, sys, time
launched, what, threads = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])

def now():
    use = resource.getrusage(resource.RUSAGE_SELF)
    return time.time() - launched, use.ru_utime + use.ru_stime

started, marks = [], []  # the first step's start; the ends of the first two steps

def report(*args, steps=1):
    marks.append(now())
    if len(marks) < steps:
        return
    (wall, cpu), (wall2, cpu2) = marks[0], marks[-1]
    wall, cpu = wall - (wall2 - wall), cpu - (cpu2 - cpu)  # less one step (none for the baselines)
    (start_wall, start_cpu), = started or [(wall, cpu)]
    heavy = sorted(m for m in sys.argv[4].split(",") if m in sys.modules)
    print(f"{start_wall} {start_cpu} {wall} {cpu} {','.join(heavy) or '-'}", flush=True)
    os._exit(0)

import torch
torch.set_num_threads(threads)
if what == "torch":
    report()
if what == "optim":  # what any torch.optim loop pays: its first use imports torch._dynamo
    p = torch.nn.Parameter(torch.zeros(1))
    p.grad = torch.zeros(1)
    torch.optim.SGD([p], lr=0.1).step()
    report()
import runpy
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.nn.modules.module import register_module_forward_pre_hook

def first_forward(module, args):  # the Distiller's first call: the first training step begins
    if type(module).__name__ == "Distiller":
        started.append(now())
        hook.remove()

hook = register_module_forward_pre_hook(first_forward)  # no kdcore module imported before the command line's
register_optimizer_step_post_hook(lambda *args: report(steps=2))
sys.argv = ["kdcore", "train", what, "--fresh", "--quiet", "--out", sys.argv[5]]
runpy.run_module("kdcore", run_name="__main__", alter_sys=True)
raise SystemExit("the run ended without a training step")
"""


def child_env(**extra: str) -> dict[str, str]:
    """The children's environment: the project importable, its bytecode cached as a normal install has it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


class Timing(NamedTuple):
    """Seconds since the child's launch (wall) and its CPU time, when its first training step began and at the end
    of that step less one step; the heavy modules it had imported by then."""
    start_wall: float
    start_cpu: float
    wall: float
    cpu: float
    heavy: str


def child(what: str, threads: int, out: str = "", cache: str = "") -> Timing:
    launched = time.time()
    env = child_env(**({"KD_CACHE_DIR": cache} if cache else {}))
    proc = subprocess.run([sys.executable, "-c", CHILD, repr(launched), what, str(threads), ",".join(HEAVY), out],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"child {what} failed:\n{proc.stderr[-2000:]}")
    *numbers, heavy = proc.stdout.split()[-5:]
    return Timing(*map(float, numbers), heavy)


def example_data(name: str, example: str) -> dict:
    """The example with the shipped teacher of its dataset, on the CPU."""
    data = yaml.safe_load((ROOT / example).read_text())
    data.update(device="cpu", teacher={"source": "checkpoint", "checkpoint": str(teacher_path(name))})
    return data


def example_spec(name: str, example: str, folder: Path) -> str:
    """example_data as a YAML file the CLI reads."""
    path = folder / Path(example).name
    path.write_text(yaml.safe_dump(example_data(name, example), sort_keys=False))
    return str(path)


WORKER_CHILD = r"""
import os, resource, sys, time
warm, threads = sys.argv[1] == "warmed", int(sys.argv[2])

def now():
    use = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the worker
    return time.monotonic(), use.ru_utime + use.ru_stime

marks = []  # claim, first step, second step
import torch
torch.set_num_threads(threads)
from torch.optim.optimizer import register_optimizer_step_post_hook
import kdcore.jobs.worker as worker
from kdcore.jobs.store import RunStore
if not warm:
    worker.warm_up = lambda: None  # the first run claimed pays PyTorch's one-offs

claim_next, next_run = RunStore.claim_next, worker.Worker._next_run

def claim(self, *args, **kwargs):
    record = claim_next(self, *args, **kwargs)
    if record is not None and not marks:
        marks.append(now())
    return record

def poll(self):
    print("idle", flush=True)  # start-up done: the parent submits the run now
    worker.Worker._next_run = next_run
    return next_run(self)

def step(*args):
    if not marks:  # the warm-up's own steps
        return
    marks.append(now())
    if len(marks) == 3:
        (w0, c0), (w1, c1), (w2, c2) = marks
        print(f"{(w1 - w0) - (w2 - w1)} {(c1 - c0) - (c2 - c1)}", flush=True)
        os._exit(0)

RunStore.claim_next, worker.Worker._next_run = claim, poll
register_optimizer_step_post_hook(step)
import runpy
sys.argv = ["kdcore", "worker", "--device", "cpu", "--poll", "0.05", "--quiet"]
runpy.run_module("kdcore", run_name="__main__", alter_sys=True)
raise SystemExit("the worker stopped before the run's second step")
"""


def worker_child(mode: str, threads: int, data: dict, cache: str) -> tuple[float, float]:
    """(wall, cpu) seconds from a worker's claim of the run to its first step's end, less one step."""
    from kdcore.jobs import RunStore
    from kdcore.jobs.db import dispose_engines

    with tempfile.TemporaryDirectory() as home:
        url = f"sqlite:///{Path(home) / 'kdstudio.db'}"
        env = child_env(KD_HOME=home, KD_DATABASE_URL=url, KD_CACHE_DIR=cache)
        with open(Path(home) / "stderr.txt", "w+") as err:
            proc = subprocess.Popen([sys.executable, "-c", WORKER_CHILD, mode, str(threads)], stdout=subprocess.PIPE,
                                    stderr=err, stdin=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
            try:
                if proc.stdout.readline().strip() != "idle":
                    raise SystemExit(f"worker ({mode}) failed to start:\n{Path(err.name).read_text()[-2000:]}")
                RunStore(url).submit(data)
                dispose_engines()
                line = proc.stdout.readline().split()
                if len(line) != 2:
                    raise SystemExit(f"worker ({mode}) failed:\n{Path(err.name).read_text()[-2000:]}")
            finally:
                proc.kill()
                proc.wait()
    return float(line[0]), float(line[1])


PHASES_CHILD = r"""
import os, resource, runpy, sys

def cpu():
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime

marks = []
import torch
torch.set_num_threads(int(sys.argv[2]))
p = torch.nn.Parameter(torch.zeros(1))
p.grad = torch.zeros(1)
torch.optim.SGD([p], lr=0.1).step()
marks.append(cpu())
import kdcore.train.trainer as trainer
marks.append(cpu())
run, setup = trainer.Trainer.run, trainer.Trainer._setup

def timed_run(self, *args, **kwargs):
    marks.append(cpu())
    return run(self, *args, **kwargs)

def timed_setup(self):
    marks.append(cpu())
    setup(self)
    marks.append(cpu())

def step(*args):
    marks.append(cpu())
    if len(marks) == 7:
        _, imported, cli, setup_start, setup_end, first, second = marks
        spans = (imported - marks[0], cli - imported, setup_end - setup_start, (first - setup_end) - (second - first))
        print(" ".join(map(str, spans)), flush=True)
        os._exit(0)

trainer.Trainer.run, trainer.Trainer._setup = timed_run, timed_setup
from torch.optim.optimizer import register_optimizer_step_post_hook
register_optimizer_step_post_hook(step)
sys.argv = ["kdcore", "train", sys.argv[1], "--fresh", "--quiet", "--out", sys.argv[3]]
runpy.run_module("kdcore", run_name="__main__", alter_sys=True)
raise SystemExit("the run ended without a training step")
"""


def phases_main(args: argparse.Namespace, examples: dict[str, str]) -> int:
    names = ("trainer modules imported", "command line until Trainer.run", "Trainer._setup",
             "first step's one-offs (first less second)")
    spans: dict[str, list[list[float]]] = {name: [] for name in examples}
    with tempfile.TemporaryDirectory() as tmp:
        specs = {name: example_spec(name, example, Path(tmp)) for name, example in examples.items()}
        kept = str(Path(tmp) / "kept")
        for name in specs:
            child(specs[name], args.threads, str(Path(tmp) / f"{name}-fill"), kept)
        env = child_env(KD_CACHE_DIR=kept)
        for r in range(args.repeats):
            for name, spec in specs.items():
                proc = subprocess.run([sys.executable, "-c", PHASES_CHILD, spec, str(args.threads),
                                       str(Path(tmp) / f"{name}{r}")], capture_output=True, text=True, cwd=ROOT, env=env)
                if proc.returncode != 0 or not proc.stdout.strip():
                    raise SystemExit(f"child {name} failed:\n{proc.stderr[-2000:]}")
                spans[name].append([float(v) for v in proc.stdout.split()[-4:]])
    print(f"start-up phases of the command line after torch.optim's first use, cache folder kept; CPU s, median of "
          f"{args.repeats}, {args.threads} thread(s)")
    for name, rows in spans.items():
        medians = [statistics.median(row[i] for row in rows) for i in range(len(names))]
        print(f"  {examples[name]}: " + ", ".join(f"{label} {m:.3f}" for label, m in zip(names, medians))
              + f"; total {sum(medians):.3f}")
    return 0


def worker_main(args: argparse.Namespace, examples: dict[str, str]) -> int:
    modes = ("cold", "warmed")
    times: dict[tuple[str, str], list[tuple[float, float]]] = {(n, m): [] for n in examples for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        data = {name: example_data(name, example) for name, example in examples.items()}
        kept = str(Path(tmp) / "kept")
        for name, example in examples.items():  # fill the cache folder as a machine that has run them before
            child(example_spec(name, example, Path(tmp)), args.threads, str(Path(tmp) / f"{name}-fill"), kept)
        for _ in range(args.repeats):
            for name in examples:
                for mode in modes:
                    times[(name, mode)].append(worker_child(mode, args.threads, data[name], kept))
    print(f"worker: from claiming a run to the end of its first step, less one step; best of {args.repeats} "
          f"(median), {args.threads} thread(s), the worker idle before the submission, cache folder kept")
    for (name, mode), v in times.items():
        wall, cpu = min(w for w, _ in v), min(c for _, c in v)
        print(f"  {examples[name]}, worker {mode}: wall {wall:.2f} s (median {statistics.median(w for w, _ in v):.2f}), "
              f"cpu {cpu:.2f} s (median {statistics.median(c for _, c in v):.2f})")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", action="store_true", help="time a worker's claim of a run to its first step")
    p.add_argument("--phases", action="store_true", help="the command line's own start-up, phase by phase")
    args = p.parse_args()
    examples = {"digits": "examples/digits_kd.yaml", "fashion-mnist": "examples/fmnist_kd.yaml"}
    if args.worker:
        return worker_main(args, examples)
    if args.phases:
        return phases_main(args, examples)
    runs = ["torch", "optim", *(f"{k} {c}" for k in examples for c in ("first", "again"))]
    times: dict[str, list[Timing]] = {k: [] for k in runs}
    with tempfile.TemporaryDirectory() as tmp:
        specs = {name: example_spec(name, example, Path(tmp)) for name, example in examples.items()}
        kept = str(Path(tmp) / "kept")  # the cache folder of a machine that has run these before
        for name in specs:
            child(specs[name], args.threads, str(Path(tmp) / f"{name}-fill"), kept)
        for r in range(args.repeats):
            for run in runs:
                name, _, when = run.partition(" ")
                # "first": an empty cache folder (data decoded, teacher scored); "again": the kept one
                cache = str(Path(tmp) / f"empty{r}{name}") if when == "first" else kept
                times[run].append(child(specs.get(name, name), args.threads, str(Path(tmp) / f"{name}{when}{r}"),
                                        cache))

    def best(run: str, field: str) -> float:
        return min(getattr(t, field) for t in times[run])

    def median(run: str, field: str) -> float:
        return statistics.median(getattr(t, field) for t in times[run])

    base_wall, base_cpu = best("torch", "wall"), best("torch", "cpu")
    print(f"start-up: best of {args.repeats} (median), {args.threads} thread(s), python {sys.version.split()[0]}; "
          f"CPU s over `import torch` alone ({base_cpu:.2f} s cpu, {base_wall:.2f} s wall)")
    print(f"  import torch + one torch.optim step: +{best('optim', 'cpu') - base_cpu:.2f} "
          f"(median +{median('optim', 'cpu') - base_cpu:.2f})")
    print("  python -m kdcore train SPEC: until its first step begins | until its first step is done, less one step "
          "| wall, the same")
    for name, example in examples.items():
        for when, cache in (("first", "empty cache folder"), ("again", "data and teacher logits kept")):
            run = f"{name} {when}"
            start, done = best(run, "start_cpu") - base_cpu, best(run, "cpu") - base_cpu
            print(f"    {Path(example).name}, {cache}: +{start:.2f} (median +{median(run, 'start_cpu') - base_cpu:.2f}) | "
                  f"+{done:.2f} (median +{median(run, 'cpu') - base_cpu:.2f}) | "
                  f"+{best(run, 'start_wall') - base_wall:.2f} | +{best(run, 'wall') - base_wall:.2f}"
                  f"  heavy modules imported: {times[run][-1].heavy}")
    print(f"  target: +1.0 s over import torch; torch.optim's own first use costs +{best('optim', 'cpu') - base_cpu:.2f} s "
          f"cpu of that")
    return 0


if __name__ == "__main__":
    sys.exit(main())
