"""Who may change a run, checked once in the store: every mutating action (cancel, delete, rename, tags) from a
non-owner is refused by the store itself and leaves the run as it was; owners and admins go through."""
from __future__ import annotations

import pytest

from kdcore.jobs import RunStatus, RunStore
from kdcore.jobs.access import NOBODY, Actor, PermissionDeniedError
from kdcore.jobs.testing import database_url

SPEC = {"dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 1}
ALICE, BOB, CAROL = Actor("alice"), Actor("bob"), Actor("carol", is_admin=True)

# action name -> how to do it through a store
ACTIONS = {
    "cancel": lambda store, run_id: store.cancel(run_id),
    "delete": lambda store, run_id: store.delete(run_id),
    "rename": lambda store, run_id: store.rename(run_id, "taken over"),
    "tag": lambda store, run_id: store.set_tags(run_id, ["taken-over"]),
    "add tag": lambda store, run_id: store.add_tags(run_id, ["taken-over"]),
    "annotate": lambda store, run_id: store.set_notes(run_id, "taken over"),
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, kd_home, monkeypatch) -> RunStore:
    with database_url(request.param, kd_home) as url:
        monkeypatch.setenv("KD_DATABASE_URL", url)
        yield RunStore(url)


def snapshot(store: RunStore, run_id: str) -> tuple:
    record = store.get(run_id)
    return record.name, record.status, record.tags, record.notes, record.cancel_requested, len(store.events(run_id))


@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_non_owner_is_refused_every_action_by_the_store(store, action):
    run_id = store.as_actor(BOB).submit(SPEC, name="bob's run", tags=["mine"], check=False)
    before = snapshot(store, run_id)
    for stranger in (ALICE, NOBODY, Actor("Bob")):  # names are compared exactly: "Bob" is not "bob"
        with pytest.raises(PermissionDeniedError, match=r"Only its owner \(bob\) or an admin|Sign in"):
            ACTIONS[action](store.as_actor(stranger), run_id)
        assert snapshot(store, run_id) == before


@pytest.mark.parametrize("action", list(ACTIONS))
def test_the_owner_and_an_admin_may_do_every_action(store, action):
    for actor in (BOB, CAROL):
        run_id = store.as_actor(BOB).submit(SPEC, check=False)
        ACTIONS[action](store.as_actor(actor), run_id)
        if action == "delete":
            assert all(r.id != run_id for r in store.list_runs())
            continue
        record = store.get(run_id)
        assert {"cancel": record.status is RunStatus.CANCELLED, "rename": record.name == "taken over",
                "tag": record.tags == ["taken-over"], "add tag": record.tags == ["taken-over"],
                "annotate": record.notes == "taken over"}[action]


def test_a_run_without_an_owner_is_an_admins_only(store):
    run_id = store.submit(SPEC, check=False)  # the CLI: no actor, no owner
    with pytest.raises(PermissionDeniedError, match="the person who launched it"):
        store.as_actor(ALICE).rename(run_id, "mine now")
    store.as_actor(CAROL).rename(run_id, "an admin's choice")
    assert store.get(run_id).name == "an admin's choice"


def test_an_actor_submits_under_their_own_name_and_is_recorded_by_it(store):
    run_id = store.as_actor(ALICE).submit(SPEC, owner="bob", check=False)  # a typed owner changes nothing
    assert store.get(run_id).owner == "alice"
    store.as_actor(ALICE).cancel(run_id, by="someone else")
    assert "cancelled by alice" in store.events(run_id)[-1].message
    with pytest.raises(PermissionDeniedError, match="Sign in"):
        store.as_actor(NOBODY).submit(SPEC, check=False)
