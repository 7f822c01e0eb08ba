"""`python -m kdcore COMMAND ...`. Each command lives in kdcore/commands/<name>.py and exposes
`add_arguments(parser)` and `run(args) -> int`; it is imported only when used, so `--help` is fast."""
from __future__ import annotations

import argparse
import importlib
import sys

from kdcore.errors import KDError

COMMANDS = {
    "layers": "list a model's candidate hint layers with their output shapes",
    "models": "list the model zoo",
    "methods": "list the distillation methods with their family, paper and parameters",
    "train": "train a run from a YAML spec",
    "eval": "evaluate a checkpoint on a dataset",
    "worker": "run a background worker that executes queued runs",
    "submit": "queue a YAML spec (or a sweep) in the run store",
    "runs": "list runs in the store",
    "cancel": "cancel a queued or running run",
    "logs": "print a run's log lines",
    "users": "manage the team's sign-in accounts (password mode)",
    "study": "queue a study (a grid × seeds, or an Optuna search) and print its id",
    "table": "print a study's table: mean ± std over seeds per configuration",
    "cache": "list what the cache folder holds, or clear it (--clear)",
}


def _command_module(name: str):
    return importlib.import_module(f"kdcore.commands.{name}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command listed; the options of `command` alone when one is named (only its module is imported),
    of all of them otherwise."""
    parser = argparse.ArgumentParser(prog="python -m kdcore", description="KD Studio command line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=name)
        if command not in (None, name):
            continue
        try:
            _command_module(name).add_arguments(p)
        except ModuleNotFoundError:  # a command not built yet stays listed but unusable
            p.set_defaults(_missing=True)
    return parser


def _named_command(argv: list[str]) -> str | None:
    """The command argv names (its first word, as no option comes before it), if it is one."""
    return argv[0] if argv and argv[0] in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(_named_command(words))
    args = parser.parse_args(words)
    # Called without argv, main is this process's entry point (python -m kdcore, the kdstudio script): a command
    # may then tune process-wide settings, which a caller passing argv (a test, a notebook) keeps as they are.
    args.entry_point = argv is None
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"error: the '{args.command}' command is not available in this build", file=sys.stderr)
        return 2
    try:
        return int(_command_module(args._module).run(args) or 0)
    except KDError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
