"""What holding freed memory (kdcore.train.allocator.hold_freed_memory) does to a CPU training step.

    .venv/bin/python bench/allocator_bench.py [--repeats 5] [--steps 20] [--threads 1]

Fashion-MNIST's student of examples/fmnist_kd.yaml (cnn_small, batch 256, SGD with Nesterov momentum, random
inputs of the data's shape), trained by a hand-written loop in fresh interpreters, alternately with glibc's
default allocator settings and with freed memory held by the process (what `python -m kdcore train` and the
worker set). Each child reports its first step's CPU time and page faults, the median of its later steps (the
first two left out), and the page faults of those steps. Printed: the median over --repeats of each, and the held step's CPU
time as a ratio of the default's. The first step less a later one is what any PyTorch loop pays once (its
activations' memory faulted in, kernels' first use), and what start-up's "until the first step is done, less
one step" counts beyond the set-up (bench/startup_bench.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, statistics, sys
import torch
import torch.nn.functional as F
from kdcore.models.registry import build_model
from kdcore.train.allocator import hold_freed_memory

mode, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
if mode == "held":
    assert hold_freed_memory()

def now():
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime, use.ru_minflt

torch.manual_seed(0)
model = build_model("cnn_small", num_classes=10, in_channels=1, input_size=28)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
x, y = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
cpu, faults = [], []
for _ in range(steps):
    before = now()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    after = now()
    cpu.append(after[0] - before[0])
    faults.append(after[1] - before[1])
print(json.dumps({"first": cpu[0], "step": statistics.median(cpu[2:]), "faults": statistics.median(faults[2:]),
                  "first_faults": faults[0]}))
"""


def child(mode: str, steps: int, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(steps), str(threads)], capture_output=True,
                          text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    modes = ("default", "held")
    seen: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode in modes:
            seen[mode].append(child(mode, args.steps, args.threads))
    print(f"cnn_small, batch 256, SGD, {args.threads} thread(s): median of {args.repeats} fresh interpreters, "
          f"{args.steps} steps each")
    med = {m: {k: statistics.median(r[k] for r in rows) for k in ("first", "step", "faults", "first_faults")}
           for m, rows in seen.items()}
    for mode in modes:
        v = med[mode]
        print(f"  {mode:7s}: later step {v['step'] * 1000:.0f} ms cpu, {v['faults']:.0f} page faults; "
              f"first step {v['first'] * 1000:.0f} ms, {v['first_faults']:.0f} page faults "
              f"({v['first_faults'] * 4 / 1024:.0f} MB of 4 KB pages; one-offs: first less a later step "
              f"{1000 * (v['first'] - v['step']):.0f} ms)")
    ratios = [h["step"] / d["step"] for d, h in zip(seen["default"], seen["held"])]
    print(f"  held / default, later step's cpu: {statistics.median(ratios):.3f} (median of the {args.repeats} pairs; "
          f"range {min(ratios):.3f}–{max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
