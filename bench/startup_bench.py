"""Start-up before the first training step, against `import torch` alone, in fresh interpreters.

    .venv/bin/python bench/startup_bench.py [--repeats 5] [--threads 1]

For each shipped KD example (examples/digits_kd.yaml, examples/fmnist_kd.yaml, on the CPU, with the shipped
teacher of its dataset from kdcore/assets standing in for the one the example trains first) a child process
builds the spec and runs `kdcore.train.train` until `on_start` (models, data, teacher passes done: the next
thing is the first step), then exits. Baselines: a child that only imports torch, and one that also takes
one torch.optim step (any PyTorch training loop's first optimiser use imports torch._dynamo). Children
alternate, and the
figure is the best of --repeats for wall time and for CPU time (user + system of the child): on a shared
machine load only ever adds. Also prints which heavy modules the run imported.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdcore.lab.assets import teacher_path  # noqa: E402

CHILD = r"""
import os, sys
threads = int(sys.argv[3])
import torch
torch.set_num_threads(threads)
if sys.argv[1] == "torch":
    os._exit(0)
if sys.argv[1] == "optim":  # what any torch.optim loop pays: its first use imports torch._dynamo
    p = torch.nn.Parameter(torch.zeros(1))
    p.grad = torch.zeros(1)
    torch.optim.SGD([p], lr=0.1).step()
    os._exit(0)
from kdcore.spec import load_spec
from kdcore.train import NullCallbacks, train

class ExitAtStart(NullCallbacks):
    def on_start(self, info):
        heavy = sorted(m for m in ("sklearn", "scipy", "pandas", "torchvision", "matplotlib", "PIL") if m in sys.modules)
        print("imported:", ",".join(heavy) or "-", flush=True)
        os._exit(0)

spec = load_spec(sys.argv[1])
data = spec.to_dict()
data.update(device="cpu", teacher={"source": "checkpoint", "checkpoint": sys.argv[4]})
train(type(spec).from_dict(data), sys.argv[2], ExitAtStart(), resume=False)
"""


def child(target: str, out: str, threads: int, teacher: str = "") -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, target, out, str(threads), teacher], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"child {target} failed:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout.strip()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    examples = {"digits": "examples/digits_kd.yaml", "fashion-mnist": "examples/fmnist_kd.yaml"}
    best: dict[str, list[float]] = {k: [1e9, 1e9] for k in ["torch", "optim", *examples]}
    imported: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, target in [("torch", "torch"), ("optim", "optim"), *examples.items()]:
                teacher = str(teacher_path(name)) if name in examples else ""
                wall, cpu, out = child(target, str(Path(tmp) / f"{name}{r}"), args.threads, teacher)
                best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
                if out:
                    imported[name] = out
    base_wall, base_cpu = best["torch"]
    print(f"start-up to the first step, best of {args.repeats}, {args.threads} thread(s), python {sys.version.split()[0]}")
    print(f"  import torch alone: wall {base_wall:.2f} s, cpu {base_cpu:.2f} s")
    optim_wall, optim_cpu = best["optim"]
    print(f"  import torch + one torch.optim step (imports torch._dynamo): wall {optim_wall:.2f} s, "
          f"cpu {optim_cpu:.2f} s (+{optim_cpu - base_cpu:.2f} s)")
    for name in examples:
        wall, cpu = best[name]
        print(f"  {name:13s} KD: wall {wall:.2f} s (+{wall - base_wall:.2f} s over torch), "
              f"cpu {cpu:.2f} s (+{cpu - base_cpu:.2f} s)  [{imported.get(name, '')}]  target: +1.0 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
