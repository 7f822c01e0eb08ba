"""Who may change a run: the one rule every mutating store action (cancel, delete, rename, tags, notes) applies.

A store used with no actor is the machine's own (the CLI, a worker, a notebook: whoever can reach the
database can change every row anyway). A store bound to an actor (`RunStore.as_actor`) — what the dashboard
hands each signed-in user — lets the actor change their own runs, and an admin every run."""
from __future__ import annotations

from dataclasses import dataclass

from kdcore.errors import KDError

ACTIONS = ("cancel", "delete", "rename", "tag", "annotate")  # annotate: write the run's notes


@dataclass(frozen=True)
class Actor:
    """The person a store acts for. An empty name is nobody signed in: it may change nothing."""

    name: str
    is_admin: bool = False


NOBODY = Actor("")


class PermissionDeniedError(KDError):
    """A user tried to change a run that is neither theirs nor theirs to administer."""


def may_change(actor: Actor, run_owner: str | None) -> bool:
    """Admins: any run; others: their own. A run without an owner (queued from the CLI) is an admin's only."""
    if not actor.name.strip():
        return False
    if actor.is_admin:
        return True
    return run_owner is not None and run_owner.strip() != "" and run_owner.strip() == actor.name.strip()


def denial(actor: Actor, run_owner: str | None, action: str) -> str | None:
    """None when `actor` may `action` a run of `run_owner`, else the sentence saying why not."""
    if action not in ACTIONS:
        raise ValueError(f"unknown run action {action!r}")
    if not actor.name.strip():
        return "Sign in to change runs."
    if may_change(actor, run_owner):
        return None
    whose = f"its owner ({run_owner})" if run_owner else "the person who launched it"
    return f"Only {whose} or an admin may {action} this run."
