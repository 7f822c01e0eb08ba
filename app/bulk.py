"""Actions on several runs at once (the Runs table's selection): cancel, delete, tag.

Every action goes through a store bound to the signed-in user (`auth.as_owner`), so the store's one rule decides
who may change which run. Before anything is changed the whole selection is checked: when one selected run may
not take the action, nothing is done and the answer is one sentence naming it. No Streamlit here."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kdcore.errors import KDError
from kdcore.jobs.access import Actor, denial

ACTIONS = ("cancel", "delete", "tag")
VERBS = {"cancel": "cancelled", "delete": "deleted", "tag": "tagged"}


@dataclass(frozen=True)
class Plan:
    """What a bulk action would do: the runs it acts on, or the sentence saying why it does nothing."""

    action: str
    targets: list[str]
    problem: str | None = None
    skipped: int = 0  # selected runs the action does not concern (finished runs, for cancel)


def _ids(records: Sequence[Any], limit: int = 4) -> str:
    ids = [r.id for r in records]
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def plan(action: str, records: Sequence[Any], actor: Actor | None) -> Plan:
    """Check `action` on every selected record for `actor` (None: the machine's own store, which may do
    anything) before anything changes."""
    if action not in ACTIONS:
        raise ValueError(f"unknown bulk action {action!r}")
    if not records:
        return Plan(action, [], "Select at least one run first.")
    concerned = list(records)
    if action == "cancel":
        concerned = [r for r in records if not r.is_terminal]
        if not concerned:
            return Plan(action, [], "None of the selected runs is queued or running: there is nothing to cancel.")
    if action == "delete":
        running = [r for r in records if r.status.value == "running"]
        if running:
            return Plan(action, [], f"{_count(running)} still running ({_ids(running)}): cancel "
                                    f"{'it' if len(running) == 1 else 'them'} before deleting.")
    refused = [r for r in concerned if actor is not None and denial(actor, r.owner, action)]
    if refused:
        first = denial(actor, refused[0].owner, action)
        if len(refused) == 1:
            return Plan(action, [], f"Nothing was changed: run {refused[0].id} is not yours to {action}. {first}")
        return Plan(action, [], f"Nothing was changed: {len(refused)} of the selected runs ({_ids(refused)}) "
                                f"are not yours to {action}; only their owners or an admin may.")
    return Plan(action, [r.id for r in concerned], None, skipped=len(records) - len(concerned))


def _count(records: Sequence[Any]) -> str:
    return "1 selected run is" if len(records) == 1 else f"{len(records)} selected runs are"


def apply(store: Any, action: str, records: Sequence[Any], *, tags: Sequence[str] = ()) -> str:
    """Do `action` on the selected records through `store` (bound to the acting user) and return the sentence
    to show. Raises KDError with one sentence when the plan refuses, or when the store refuses a run
    (a run changed hands or finished meanwhile): the runs done before it stay done, the rest untouched."""
    if action == "tag" and not [t for t in tags if str(t).strip()]:
        raise KDError("Type at least one tag to add.")
    checked = plan(action, records, store.actor)
    if checked.problem:
        raise KDError(checked.problem)
    done = 0
    for run_id in checked.targets:
        try:
            if action == "cancel":
                store.cancel(run_id)
            elif action == "delete":
                store.delete(run_id)
            else:
                store.add_tags(run_id, tags)
        except KDError as err:
            raise KDError(f"Stopped after {done} of {len(checked.targets)} runs: {str(err).rstrip('.')}.") from None
        done += 1
    text = f"{done} run{'s' if done != 1 else ''} {VERBS[action]}"
    if action == "tag":
        text += f" with {', '.join(t.strip() for t in tags if t.strip())}"
    if checked.skipped:
        text += f"; {checked.skipped} already finished left as they were"
    return text + "."
