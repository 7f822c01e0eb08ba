"""Team accounts (kdcore.jobs.accounts) on SQLite and PostgreSQL: per-user argon2 hashes, admin rights from the
account, the `users` command, sign-in events, and the back-off after repeated failures per name and per client."""
from __future__ import annotations

import io
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from kdcore import cli
from kdcore.jobs import schema as t
from kdcore.jobs.accounts import (
    BACKOFF_BASE_S,
    FREE_CLIENT_FAILURES,
    FREE_FAILURES,
    AccountError,
    Accounts,
    SignInError,
    backoff_s,
)
from kdcore.jobs.db import dispose_engines
from kdcore.jobs.testing import database_url

ADA_PW, BOB_PW = "ada's long secret", "bob's long secret"
WRONG = "That user name and password do not match."


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def accounts(request, kd_home, monkeypatch, cheap_hashes) -> Accounts:
    with database_url(request.param, kd_home) as url:
        monkeypatch.setenv("KD_DATABASE_URL", url)
        yield Accounts(url)


def age_events(accounts: Accounts, seconds: float) -> None:
    """Move every recorded event `seconds` into the past (the clock moving on, without sleeping)."""
    with accounts.engine.begin() as conn:
        for event_id, time in conn.execute(select(t.auth_events.c.id, t.auth_events.c.time)).all():
            conn.execute(update(t.auth_events).where(t.auth_events.c.id == event_id)
                         .values(time=time - timedelta(seconds=seconds)))


def kinds(accounts: Accounts, name: str) -> list[str]:
    return [e.kind for e in reversed(accounts.events(name=name))]


def test_each_user_has_their_own_argon2_hash_and_admin_comes_from_the_account(accounts):
    assert not accounts.exist()
    accounts.add("Ada", ADA_PW, admin=True)
    accounts.add("bob", BOB_PW)
    assert accounts.exist()
    assert [(a.name, a.is_admin) for a in accounts.list()] == [("ada", True), ("bob", False)]
    with accounts.engine.connect() as conn:
        hashes = dict(conn.execute(select(t.users.c.name, t.users.c.password_hash)).all())
    assert all(h.startswith("$argon2id$") and ADA_PW not in h and BOB_PW not in h for h in hashes.values())
    assert hashes["ada"] != hashes["bob"]

    assert accounts.sign_in("ADA ", ADA_PW, client="10.0.0.1").is_admin  # names are case-insensitive
    assert not accounts.sign_in("bob", BOB_PW, client="10.0.0.1").is_admin
    with pytest.raises(SignInError, match=WRONG):
        accounts.sign_in("bob", ADA_PW)  # someone else's password
    with pytest.raises(SignInError, match=WRONG):
        accounts.sign_in("carol", ADA_PW)  # no such user: the same sentence
    with pytest.raises(AccountError, match="already"):
        accounts.add("ada", "another password")
    with pytest.raises(AccountError, match="at least 8"):
        accounts.add("eve", "short")
    with pytest.raises(AccountError, match="user name"):
        accounts.add("<script>", "long enough password")


def test_changing_a_password_or_removing_a_user_takes_effect_at_once(accounts):
    before = accounts.add("ada", ADA_PW)
    accounts.set_password("ada", "a brand new password")
    assert accounts.get("ada").stamp != before.stamp  # sessions admitted before the change are void
    with pytest.raises(SignInError):
        accounts.sign_in("ada", ADA_PW)
    assert accounts.sign_in("ada", "a brand new password").name == "ada"
    accounts.set_admin("ada", True)
    assert accounts.get("ada").is_admin
    accounts.remove("ada")
    assert accounts.get("ada") is None and not accounts.exist()
    with pytest.raises(AccountError, match="no user"):
        accounts.remove("ada")
    assert kinds(accounts, "ada") == ["user-added", "password-changed", "failure", "signin", "admin-granted",
                                      "user-removed"]


def test_sign_ins_and_failures_are_recorded_with_the_client(accounts):
    accounts.add("ada", ADA_PW)
    accounts.sign_in("ada", ADA_PW, client="192.0.2.7")
    with pytest.raises(SignInError):
        accounts.sign_in("ada", "wrong password", client="192.0.2.8")
    latest, earlier = accounts.events(name="ada")[:2]
    assert (latest.kind, latest.client, latest.detail) == ("failure", "192.0.2.8", "wrong password")
    assert (earlier.kind, earlier.client) == ("signin", "192.0.2.7")


def test_repeated_failures_for_one_name_slow_down_even_with_the_right_password(accounts):
    accounts.add("ada", ADA_PW)
    for _ in range(FREE_FAILURES):
        with pytest.raises(SignInError, match=WRONG):
            accounts.sign_in("ada", "guess", client="203.0.113.1")
    # The next attempt is refused before the password is looked at, from any client.
    with pytest.raises(SignInError, match="Too many failed sign-ins") as refused:
        accounts.sign_in("ada", ADA_PW, client="198.51.100.2")
    assert refused.value.retry_after_s == pytest.approx(BACKOFF_BASE_S, abs=1.0)
    assert kinds(accounts, "ada")[-1] == "throttled"
    # The back-off lives in the database: another process (a fresh engine) sees it too.
    dispose_engines()
    fresh = Accounts(accounts.url)
    assert fresh.retry_after_s("ada") > 0
    # Once it has passed, one more wrong guess doubles the wait; the right password then gets in.
    age_events(fresh, BACKOFF_BASE_S + 1)
    with pytest.raises(SignInError, match=WRONG):
        fresh.sign_in("ada", "guess again")
    assert fresh.retry_after_s("ada") == pytest.approx(2 * BACKOFF_BASE_S, abs=1.0)
    age_events(fresh, 2 * BACKOFF_BASE_S + 1)
    assert fresh.sign_in("ada", ADA_PW).name == "ada"
    assert fresh.retry_after_s("ada") == 0  # a sign-in forgives the failures before it


