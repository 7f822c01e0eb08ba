"""`python -m kdcore submit SPEC.yaml`: queue a run (or a sweep: one run per value) in the run store.
Prints the new run ids, one a line, on stdout."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="YAML run spec; a `sweep:` block queues one run per value, a `chain:` block "
                                "dependent runs (teacher → assistant → student, or born-again generations)")
    p.add_argument("--name", help="run name (default: the spec's name, else student + method)")
    p.add_argument("--owner", help="who submits (default: the current user)")
    p.add_argument("--tag", action="append", default=[], help="a tag for the run(s); repeat for several")
    p.add_argument("--after", metavar="RUN_ID", help="start only once this run has completed")
    p.add_argument("--no-check", action="store_true", help="skip the checks that build the models")
    p.add_argument("--db", help="database URL (default: $KD_DATABASE_URL, else KD_HOME/kdstudio.db)")


def run(args: argparse.Namespace) -> int:
    from kdcore.chains import is_chain
    from kdcore.jobs.store import RunStore, _current_user
    from kdcore.spec import SpecError, _read_spec_text, load_spec_file, parse_spec_yaml

    path = Path(args.spec)
    text = _read_spec_text(path)
    data = parse_spec_yaml(text)
    store = RunStore(args.db)
    owner = args.owner or _current_user()
    if is_chain(data):  # teacher → assistant → student, or born-again generations: dependent runs
        if args.name:
            raise SpecError(["--name applies to a single run; a chain names its links from the spec's name"])
        ids = store.submit_chain(data, owner=owner, tags=args.tag, depends_on=args.after, check=not args.no_check)
        for run_id in ids:
            print(run_id)
        print(f"queued a chain of {len(ids)} runs, each waiting for the one before; follow with: "
              f"python -m kdcore runs", file=sys.stderr)
        return 0
    specs, sweep = load_spec_file(path)
    if sweep is None:
        ids = [store.submit(specs[0], name=args.name, owner=owner, tags=args.tag, depends_on=args.after,
                            check=not args.no_check)]
    else:
        if args.name or args.after:
            raise SpecError(["--name and --after apply to a single run, not to a sweep"])
        ids = store.submit_yaml(path.read_text(), owner=owner, tags=args.tag, check=not args.no_check)
    for run_id in ids:
        print(run_id)
    group = f" as sweep {store.get(ids[0]).sweep_id}" if sweep is not None else ""
    print(f"queued {len(ids)} run(s){group}; follow with: python -m kdcore runs", file=sys.stderr)
    return 0
