"""Login and permissions: the gate in front of every page (OIDC, shared password, or off on a laptop), runs
carrying their owner, the "mine" filter, and cancel/delete refused on other users' runs."""
from __future__ import annotations

import hmac
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.errors import AppTestError

from app import auth
from app.auth import User
from kdcore.jobs import RunStatus, RunStore
from kdcore.jobs import accounts as accounts_module
from kdcore.jobs.accounts import FREE_FAILURES, SignInError

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "app" / "main.py")
RUNS_PAGE = str(ROOT / "pages" / "runs.py")
RUN_PAGE_REL = "../pages/run.py"  # one run's view with its actions, /run?run=<id>
PASSWORD = "correct horse battery staple"
ALICE_PW, CAROL_PW = "alice's own password", "carol's own password"
SPEC = {"dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 1}
OIDC = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32, "client_id": "kd",
        "client_secret": "s", "server_metadata_url": "https://idp.example.com/.well-known/openid-configuration"}


@pytest.fixture()
def login_env(kd_home, monkeypatch, cheap_hashes):
    """No login configured, no embedded worker; each test turns on what it checks."""
    for name in ("KD_SHARED_PASSWORD", "KD_ADMINS", "KD_REQUIRE_LOGIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KD_LOCAL_WORKER", "0")
    return kd_home


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error",
                                   "success") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def popover_disabled(at: AppTest, label: str) -> bool:
    """Whether the popover button `label` is disabled (AppTest has no popover element of its own)."""
    found = []

    def walk(node) -> None:
        if getattr(node, "type", None) == "popover" and node.proto.popover.label == label:
            found.append(node.proto.popover.disabled)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    assert found, f"no popover {label!r}"
    return found[0]


def sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="auth_name").input(name)
    at.text_input(key="auth_password").input(password)
    at.button[0].click()  # the form's submit button
    return at.run()


def assert_only_login(at: AppTest, labels: tuple[str, str] = ("Your name", "Team password")) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert [t.label for t in at.text_input] == list(labels)
    shown = texts(at)
    assert "Quick start" not in shown and "Runs" not in shown and "Latest runs" not in shown
    assert not at.dataframe and not at.toggle


# ---- rules ---------------------------------------------------------------------------------------
def test_only_the_owner_or_an_admin_may_modify_a_run():
    alice, admin = User("alice"), User("carol", is_admin=True)
    assert auth.can_modify(alice, "alice") and auth.can_modify(alice, " alice ")
    assert not auth.can_modify(alice, "bob") and not auth.can_modify(alice, "Alice")
    assert not auth.can_modify(alice, None) and not auth.can_modify(alice, "")
    assert auth.can_modify(admin, "bob") and auth.can_modify(admin, None)
    assert auth.denial(alice, "bob", "cancel") == "Only its owner (bob) or an admin may cancel this run."
    assert auth.denial(alice, "alice", "delete") is None
    assert auth.denial(alice, "bob", "rename") == "Only its owner (bob) or an admin may rename this run."


def test_admins_come_from_the_environment_and_the_secrets(monkeypatch):
    monkeypatch.setenv("KD_ADMINS", " Carol, dave@example.com ,")
    assert auth.admins({}) == {"carol", "dave@example.com"}
    assert auth.admins({"admins": ["Eve"]}) == {"carol", "dave@example.com", "eve"}
    assert auth.admins({"admins": "frank, gina"}) >= {"frank", "gina"}
    assert auth.is_admin("CAROL", auth.admins({})) and not auth.is_admin("alice", auth.admins({}))


