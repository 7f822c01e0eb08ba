"""Who is using the dashboard, and which runs they may change.

The login mode follows the configuration, strongest first:
- "oidc": an `[auth]` block in .streamlit/secrets.toml → Streamlit's OpenID Connect login (st.login, st.user).
  The identity provider proves who signs in; admins are the e-mail addresses in $KD_ADMINS or
  st.secrets["admins"] (matched against the provider's e-mail claim only, never a display name).
- "password": user accounts in the run store (`python -m kdcore users add NAME [--admin]`): each user signs in
  with their own name and password (argon2id hashes); admin rights come from the account. Failures slow down
  per name and per client address and every sign-in and failure is recorded (kdcore.jobs.accounts).
  A shared team password ($KD_SHARED_PASSWORD or st.secrets["shared_password"]) is a bootstrap path only: it
  works while no account exists, the typed name is claimed, not proven, and it never grants admin rights.
  Once the first account exists the shared password is refused.
- "off": none of these (a laptop) → the operating-system user, who may change every run.
$KD_REQUIRE_LOGIN=1 (the team deployment sets it) makes "off" a refusal, so a server whose login is
misconfigured never opens to everyone. Admins may change anyone's run; everyone else only their own."""
from __future__ import annotations

import getpass
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from app import guard
from kdcore.jobs import access
from kdcore.jobs.access import NOBODY, Actor, PermissionDeniedError  # noqa: F401 - re-exported for pages
from kdcore.jobs.accounts import Accounts, SignInError
from kdcore.jobs.db import default_url
from kdcore.jobs.store import RunStore

MODES = ("oidc", "password", "off")
# {"name", "via": "account" with "stamp" (the password's change time) | "shared" with "key" (its fingerprint)}
SESSION_KEY = "kd_auth_session"
OIDC_RECORDED_KEY = "kd_auth_oidc_recorded"  # the OIDC name whose sign-in this session has recorded
NAME_PATTERN = re.compile(r"[\w.@+\- ]{1,64}")
# st.user claims tried in order for the name a run is stored under.
OIDC_NAME_CLAIMS = ("email", "preferred_username", "name", "sub")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class User:
    name: str
    is_admin: bool = False
    mode: str = "off"


class LoginConfigError(Exception):
    """Login is required here but nothing to log in with is configured."""


# ---- configuration -------------------------------------------------------------------------------
def _secrets() -> Mapping[str, Any]:
    try:
        return st.secrets.to_dict()
    except Exception:  # noqa: BLE001 - no secrets.toml at all: the laptop case
        return {}


def oidc_providers(secrets: Mapping[str, Any] | None = None) -> list[str | None] | None:
    """The st.login() providers of the [auth] block ([None] for the single unnamed one), or None without one."""
    auth = (_secrets() if secrets is None else secrets).get("auth")
    if not isinstance(auth, Mapping) or not auth:
        return None
    named = [key for key, value in auth.items() if isinstance(value, Mapping) and "client_id" in value]
    if "client_id" in auth or not named:
        return [None, *named]
    return named


def shared_password(secrets: Mapping[str, Any] | None = None) -> str | None:
    value = os.environ.get("KD_SHARED_PASSWORD", "")
    if not value:
        value = str((_secrets() if secrets is None else secrets).get("shared_password", "") or "")
    return value or None


def login_required() -> bool:
    return os.environ.get("KD_REQUIRE_LOGIN", "").strip().lower() in _TRUE


def accounts() -> Accounts:
    """The user accounts of this dashboard's run store."""
    return Accounts(default_url())


def login_mode(secrets: Mapping[str, Any] | None = None, *, has_accounts: bool | None = None) -> str:
    """"oidc", "password" or "off" (see the module docstring); raises LoginConfigError when login is required
    but nothing is configured. `has_accounts` defaults to asking the run store."""
    secrets = _secrets() if secrets is None else secrets
    if oidc_providers(secrets):
        return "oidc"
    if shared_password(secrets) or (accounts().exist() if has_accounts is None else has_accounts):
        return "password"
    if login_required():
        raise LoginConfigError("This server requires a login, but there is no user account "
                               "(python -m kdcore users add NAME --admin), no [auth] block in secrets.toml and "
                               "no shared password (KD_SHARED_PASSWORD).")
    return "off"