def test_failures_from_one_client_slow_that_client_down_across_names(accounts):
    attacker, colleague = "203.0.113.9", "198.51.100.20"
    accounts.add("bob", BOB_PW)
    for i in range(FREE_CLIENT_FAILURES):
        with pytest.raises(SignInError, match=WRONG):
            accounts.sign_in(f"user{i}", "guess", client=attacker)  # a new name each time
    with pytest.raises(SignInError, match="Too many"):
        accounts.sign_in("bob", BOB_PW, client=attacker)
    assert accounts.sign_in("bob", BOB_PW, client=colleague).name == "bob"  # others are not locked out


def test_the_backoff_doubles_up_to_a_ceiling():
    waits = [backoff_s(n, 3) for n in range(20)]
    assert waits[:3] == [0, 0, 0] and waits[3:6] == [2, 4, 8]
    assert max(waits) == waits[-1] == 300


def test_the_users_command_reads_the_password_from_stdin(accounts, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(ADA_PW + "\n"))
    assert cli.main(["users", "add", "ada", "--admin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(BOB_PW + "\n"))
    assert cli.main(["users", "add", "bob"]) == 0
    assert cli.main(["users", "list"]) == 0
    listing = capsys.readouterr().out
    assert "ada  (admin)" in listing and "\nbob  added" in listing
    assert accounts.sign_in("ada", ADA_PW).is_admin

    monkeypatch.setattr("sys.stdin", io.StringIO("a new password for bob\n"))
    assert cli.main(["users", "passwd", "bob"]) == 0
    assert accounts.sign_in("bob", "a new password for bob").name == "bob"
    assert cli.main(["users", "admin", "bob"]) == 0 and accounts.get("bob").is_admin
    assert cli.main(["users", "remove", "bob"]) == 0 and accounts.get("bob") is None

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["users", "add", "carol"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err and accounts.get("carol") is None


def test_only_an_admin_manages_accounts_from_the_dashboard(accounts):
    from kdcore.jobs.access import Actor, PermissionDeniedError

    accounts.add("ada", ADA_PW, admin=True)
    accounts.add("bob", BOB_PW)
    ada, bob = Actor("ada", is_admin=True), Actor("bob")
    for attempt in (lambda: accounts.add("eve", "eve's long password", admin=True, by=bob),
                    lambda: accounts.set_admin("bob", True, by=bob),
                    lambda: accounts.set_password("ada", "taken over!!", by=bob),
                    lambda: accounts.remove("ada", by=bob)):
        with pytest.raises(PermissionDeniedError, match="Only an admin"):
            attempt()
    assert accounts.get("eve") is None and not accounts.get("bob").is_admin
    assert accounts.sign_in("ada", ADA_PW).is_admin  # untouched
    with pytest.raises(PermissionDeniedError, match="your own account"):
        accounts.remove("ada", by=ada)
    with pytest.raises(PermissionDeniedError, match="your own account"):
        accounts.set_admin("ADA", False, by=ada)
    accounts.add("eve", "eve's long password", by=ada)
    accounts.set_admin("eve", True, by=ada)
    assert accounts.events(name="eve")[0].detail == "by ada"


def test_a_user_changes_their_own_password_with_the_current_one(accounts):
    before = accounts.add("bob", BOB_PW)
    with pytest.raises(SignInError, match=WRONG):
        accounts.change_own_password("bob", "not my password", "bob's next password")
    after = accounts.change_own_password("bob", BOB_PW, "bob's next password")
    assert after.stamp != before.stamp and accounts.sign_in("bob", "bob's next password").name == "bob"
    assert [e.detail for e in accounts.events(name="bob") if e.kind == "password-changed"] == ["by themselves"]


def test_attempts_made_in_parallel_count_against_each_other(accounts, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from kdcore.jobs import accounts as module

    monkeypatch.setattr(module, "BACKOFF_BASE_S", 600.0)  # no attempt of this test may outwait the back-off
    accounts.add("ada", ADA_PW)

    def attempt(_: int) -> str:
        try:
            accounts.sign_in("ada", "a guess in parallel", client="203.0.113.5")
        except SignInError as err:
            return "throttled" if err.retry_after_s > 0 else "wrong"
        return "in"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(12)))
    # However the twelve interleave, only the free failures reach the password check.
    assert sorted(outcomes) == ["throttled"] * (12 - FREE_FAILURES) + ["wrong"] * FREE_FAILURES
    assert kinds(accounts, "ada").count("failure") == FREE_FAILURES