def test_login_mode_follows_the_configuration(login_env, monkeypatch):
    assert auth.login_mode({}) == "off"
    assert auth.login_mode({"shared_password": "pw"}) == "password"
    assert auth.login_mode({"auth": OIDC, "shared_password": "pw"}) == "oidc"  # OIDC wins
    assert auth.oidc_providers({"auth": OIDC}) == [None]
    named = {"redirect_uri": OIDC["redirect_uri"], "cookie_secret": "x", "google": {"client_id": "g"},
             "microsoft": {"client_id": "m"}}
    assert auth.oidc_providers({"auth": named}) == ["google", "microsoft"]
    monkeypatch.setenv("KD_SHARED_PASSWORD", "from-env")
    assert auth.login_mode({}) == "password" and auth.shared_password({"shared_password": "x"}) == "from-env"
    monkeypatch.delenv("KD_SHARED_PASSWORD")
    monkeypatch.setenv("KD_REQUIRE_LOGIN", "1")
    with pytest.raises(auth.LoginConfigError, match="requires a login"):
        auth.login_mode({})
    auth.accounts().add("ada", ALICE_PW)  # an account alone turns password sign-in on
    assert auth.login_mode({}) == "password"


def test_the_shared_password_is_compared_in_constant_time(login_env, monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(accounts_module.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    auth.accounts().check_shared("alice", PASSWORD, PASSWORD)
    assert calls == [(PASSWORD.encode(), PASSWORD.encode())]
    with pytest.raises(SignInError, match="That password is not the team's password."):
        auth.accounts().check_shared("alice", "wrong", PASSWORD)
    assert "Type your name" in auth.check_name("  ") and "Type your name" in auth.check_name("<script>")


def test_the_store_as_a_user_sees_it(login_env):
    store = RunStore()
    alice, bob, admin = User("alice"), User("bob"), User("carol", is_admin=True)
    mine = auth.as_owner(store, alice).submit(SPEC, check=False)
    theirs = auth.as_owner(store, bob).submit(SPEC, check=False)
    assert store.get(mine).owner == "alice" and store.get(theirs).owner == "bob"
    assert [r.id for r in store.list_runs(owner="alice")] == [mine]

    with pytest.raises(auth.PermissionDeniedError, match=r"Only its owner \(bob\)"):
        auth.as_owner(store, alice).cancel(theirs)
    with pytest.raises(auth.PermissionDeniedError):
        auth.as_owner(store, alice).delete(theirs)
    assert store.get(theirs).status is RunStatus.QUEUED  # untouched

    auth.as_owner(store, alice).cancel(mine)
    assert store.get(mine).status is RunStatus.CANCELLED
    assert any("alice" in e.message for e in store.events(mine))
    auth.as_owner(store, admin).delete(theirs)
    assert [r.id for r in store.list_runs()] == [mine]
    with pytest.raises(auth.PermissionDeniedError, match="Sign in"):
        store.as_actor(auth.actor(None)).submit(SPEC, check=False)


# ---- the gate in the app -------------------------------------------------------------------------
def test_without_credentials_only_the_login_shows(login_env, monkeypatch):
    monkeypatch.setenv("KD_SHARED_PASSWORD", PASSWORD)
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    assert_only_login(at)
    # A page reached without the app's main script keeps its own gate.
    page = AppTest.from_file(RUNS_PAGE, default_timeout=60).run()
    assert_only_login(page)

    sign_in(at, "alice", "not the password")
    assert_only_login(at)
    assert "That password is not the team's password." in [e.value for e in at.error]


def alice_and_bob_signed_in_as_alice(monkeypatch) -> tuple[RunStore, str, str, AppTest]:
    """With the shared password: a run of alice's and one of bob's, and the app signed in as alice."""
    monkeypatch.setenv("KD_SHARED_PASSWORD", PASSWORD)
    store = RunStore()
    alices = store.submit(SPEC, name="alice's run", owner="alice", check=False)
    bobs = store.submit(SPEC, name="bob's run", owner="bob", check=False)
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    sign_in(at, "alice", PASSWORD)
    return store, alices, bobs, at


def test_with_the_shared_password_a_user_sees_the_runs_but_cannot_touch_others(login_env, monkeypatch):
    store, alices, bobs, at = alice_and_bob_signed_in_as_alice(monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    assert "Signed in as **alice**" in texts(at)
    at.switch_page("../pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert set(table["id"]) == {alices, bobs}
    at.toggle(key="runs_mine").set_value(True).run()
    assert list(at.dataframe[0].value["id"]) == [alices]

    # Another user's run: cancel and delete are disabled (OwnedStore refuses them too: test above).
    at.query_params["run"] = bobs
    at.switch_page(RUN_PAGE_REL).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.button(key="cancel_run").disabled and popover_disabled(at, "Delete")
    with pytest.raises(AppTestError, match="disabled"):  # a browser cannot press it either
        at.button(key="cancel_run").click()
    assert store.get(bobs).status is RunStatus.QUEUED
    # Her own run: both allowed, and cancelling works.
    at.query_params["run"] = alices
    at.run()
    assert not at.button(key="cancel_run").disabled and not popover_disabled(at, "Delete")
    at.button(key="cancel_run").click().run()
    assert store.get(alices).status is RunStatus.CANCELLED

    # Signing out brings the login back.
    at.query_params.pop("run", None)
    at.button(key="auth_logout").click().run()
    assert_only_login(at)


def test_a_bulk_action_over_someone_elses_run_changes_nothing(login_env, monkeypatch):
    store, alices, bobs, at = alice_and_bob_signed_in_as_alice(monkeypatch)
    at.switch_page("../pages/runs.py").run()
    table = next(d for d in at.dataframe if d.key and d.key.startswith("runs_table_"))
    at.session_state[table.key] = {"selection": {"rows": [0, 1], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    # Each action is disabled with the one sentence saying why (the store refuses it too: test_app_groups).
    cancel = at.button(key="runs_bulk_cancel")
    assert cancel.disabled and cancel.help == (f"Nothing was changed: run {bobs} is not yours to cancel. Only its "
                                               "owner (bob) or an admin may cancel this run.")
    with pytest.raises(AppTestError, match="disabled"):
        cancel.click()
    assert popover_disabled(at, "Tag") and popover_disabled(at, "Delete")
    assert {store.get(i).status for i in (alices, bobs)} == {RunStatus.QUEUED}
    # Her own run alone: every action is open to her.
    at.session_state[table.key] = {"selection": {"rows": [list(table.value["id"]).index(alices)], "columns": [],
                                                 "cells": []}}
    at.run()
    assert not at.button(key="runs_bulk_cancel").disabled and not popover_disabled(at, "Tag")
    at.button(key="runs_bulk_cancel").click().run()
    assert store.get(alices).status is RunStatus.CANCELLED and store.get(bobs).status is RunStatus.QUEUED


def test_an_admin_may_cancel_anyones_run(login_env, monkeypatch):
    auth.accounts().add("carol", CAROL_PW, admin=True)
    bobs = RunStore().submit(SPEC, name="bob's run", owner="bob", check=False)
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    sign_in(at, "carol", CAROL_PW)
    assert "(admin)" in texts(at)
    at.query_params["run"] = bobs
    at.switch_page(RUN_PAGE_REL).run()
    assert not at.button(key="cancel_run").disabled and not popover_disabled(at, "Delete")


def test_a_typed_name_never_makes_an_admin(login_env, monkeypatch):
    # The shared password (a bootstrap path while no account exists) admits a claimed name, never as an admin.
    monkeypatch.setenv("KD_SHARED_PASSWORD", PASSWORD)
    monkeypatch.setenv("KD_ADMINS", "carol")
    bobs = RunStore().submit(SPEC, name="bob's run", owner="bob", check=False)
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    sign_in(at, "Carol", PASSWORD)
    assert "Signed in as **Carol**" in texts(at) and "(admin)" not in texts(at)
    at.query_params["run"] = bobs
    at.switch_page(RUN_PAGE_REL).run()
    assert at.button(key="cancel_run").disabled


def test_with_accounts_each_user_signs_in_with_their_own_password(login_env, monkeypatch):
    monkeypatch.setenv("KD_SHARED_PASSWORD", PASSWORD)  # left over from before the accounts: refused now
    monkeypatch.setenv("KD_ADMINS", "carol")  # names in KD_ADMINS mean nothing in password mode
    auth.accounts().add("alice", ALICE_PW)
    auth.accounts().add("carol", CAROL_PW, admin=True)
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    labels = ("User name", "Password")
    assert_only_login(at, labels)
    for name, password in (("carol", PASSWORD), ("Carol", ALICE_PW), ("bob", ALICE_PW), ("alice", CAROL_PW)):
        sign_in(at, name, password)
        assert_only_login(at, labels)
        assert [e.value for e in at.error] == ["That user name and password do not match."]
    sign_in(at, "alice", ALICE_PW)
    assert "Signed in as **alice**" in texts(at) and "(admin)" not in texts(at)
    # A password change signs her existing session out.
    auth.accounts().set_password("alice", "alice's next password")
    at.run()
    assert_only_login(at, labels)
    sign_in(at, "carol", CAROL_PW)
    assert "Signed in as **carol** (admin)" in texts(at)
    assert [e.kind for e in auth.accounts().events(name="carol")][:2] == ["signin", "failure"]


def test_repeated_failures_on_the_login_screen_slow_down(login_env):
    auth.accounts().add("alice", ALICE_PW)
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    for _ in range(FREE_FAILURES):
        sign_in(at, "alice", "a wrong guess")
        assert [e.value for e in at.error] == ["That user name and password do not match."]
    sign_in(at, "alice", ALICE_PW)  # the right password, but too soon
    assert "Too many failed sign-ins; try again in" in at.error[0].value
    assert_only_login(at, ("User name", "Password"))
    # A fresh session (another tab, a rerun, a restarted dashboard) is held back all the same.
    again = AppTest.from_file(MAIN, default_timeout=60).run()
    sign_in(again, "alice", ALICE_PW)
    assert "Too many failed sign-ins" in again.error[0].value
    events = auth.accounts().events(name="alice")
    assert [e.kind for e in events][:2] == ["throttled", "throttled"]
    assert [e.kind for e in events].count("failure") == FREE_FAILURES and events[0].client == "local"


def test_an_auth_block_chooses_oidc(login_env, monkeypatch):
    monkeypatch.setenv("KD_SHARED_PASSWORD", PASSWORD)  # OIDC wins over the shared password
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.secrets["auth"] = OIDC
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [b.label for b in at.button] == ["Sign in"] and not at.text_input
    assert "Quick start" not in texts(at)

    at.user = {"is_logged_in": True, "email": "dave@example.com", "name": "Dave"}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Signed in as **dave@example.com**" in texts(at) and "Quick start" in texts(at)
    at.run()
    assert [(e.kind, e.detail) for e in auth.accounts().events(name="dave@example.com")] == \
        [("signin", "OpenID Connect")]  # recorded once a session, not on every rerun


def test_oidc_admins_are_matched_on_the_email_claim_only(login_env, monkeypatch):
    monkeypatch.setenv("KD_ADMINS", "carol@example.com, carol")
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.secrets["auth"] = OIDC
    at.user = {"is_logged_in": True, "preferred_username": "carol", "name": "carol"}  # no e-mail: a chosen name
    at.run()
    assert "Signed in as **carol**" in texts(at) and "(admin)" not in texts(at)
    at.user = {"is_logged_in": True, "email": "carol@example.com", "email_verified": False}
    at.run()
    assert "(admin)" not in texts(at)
    at.user = {"is_logged_in": True, "email": "carol@example.com", "name": "Carol"}
    at.run()
    assert "Signed in as **carol@example.com** (admin)" in texts(at)


def test_login_is_off_on_a_laptop_unless_required(login_env, monkeypatch):
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    assert not at.exception and not at.text_input
    assert "Quick start" in texts(at) and "Signed in" not in texts(at)

    monkeypatch.setenv("KD_REQUIRE_LOGIN", "1")
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    assert "requires a login" in " ".join(e.value for e in at.error) and "Quick start" not in texts(at)


def forge_click(at: AppTest, key: str) -> AppTest:
    """Press a button the page shows disabled, as a crafted websocket message could."""
    button = at.button(key=key)
    button._value = True
    return at.run()


def test_a_non_owner_is_refused_every_run_action_on_the_run_page(login_env, monkeypatch):
    monkeypatch.setenv("KD_SHARED_PASSWORD", PASSWORD)
    store = RunStore()
    bobs = store.submit(SPEC, name="bob's run", owner="bob", tags=["bob"], check=False)
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    sign_in(at, "alice", PASSWORD)
    at.query_params["run"] = bobs
    at.switch_page(RUN_PAGE_REL).run()
    assert not at.exception, [e.value for e in at.exception]
    # Every action is disabled for her ...
    assert all(popover_disabled(at, label) for label in ("Rename", "Tags", "Delete"))
    assert at.button(key="cancel_run").disabled
    # ... and refused by the store when the click arrives all the same.
    at.text_input(key=f"rename_{bobs}").input("alice's now")
    at.button(key=f"rename_save_{bobs}").click().run()
    refusals = [e.value for e in at.error]
    at.text_input(key=f"tags_{bobs}").input("hijacked")
    at.button(key=f"tags_save_{bobs}").click().run()
    refusals += [e.value for e in at.error]
    at.button(key="delete_confirm").click().run()
    refusals += [e.value for e in at.error]
    assert refusals == [f"Only its owner (bob) or an admin may {action} this run."
                        for action in ("rename", "tag", "delete")]
    forge_click(at, "cancel_run")  # Streamlit drops a disabled button's click; the store would refuse it too
    assert not at.exception and not store.get(bobs).cancel_requested
    record = store.get(bobs)
    assert (record.name, record.tags, record.status, record.cancel_requested) == \
        ("bob's run", ["bob"], RunStatus.QUEUED, False)


# ---- the Team page ---------------------------------------------------------------------------------
TEAM_PAGE_REL = "../pages/team.py"


def test_an_admin_adds_an_account_on_the_team_page_and_it_signs_in(login_env):
    auth.accounts().add("carol", CAROL_PW, admin=True)
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    sign_in(at, "carol", CAROL_PW)
    at.switch_page(TEAM_PAGE_REL).run()
    assert not at.exception, [e.value for e in at.exception]
    at.text_input(key="team_add_name").input("Dave")
    at.text_input(key="team_add_password").input("dave's first password")
    at.button(key="FormSubmitter:team_add-Add").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    dave = auth.accounts().get("dave")
    assert dave is not None and not dave.is_admin
    assert list(at.dataframe[0].value["user"]) == ["carol", "dave"]
    assert "user-added" in set(at.dataframe[1].value["event"])
    # Carol cannot demote herself (a team always keeps an admin who can sign in).
    at.selectbox(key="team_pick").set_value("carol").run()
    at.button(key="team_revoke").click().run()
    assert "your own account" in at.error[0].value and auth.accounts().get("carol").is_admin

    fresh = AppTest.from_file(MAIN, default_timeout=60).run()
    sign_in(fresh, "dave", "dave's first password")
    assert "Signed in as **dave**" in texts(fresh)


def test_a_user_changes_their_password_on_the_team_page_and_sees_no_admin_tools(login_env):
    auth.accounts().add("alice", ALICE_PW)
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    sign_in(at, "alice", ALICE_PW)
    at.switch_page(TEAM_PAGE_REL).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.dataframe and "Admins add and remove accounts" in texts(at)
    at.text_input(key="team_current").input(ALICE_PW)
    at.text_input(key="team_new").input("alice's next password")
    at.text_input(key="team_repeat").input("alice's next password")
    at.button(key="FormSubmitter:team_own_password-Change my password").click().run()
    assert [s.value for s in at.success] == ["Password changed. Your other sessions are signed out."]
    at.run()
    assert "Signed in as **alice**" in texts(at)  # this session stays
    fresh = AppTest.from_file(MAIN, default_timeout=60).run()
    sign_in(fresh, "alice", "alice's next password")
    assert "Signed in as **alice**" in texts(fresh)


def test_the_team_page_says_how_each_other_mode_signs_in(login_env, monkeypatch):
    at = AppTest.from_file(MAIN, default_timeout=60).run()  # a laptop: no login
    at.switch_page(TEAM_PAGE_REL).run()
    assert "Nobody signs in on this machine" in texts(at) and not at.text_input
    monkeypatch.setenv("KD_SHARED_PASSWORD", PASSWORD)
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    sign_in(at, "alice", PASSWORD)
    at.switch_page(TEAM_PAGE_REL).run()
    assert "shared password, which is for setting up only" in texts(at) and not at.text_input