def admins(secrets: Mapping[str, Any] | None = None) -> frozenset[str]:
    """Admin names (case-insensitive) from $KD_ADMINS and st.secrets["admins"] (a list or a comma string)."""
    secrets = _secrets() if secrets is None else secrets
    names: list[str] = os.environ.get("KD_ADMINS", "").split(",")
    configured = secrets.get("admins", [])
    names += configured.split(",") if isinstance(configured, str) else [str(n) for n in configured]
    return frozenset(n.strip().casefold() for n in names if n.strip())


def is_admin(name: str, admin_names: frozenset[str] | None = None) -> bool:
    return name.strip().casefold() in (admins() if admin_names is None else admin_names)


def can_modify(user: User, run_owner: str | None) -> bool:
    """May this user change (cancel, delete, rename, tag) a run of `run_owner`? The store's rule."""
    return access.may_change(actor(user), run_owner)


def denial(user: User, run_owner: str | None, action: str) -> str | None:
    """None when `user` may `action` ("cancel", "delete", "rename", "tag") a run of `run_owner`, else the sentence
    saying why not (for disabling a button; the store checks again when the action runs)."""
    return access.denial(actor(user), run_owner, action)


def check_name(name: str) -> str | None:
    """None when `name` can be typed as a name on the shared-password screen, else the sentence to show."""
    if not NAME_PATTERN.fullmatch(name.strip()):
        return "Type your name (letters, digits, spaces and . @ + - _, at most 64 characters)."
    return None


def client_address() -> str:
    """The address this session's browser connected from ("local" on loopback, where Streamlit gives none):
    what per-client rate limiting counts."""
    try:
        address = st.context.ip_address
    except Exception:  # noqa: BLE001 - outside a server (AppTest): one local client
        address = None
    return address if isinstance(address, str) and address else "local"


def _fingerprint(password: str) -> str:
    # A session remembers which password it was admitted with; changing the password logs everyone out.
    return hashlib.sha256(b"kdstudio-login:" + password.encode("utf-8")).hexdigest()[:16]


def local_user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "local"


# ---- the gate --------------------------------------------------------------------------------------
def current_user() -> User | None:
    """The signed-in user of this session (the local user when login is off), or None; renders nothing."""
    try:
        mode = login_mode()
    except LoginConfigError:
        return None
    if mode == "off":
        return User(local_user_name(), is_admin=True, mode="off")
    if mode == "oidc":
        return _oidc_user()
    return _password_user(st.session_state.get(SESSION_KEY))


def _oidc_user() -> User | None:
    if not st.user.get("is_logged_in", False):
        return None
    name = next((str(st.user.get(c)) for c in OIDC_NAME_CLAIMS if st.user.get(c)), "")
    if not name:
        return None
    # Admin rights follow the provider's e-mail claim only: a display or user name can be chosen by its owner.
    email = str(st.user.get("email") or "")
    verified = st.user.get("email_verified", True) is not False
    return User(name, is_admin=bool(email) and verified and is_admin(email), mode="oidc")


def _password_user(session: Any) -> User | None:
    """The user a password session was admitted as, while that still holds: the account exists and its
    password has not changed since; or, for the shared password, it is unchanged and still no account exists."""
    if not isinstance(session, dict):
        return None
    if session.get("via") == "account":
        account = accounts().get(str(session.get("name", "")))
        if account is None or account.stamp != session.get("stamp"):
            return None
        return User(account.name, is_admin=account.is_admin, mode="password")
    password = shared_password()
    if session.get("via") != "shared" or password is None or session.get("key") != _fingerprint(password) \
            or accounts().exist():
        return None
    return User(str(session["name"]), is_admin=False, mode="password")  # a claimed name is never an admin


