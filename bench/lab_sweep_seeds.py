"""The lab's temperature sweep as a lecturer launches it (every ρ × 3 seeds), trained by real workers on a
throwaway store; prints the page's table (mean ± std over seeds) and its verdict sentence.

    python bench/lab_sweep_seeds.py [--dataset digits] [--workers 2]"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kd-lab-seeds."))
    os.environ["KD_HOME"] = str(home)
    os.environ.pop("KD_DATABASE_URL", None)
    from studies_bench import start_workers

    from kdcore.jobs import RunStore
    from kdcore.lab import experiments as ex

    store = RunStore()
    started = time.perf_counter()
    ex.submit_rho_sweep(store, args.dataset)
    for p in start_workers(home, store.url, args.workers, "--exit-when-idle"):
        p.wait()
    records = store.list_runs(tag=ex.experiment_tag("rho-sweep", args.dataset))
    frame = ex.rho_sweep_frame(records)
    print(f"{len(records)} runs in {time.perf_counter() - started:.0f} s wall with {args.workers} worker(s)",
          file=sys.stderr)
    print("| ρ | n | test acc % (last epoch) | agreement % |\n|---:|---:|---:|---:|")
    for row in frame.itertuples():
        print(f"| {row.rho:g} | {row.n} | {row.test_acc * 100:.2f} ± {row.test_std * 100:.2f} | "
              f"{row.agreement * 100:.2f} ± {row.agreement_std * 100:.2f} |")
    print(f"\n{ex.rho_verdict(records)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
