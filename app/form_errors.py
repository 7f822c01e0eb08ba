"""Every field problem of a spec mapping in one pass, each as one plain sentence.

pydantic stops at the first layer of problems: a bad number hides the rules that span several fields
(the global batch, the hint-only epochs), which are checked only once every field parses. `validate_all`
sets each bad value aside (its default takes its place) and validates again, so the rules across fields
are reported beside the bad values, not after they are fixed. The values set aside never reach a spec
that is launched: they only let the remaining checks see the rest of the form."""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from kdcore.spec import RunSpec

UNION_TAGS = ("single", "ensemble")  # a teacher is one or an ensemble: a tag pydantic puts in the path
_PASSES = 4


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:g}"


def _shown(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else _number(value)
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return f"'{text}'" if isinstance(value, str) else text


def plain_message(error: Mapping[str, Any]) -> str:
    """One pydantic error as a sentence a user reads beside the widget (the widget names the field)."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in ("float_parsing", "float_type", "int_parsing", "int_type", "decimal_parsing"):
        if isinstance(value, str) and value.strip():
            return f"{_shown(value.strip())} is not a number."
        return "Give a number."
    if kind == "int_from_float":
        return f"Give a whole number ({_number(value)} is not)."
    if kind == "finite_number":
        return "Give a finite number."
    bounds = {"greater_than": ("greater than", "gt"), "greater_than_equal": ("at least", "ge"),
              "less_than": ("less than", "lt"), "less_than_equal": ("at most", "le")}
    if kind in bounds:
        words, key = bounds[kind]
        got = f" (it is {_number(value)})" if isinstance(value, (int, float)) else ""
        return f"Must be {words} {_number(ctx.get(key))}{got}."
    if kind == "string_too_long":
        return f"Too long: at most {ctx.get('max_length')} characters."
    if kind == "too_short":
        return f"Give at least {ctx.get('min_length')}."
    if kind == "too_long":
        return f"Give at most {ctx.get('max_length')}."
    if kind == "literal_error":
        return f"Choose one of {ctx.get('expected')}."
    if kind in ("bool_parsing", "bool_type"):
        return "Choose on or off."
    if kind in ("string_type", "string_sub_type"):
        return "Give text."
    if kind == "missing":
        return "This is needed."
    if kind == "extra_forbidden":
        return "Is not a known field."
    message = str(error.get("msg", "")).removeprefix("Value error, ").strip()
    message = message.replace("`", "")
    if not message:
        return "Not a valid value."
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else message + "."


def error_path(error: Mapping[str, Any]) -> str:
    """The dotted field an error belongs to ("logit.rho", "hints.0.weight"; "" for the whole spec)."""
    parts = [p for p in error["loc"] if p not in UNION_TAGS]
    return ".".join(str(p) for p in parts)


def _set_aside(data: dict[str, Any], loc: tuple, placeholders: Mapping[str, Callable[[Any], Any]]) -> bool:
    """Remove the value at `loc` so its default applies; a top-level field named in `placeholders` is
    replaced by what its function makes of the bad value. False when nothing changed (a rule over the
    whole spec)."""
    parts = [p for p in loc if p not in UNION_TAGS]
    if not parts:
        return False
    if str(parts[0]) in placeholders:
        replacement = placeholders[parts[0]](data.get(parts[0]))
        if replacement == data.get(parts[0]):
            return False
        data[parts[0]] = replacement
        return True
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, dict) else (
            node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
        if not isinstance(child, (dict, list)):  # the bad value is `part` itself (a list given as text)
            return _drop(node, part)
        if isinstance(child, list) and depth == len(parts) - 2 and isinstance(parts[-1], int):
            return _drop(node, part)  # an item of a list: the whole list falls back to its default
        node = child
    return _drop(node, parts[-1])


def _drop(node: Any, key: Any) -> bool:
    if isinstance(node, dict) and key in node:
        del node[key]
        return True
    return False


def validate_all(data: Mapping[str, Any], *, placeholders: Mapping[str, Callable[[Any], Any]] | None = None
                 ) -> tuple[RunSpec | None, RunSpec | None, list[tuple[str, str, int]]]:
    """(spec, stand-in, problems): the spec when `data` is valid; otherwise a stand-in spec with the bad
    values set aside (None when even that is invalid) for the checks that need a whole spec, and every
    problem as (dotted path, sentence, pass). A problem of a later pass may be a consequence of setting
    values aside: the caller drops those on a field an earlier pass already flagged."""
    work = copy.deepcopy(dict(data))
    problems: list[tuple[str, str, int]] = []
    for n in range(_PASSES):
        try:
            spec = RunSpec.model_validate(work)
        except ValidationError as err:
            errors = err.errors()
        else:
            return (spec if n == 0 else None), spec, problems
        moved = False
        # deepest first, so removing a list's item never shifts another error's position
        for error in sorted(errors, key=lambda e: len(e["loc"]), reverse=True):
            problems.append((error_path(error), plain_message(error), n))
            moved = _set_aside(work, tuple(error["loc"]), placeholders or {}) or moved
        if not moved:
            break
    return None, None, problems
