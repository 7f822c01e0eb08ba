"""Studies on Fashion-MNIST, run by real workers on a throwaway store; prints the tables for bench/RESULTS.md.

    python bench/studies_bench.py grid     # bench/fmnist_study.yaml: scratch vs KD vs FitNets vs AT, 3 seeds
    python bench/studies_bench.py search   # bench/fmnist_search.yaml: Optuna over ρ, α, β; then its best
                                           # trial against the default, both on 3 fresh seeds

Each worker is `python -m kdcore worker` with one thread (OMP_NUM_THREADS=1); --workers sets how many."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def start_workers(home: Path, url: str, count: int, *extra: str) -> list[subprocess.Popen]:
    env = dict(os.environ, KD_HOME=str(home), KD_DATABASE_URL=url, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    return [subprocess.Popen([sys.executable, "-m", "kdcore", "worker", "--poll", "0.5", "--quiet", *extra],
                             cwd=ROOT, env=env, stdin=subprocess.DEVNULL) for _ in range(count)]


def run_grid(store, text: str, home: Path, workers: int, check: bool = True) -> str:
    from kdcore.studies import parse_study_yaml, submit_study

    base, study = parse_study_yaml(text)
    study_id = submit_study(store, base, study, check=check)
    started = time.perf_counter()
    procs = start_workers(home, store.url, workers, "--exit-when-idle")
    for p in procs:
        p.wait()
    if workers:
        print(f"study {study_id}: {len(store.list_runs(sweep_id=study_id))} runs in "
              f"{time.perf_counter() - started:.0f} s wall with {workers} worker(s)", file=sys.stderr)
    return study_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("grid", "search"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--home", help="KD_HOME to use (default: a new temporary folder)")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="kd-studies-bench."))
    os.environ["KD_HOME"] = str(home)
    os.environ.pop("KD_DATABASE_URL", None)
    from kdcore.jobs import RunStore
    from kdcore.studies import study_table

    store = RunStore()
    print(f"KD_HOME={home}", file=sys.stderr)
    if args.what == "grid":
        study_id = run_grid(store, (ROOT / "bench" / "fmnist_study.yaml").read_text(), home, args.workers)
        print(study_table(store, study_id).format("markdown"))
        return 0
    return run_search_and_confirm(store, home, args.workers)


def run_search_and_confirm(store, home: Path, workers: int) -> int:
    """The search, then its best trial against the default (ρ, α, β) on 3 seeds the search never used."""
    import yaml

    from kdcore.studies import paired_difference, parse_study_yaml, study_table, submit_study
    from kdcore.studies.search import drive_search

    text = (ROOT / "bench" / "fmnist_search.yaml").read_text()
    base, study = parse_study_yaml(text)
    study_id = submit_study(store, base, study)
    procs = start_workers(home, store.url, workers)
    try:
        started = time.perf_counter()
        result = drive_search(store, study_id, poll_s=0.5, progress=lambda line: print(line, file=sys.stderr))
        states = [t.state.name.lower() for t in result.trials]
        print(f"search {study_id}: {len(states)} trials ({states.count('complete')} complete, "
              f"{states.count('pruned')} pruned) in {time.perf_counter() - started:.0f} s wall with {workers} "
              "worker(s)", file=sys.stderr)
        best = result.best_trial
        print(f"### Search {study_id}\n")
        print("| trial | state | ρ | α | β | val acc % (complete: selected epoch; pruned: last reported) "
              "| epochs run |\n|---:|---|---:|---:|---:|---:|---:|")
        for t in result.trials:
            p = t.params
            value = f"{t.value * 100:.2f}" if t.value is not None else "—"
            print(f"| {t.number}{' ★' if t.number == best.number else ''} | {t.state.name.lower()} | "
                  f"{p['logit.rho']:.2f} | {p['logit.alpha']:.2f} | {p['logit.beta']:.2f} | {value} | "
                  f"{len(t.intermediate_values)} |")
        confirm = yaml.safe_load(text)
        confirm["study"] = {"name": "fmnist kd search: best vs default", "seeds": [1, 2, 3], "variants": {
            "default (ρ=4, α=0.1, β=0.9)": {},
            f"best trial {best.number}": {k: round(v, 4) for k, v in best.params.items()}}}
        confirm_id = run_grid(store, yaml.safe_dump(confirm, sort_keys=False), home, 0)  # the workers already run
        while any(not r.is_terminal for r in store.list_runs(sweep_id=confirm_id)):
            time.sleep(2)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
    table = study_table(store, confirm_id)
    print(f"\n### Best trial against the default, seeds 1–3 (study {confirm_id})\n")
    print(table.format("markdown"))
    default, tuned = ({r.seed: r.summary.test_acc for r in table.results if r.finished and r.label == lab}
                      for lab in (table.rows[0].label, table.rows[1].label))
    d = paired_difference(tuned, default)
    print(f"\nbest − default, test accuracy: {d.mean * 100:+.2f} points, 95% t-interval "
          f"[{d.low * 100:+.2f}, {d.high * 100:+.2f}] over {d.n} paired seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
