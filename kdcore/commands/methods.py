"""`python -m kdcore methods [--json] [--family NAME]`: every registered distillation method (built-in or
from an installed package) with its family, paper, what it reads and its parameters with defaults."""
from __future__ import annotations

import argparse
import json
import textwrap


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the methods as JSON")
    parser.add_argument("--family", choices=["logit", "feature", "relation"], help="only this family")


def _param_line(p: dict) -> str:
    bounds = []
    for key, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        if key in p:
            bounds.append(f"{sign} {p[key]:g}" if isinstance(p[key], (int, float)) else f"{sign} {p[key]}")
    kind = "|".join(map(str, p["choices"])) if "choices" in p else p["type"]
    extra = f", {' '.join(bounds)}" if bounds else ""
    text = f"    {p['name']} = {p['default']!r} ({kind}{extra})"
    return text + (f": {p['description']}" if p["description"] else "")


def run(args: argparse.Namespace) -> int:
    from kdcore.methods import all_methods, plugin_problems

    records = all_methods(family=args.family)
    if args.json:
        print(json.dumps({"methods": [r.as_dict() for r in records], "problems": plugin_problems()},
                         indent=2, ensure_ascii=False, default=str))
        return 0
    where = {"logit": "spec: logit: {method: NAME, ...}", "hints": "spec: hints: [{preset: NAME, ...}]",
             "losses": "spec: losses: [{method: NAME, ...}]"}
    for r in records:
        origin = "" if r.origin == "kdcore" else f"  [from {r.origin}]"
        print(f"{r.name}  ({r.family}) {r.title}{origin}")
        for line in textwrap.wrap(r.description, 100):
            print(f"  {line}")
        print(f"  paper: {r.paper}")
        print(f"  reads: {', '.join(r.needs.describe()) or 'logits'}; {where[r.slot]}")
        for p in r.parameters():
            print(_param_line(p))
        print()
    for problem in plugin_problems():
        print(f"warning: {problem}")
    print(f"{len(records)} methods; docs/adding-a-method.md explains how to add one.")
    return 0
