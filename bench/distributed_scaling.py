"""CPU scaling of one run over 1 and 2 processes (gloo): training images/s and the ratio, measured in one run.

    PYTHONPATH=$PWD .venv/bin/python bench/distributed_scaling.py [--rounds 2] [--epochs 3]

Each round trains the same digits run (cnn_small student from scratch, global batch 128) once with devices: 1
and once with devices: 2 through `python -m kdcore train`, interleaved so the machine's load hits both alike.
Images/s is the transfer set over the epoch's training time (metrics.csv `epoch_time`, rank 0's clock),
the first epoch left out (start-up); the figure per setting is the best round."""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

SPEC = {"dataset": {"name": "digits", "augment": False}, "student": "cnn_small", "batch_size": 128,
        "optimizer": {"name": "sgd", "lr": 0.05}, "probe_size": 0, "device": "cpu",
        "evaluation": {"val_every": 1000, "test": "selected"}}


def images_per_s(devices: int, epochs: int, work: Path) -> float:
    spec_path = work / f"spec{devices}.yaml"
    spec_path.write_text(yaml.safe_dump({**SPEC, "epochs": epochs, "devices": devices}))
    out = work / f"run{devices}"
    # one intra-op thread per process (as torchrun sets): the 2-process run uses one core per rank
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "kdcore", "train", str(spec_path), "--out", str(out), "--fresh",
                    "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from kdcore.data import load_dataset

    n = len(load_dataset("digits", val_fraction=0.1, seed=0).train)
    n -= n % devices  # the shards' remainder is not trained
    with open(out / "metrics.csv") as f:
        times = [float(row["value"]) for row in csv.DictReader(f) if row["name"] == "epoch_time"][1:]
    return n / min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    best = {1: 0.0, 2: 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for devices in (1, 2):
                best[devices] = max(best[devices], images_per_s(devices, args.epochs, Path(tmp)))
    print(f"cpu cores {os.cpu_count()}: 1 process {best[1]:.0f} images/s, 2 processes {best[2]:.0f} images/s, "
          f"ratio {best[2] / best[1]:.2f}")


if __name__ == "__main__":
    main()