def require_login() -> User:
    """The signed-in user; otherwise renders the login screen and stops the script (nothing else runs)."""
    user = current_user()
    guard.note_session(user is not None)  # what the upload and media guard lets through for this session
    if user is not None:
        if user.mode == "oidc" and st.session_state.get(OIDC_RECORDED_KEY) != user.name:
            # The provider did the checking; the sign-in still goes into the same audit trail, once a session.
            accounts().record("signin", user.name, client_address(), "OpenID Connect")
            st.session_state[OIDC_RECORDED_KEY] = user.name
        return user
    try:
        mode = login_mode()
    except LoginConfigError as err:
        st.title("KD Studio")
        st.error(str(err))
        st.stop()
    st.title("KD Studio")
    if mode == "oidc":
        _oidc_screen(oidc_providers() or [None])
    else:
        _password_screen()
    st.stop()  # NoReturn: the pages never run for a visitor who is not signed in


def _oidc_screen(providers: list[str | None]) -> None:
    st.markdown("Sign in to use this team's KD Studio.")
    if st.user.get("is_logged_in", False):  # signed in, but the provider sent no usable name
        st.error("Your identity provider sent no e-mail, user name or subject to name you by.")
        st.button("Sign out", key="auth_logout", on_click=st.logout)
        return
    for provider in providers:
        label = "Sign in" if provider is None else f"Sign in with {provider.replace('_', ' ').title()}"
        if st.button(label, type="primary", key=f"auth_login_{provider or 'default'}", icon=":material/login:"):
            if provider is None:
                st.login()
            else:
                st.login(provider)


def _password_screen() -> None:
    shared = None if accounts().exist() else shared_password()
    if shared is None:
        st.markdown("Sign in with your user name and password.")
    else:
        st.markdown("Sign in with your name and the team's password.")
        st.caption("The shared password is for setting up: it grants no admin rights and stops working once the "
                   "first user account exists (`python -m kdcore users add NAME --admin`).")
    with st.form("auth_login_form"):
        name = st.text_input("User name" if shared is None else "Your name", key="auth_name", max_chars=64)
        password = st.text_input("Password" if shared is None else "Team password", type="password",
                                 key="auth_password", max_chars=1024)
        submitted = st.form_submit_button("Sign in", type="primary", icon=":material/login:")
    if not submitted:
        return
    client = client_address()
    try:
        if shared is None:
            account = accounts().sign_in(name, password, client=client)
            session = {"name": account.name, "via": "account", "stamp": account.stamp}
        else:
            problem = check_name(name)
            if problem:
                st.error(problem)
                return
            accounts().check_shared(name, password, shared, client=client)
            session = {"name": name.strip(), "via": "shared", "key": _fingerprint(shared)}
    except SignInError as err:
        st.error(str(err))
        return
    st.session_state[SESSION_KEY] = session
    st.rerun()


def keep_session(account: Any) -> None:
    """After the user changed their own password: this session stays admitted under the new one."""
    st.session_state[SESSION_KEY] = {"name": account.name, "via": "account", "stamp": account.stamp}


def sign_out() -> None:
    session = st.session_state.pop(SESSION_KEY, None)
    if isinstance(session, dict) and session.get("name"):
        accounts().record("signout", str(session["name"]), client_address())


def account_box(user: User) -> None:
    """Who is signed in and a sign-out button (for the sidebar); nothing when login is off."""
    if user.mode == "off":
        return
    st.caption(f"Signed in as **{user.name}**" + (" (admin)" if user.is_admin else ""))
    if user.mode == "oidc":
        st.button("Sign out", key="auth_logout", icon=":material/logout:", on_click=st.logout)
    else:
        st.button("Sign out", key="auth_logout", icon=":material/logout:", on_click=sign_out)


def current_name() -> str | None:
    """The name runs submitted in this session are stored under (None only outside a signed-in session)."""
    user = current_user()
    return user.name if user else None


def actor(user: User | None) -> Actor:
    """The store's view of a signed-in user (nobody when None)."""
    return NOBODY if user is None else Actor(user.name, is_admin=user.is_admin)


def as_owner(store: RunStore, user: User | None = None) -> RunStore:
    """`store` acting for `user` (default: the signed-in user of this session): submissions carry the user as
    their owner, and the store refuses cancel, delete, rename and tags on runs the user may not change. With
    nobody signed in every change is refused."""
    return store.as_actor(actor(user or current_user()))
