"""`python -m kdcore study SPEC.yaml`: queue a study (a grid × seeds, or an Optuna search) and print its id.

A search's trials are created one by one as earlier ones finish, so this command then drives the search
until every trial has ended (progress on stderr); --detach leaves that to a background process."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", help="YAML run spec with a `study:` block (grid, variants, seeds; or search)")
    p.add_argument("--drive", metavar="STUDY_ID", help="carry on driving an existing search (no spec then)")
    p.add_argument("--owner", help="who submits (default: the current user)")
    p.add_argument("--no-check", action="store_true", help="skip the checks that build the models")
    p.add_argument("--detach", action="store_true", help="a search: drive it from a background process")
    p.add_argument("--db", help="database URL (default: $KD_DATABASE_URL, else KD_HOME/kdstudio.db)")


def run(args: argparse.Namespace) -> int:
    from kdcore.jobs.store import RunStore, _current_user
    from kdcore.spec import SpecError
    from kdcore.studies import parse_study_yaml, submit_study

    if args.drive:
        from kdcore.studies.search import drive_search

        drive_search(RunStore(args.db), args.drive, progress=lambda line: print(line, file=sys.stderr, flush=True))
        return 0
    if not args.spec:
        raise SpecError(["give a spec file (or --drive STUDY_ID)"])
    path = Path(args.spec)
    if not path.is_file():
        raise SpecError([f"spec file {path} does not exist"])
    base, study = parse_study_yaml(path.read_text())
    store = RunStore(args.db)
    study_id = submit_study(store, base, study, owner=args.owner or _current_user(), check=not args.no_check)
    print(study_id, flush=True)
    if study.search is None:
        count = len(store.list_runs(sweep_id=study_id, limit=100_000))
        print(f"queued study {study_id}: {count} run(s); its table: python -m kdcore table {study_id}",
              file=sys.stderr)
        return 0
    from kdcore.studies.search import drive_search, start_driver

    if args.detach:
        pid = start_driver(store.url, study_id)
        print(f"search {study_id} is driven by process {pid}; its table: python -m kdcore table {study_id}",
              file=sys.stderr)
        return 0
    drive_search(store, study_id, progress=lambda line: print(line, file=sys.stderr, flush=True))
    return 0
