"""`python -m kdcore table STUDY_ID`: a study's table, one row per configuration, mean ± std over seeds."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="the study id that `python -m kdcore study` printed")
    p.add_argument("--format", choices=("markdown", "csv", "latex"), default="markdown")
    p.add_argument("--select", choices=("best-val", "last"), default="best-val",
                   help="each run's epoch: the best validation accuracy (default) or the last; never test")
    p.add_argument("--exclude-warned", action="store_true",
                   help="leave runs with a training warning (a student that stopped learning) out of the means; "
                        "by default they are kept and each row counts them")
    p.add_argument("--db", help="database URL (default: $KD_DATABASE_URL, else KD_HOME/kdstudio.db)")


def run(args: argparse.Namespace) -> int:
    from kdcore.jobs.store import RunStore
    from kdcore.studies import study_table

    print(study_table(RunStore(args.db), args.study, args.select,
                      exclude_warned=args.exclude_warned).format(args.format))
    return 0
