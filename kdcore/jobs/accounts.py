"""Team accounts for password sign-in: one argon2id password hash per user in the run store's database,
admins marked there (never derived from a typed name), and every sign-in, failure and account change
recorded as an event in the same database.

Repeated failures slow down: after `FREE_FAILURES` failures for one name (or `FREE_CLIENT_FAILURES` from one
client address) each further attempt must wait twice as long as the one before (from `BACKOFF_BASE_S` up to
`BACKOFF_MAX_S`). Attempts are counted from the events table, so the back-off holds across reruns, browser
sessions, dashboard restarts and several dashboard processes sharing one database."""
from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Connection, delete, func, insert, select, text, update

from kdcore.errors import KDError
from kdcore.jobs import schema as t
from kdcore.jobs.access import Actor, PermissionDeniedError
from kdcore.jobs.db import default_url, get_engine, is_postgres, read_tx, write_tx

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._@+\-]{0,63}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
FREE_FAILURES = 3  # per name: failures allowed before attempts slow down
FREE_CLIENT_FAILURES = 10  # per client address, over every name it tried
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0
FAILURE_WINDOW = timedelta(minutes=30)  # failures older than this (or before a sign-in) are forgotten
_SIGN_IN_LOCK_ID = 4_242_002  # PostgreSQL advisory lock: sign-in attempts pass the back-off one at a time


class AccountError(KDError):
    """A user-management request that cannot be done (unknown user, bad name, weak password)."""


class SignInError(KDError):
    """A refused sign-in; `retry_after_s` > 0 when the refusal is the back-off, not the password."""

    def __init__(self, message: str, retry_after_s: float = 0.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Account:
    name: str
    is_admin: bool
    created_at: datetime
    password_changed_at: datetime

    @property
    def stamp(self) -> str:
        """Changes when the password does: a session admitted before the change no longer counts."""
        return self.password_changed_at.isoformat()


@dataclass(frozen=True)
class AuthEvent:
    time: datetime
    kind: str
    name: str
    client: str
    detail: str | None


def _now() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    return PasswordHasher()  # argon2id with the library's current recommended parameters


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    # Verified against when the name is unknown, so a wrong name costs as long as a wrong password.
    return _hasher().hash("no such account")


def normal_name(name: str) -> str:
    return str(name or "").strip().casefold()


def check_name(name: str) -> str:
    name = normal_name(name)
    if not NAME_PATTERN.fullmatch(name):
        raise AccountError("a user name has 1 to 64 characters: letters, digits and . _ @ + - "
                           "(starting with a letter or digit)")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"a password can have at most {MAX_PASSWORD} characters")
    return password


def backoff_s(failures: int, free: int) -> float:
    """How long to wait after `failures` recent failures, when `free` of them are allowed without waiting."""
    if failures < free:
        return 0.0
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** (failures - free))


class Accounts:
    """The users of one run store's database."""

    def __init__(self, url: str | None = None):
        self.url = url or default_url()
        self.engine = get_engine(self.url)

    # ---- accounts ----------------------------------------------------------------------------------
    def exist(self) -> bool:
        """Whether any account exists (then password sign-in is per user, and a shared password is refused)."""
        with read_tx(self.engine) as conn:
            return conn.execute(select(t.users.c.name).limit(1)).first() is not None

    def get(self, name: str) -> Account | None:
        with read_tx(self.engine) as conn:
            row = conn.execute(select(t.users).where(t.users.c.name == normal_name(name))).mappings().first()
        return None if row is None else _account(row)

    def list(self) -> list[Account]:
        with read_tx(self.engine) as conn:
            rows = conn.execute(select(t.users).order_by(t.users.c.name)).mappings().all()
        return [_account(row) for row in rows]

    def add(self, name: str, password: str, *, admin: bool = False, by: Actor | None = None) -> Account:
        """A new account. `by`: the signed-in admin asking (None: the command line, trusted)."""
        who = _manager(by)
        name, hashed, now = check_name(name), _hasher().hash(check_password(password)), _now()
        with write_tx(self.engine) as conn:
            if conn.execute(select(t.users.c.name).where(t.users.c.name == name)).first() is not None:
                raise AccountError(f"there is already a user {name!r}")
            conn.execute(insert(t.users).values(name=name, password_hash=hashed, is_admin=admin, created_at=now,
                                                password_changed_at=now))
            self._event(conn, "user-added", name, detail=f"by {who}" + (" as an admin" if admin else ""), now=now)
        return Account(name, admin, now, now)

    def remove(self, name: str, *, by: Actor | None = None) -> None:
        who, name = _manager(by, not_self=name), normal_name(name)
        with write_tx(self.engine) as conn:
            if conn.execute(delete(t.users).where(t.users.c.name == name)).rowcount != 1:
                raise AccountError(f"there is no user {name!r}")
            self._event(conn, "user-removed", name, detail=f"by {who}")

    def set_password(self, name: str, password: str, *, by: Actor | None = None) -> None:
        who = _manager(by)
        self._set_hash(normal_name(name), check_password(password), detail=f"by {who}")

    def set_admin(self, name: str, admin: bool, *, by: Actor | None = None) -> None:
        who, name = _manager(by, not_self=None if admin else name), normal_name(name)
        with write_tx(self.engine) as conn:
            if conn.execute(update(t.users).where(t.users.c.name == name).values(is_admin=admin)).rowcount != 1:
                raise AccountError(f"there is no user {name!r}")
            self._event(conn, "admin-granted" if admin else "admin-revoked", name, detail=f"by {who}")

    def change_own_password(self, name: str, current: str, new: str, *, client: str = "") -> Account:
        """A user replacing their password: the current one is checked like a sign-in (throttled, recorded).
        Returns the account as it now is (its new stamp keeps the session that made the change)."""
        check_password(new)
        self.sign_in(name, current, client=client)
        self._set_hash(normal_name(name), new, detail="by themselves")
        return self.get(name)

    # ---- signing in --------------------------------------------------------------------------------
    def sign_in(self, name: str, password: str, *, client: str = "") -> Account:
        """The account when `password` is this user's, else SignInError (one sentence; the same for an unknown
        name and a wrong password). Refused without looking at the password while the back-off runs."""
        key, client = normal_name(name)[:64], str(client or "")[:64]
        attempt = self._begin_attempt(key, client)
        with read_tx(self.engine) as conn:
            row = conn.execute(select(t.users).where(t.users.c.name == key)).mappings().first()
        stored = row["password_hash"] if row is not None else _decoy_hash()
        try:
            _hasher().verify(stored, password)
            ok = row is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok:
            self._end_attempt(attempt, "failure", "unknown user" if row is None else "wrong password")
            raise SignInError("That user name and password do not match.")
        if _hasher().check_needs_rehash(stored):  # parameters got stronger since: upgrade the stored hash
            with write_tx(self.engine) as conn:
                conn.execute(update(t.users).where(t.users.c.name == key)
                             .values(password_hash=_hasher().hash(password)))
        self._end_attempt(attempt, "signin", None)
        return _account(row)

    def check_shared(self, name: str, password: str, expected: str, *, client: str = "") -> None:
        """The bootstrap path (a shared team password, only while no account exists), throttled and recorded
        like a user's sign-in. None when accepted, else SignInError."""
        key, client = normal_name(name)[:64], str(client or "")[:64]
        attempt = self._begin_attempt(key, client)
        if not hmac.compare_digest(password.encode("utf-8"), expected.encode("utf-8")):
            self._end_attempt(attempt, "failure", "wrong shared password")
            raise SignInError("That password is not the team's password.")
        self._end_attempt(attempt, "signin", "shared password (no admin rights)")

    def retry_after_s(self, name: str, client: str = "") -> float:
        """Seconds before the next attempt for this name from this client is looked at (0: now)."""
        key, client = normal_name(name)[:64], str(client or "")[:64]
        now = _now()
        with read_tx(self.engine) as conn:
            waits = [self._wait(conn, t.auth_events.c.name == key, FREE_FAILURES, now)]
            if client:
                waits.append(self._wait(conn, t.auth_events.c.client == client, FREE_CLIENT_FAILURES, now))
        return max(waits)

    # ---- events ------------------------------------------------------------------------------------
    def record(self, kind: str, name: str, client: str = "", detail: str | None = None) -> None:
        with write_tx(self.engine) as conn:
            self._event(conn, kind, name, client, detail)

    def events(self, *, name: str | None = None, limit: int = 200) -> list[AuthEvent]:
        """The newest events first."""
        e = t.auth_events.c
        query = select(e.time, e.kind, e.name, e.client, e.detail).order_by(e.id.desc()).limit(max(1, int(limit)))
        if name is not None:
            query = query.where(e.name == normal_name(name))
        with read_tx(self.engine) as conn:
            return [AuthEvent(*row) for row in conn.execute(query).all()]

    # ---- internals ---------------------------------------------------------------------------------
    def _set_hash(self, name: str, password: str, *, detail: str) -> None:
        hashed, now = _hasher().hash(password), _now()
        with write_tx(self.engine) as conn:
            done = conn.execute(update(t.users).where(t.users.c.name == name)
                                .values(password_hash=hashed, password_changed_at=now))
            if done.rowcount != 1:
                raise AccountError(f"there is no user {name!r}")
            self._event(conn, "password-changed", name, detail=detail, now=now)

    def _begin_attempt(self, key: str, client: str) -> int:
        """Let one attempt through the back-off, counted as a failure until it proves otherwise, so attempts
        made in parallel (many tabs, many scripts) count against each other at once. One transaction at a
        time decides (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock); raises SignInError while the
        back-off runs. Returns the attempt's event id."""
        now = _now()
        with write_tx(self.engine) as conn:
            if is_postgres(self.engine):
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SIGN_IN_LOCK_ID})
            wait = self._wait(conn, t.auth_events.c.name == key, FREE_FAILURES, now)
            if client:
                wait = max(wait, self._wait(conn, t.auth_events.c.client == client, FREE_CLIENT_FAILURES, now))
            if wait > 0:
                self._event(conn, "throttled", key, client, f"{wait:.0f} s left", now=now)
            else:
                attempt = conn.execute(insert(t.auth_events).values(
                    time=now, kind="failure", name=key, client=client, detail="checking")).inserted_primary_key[0]
        if wait > 0:
            raise SignInError(f"Too many failed sign-ins; try again in {max(1, round(wait))} s.", retry_after_s=wait)
        return int(attempt)

    def _end_attempt(self, attempt: int, kind: str, detail: str | None) -> None:
        with write_tx(self.engine) as conn:
            conn.execute(update(t.auth_events).where(t.auth_events.c.id == attempt).values(kind=kind, detail=detail))

    @staticmethod
    def _wait(conn: Connection, who, free: int, now: datetime) -> float:
        """Seconds still to wait for one name or client: its failures since its last sign-in (within the
        window) decide the back-off, which counts from the latest failure."""
        e = t.auth_events.c
        since = now - FAILURE_WINDOW
        last_ok = conn.execute(select(func.max(e.time)).where(who, e.kind == "signin", e.time >= since)).scalar()
        if last_ok is not None:
            since = last_ok
        count, latest = conn.execute(select(func.count(), func.max(e.time))
                                     .where(who, e.kind == "failure", e.time >= since)).one()
        if not count:
            return 0.0
        if latest.tzinfo is None:  # SQLite hands an aggregate back without its zone
            latest = latest.replace(tzinfo=UTC)
        return max(0.0, backoff_s(int(count), free) - (now - latest).total_seconds())

    @staticmethod
    def _event(conn: Connection, kind: str, name: str, client: str = "", detail: str | None = None,
               now: datetime | None = None) -> None:
        conn.execute(insert(t.auth_events).values(time=now or _now(), kind=kind, name=name[:64],
                                                  client=(client or "")[:64], detail=detail))


def _manager(by: Actor | None, *, not_self: str | None = None) -> str:
    """Who manages accounts here, for the record: the command line (None) or a signed-in admin. An admin cannot
    remove or demote themselves from the dashboard: a team always keeps an admin who can sign in."""
    if by is None:
        return "the command line"
    if not by.is_admin or not by.name.strip():
        raise PermissionDeniedError("Only an admin may manage accounts.")
    if not_self is not None and normal_name(not_self) == normal_name(by.name):
        raise PermissionDeniedError("Ask another admin (or use the command line) to remove or demote your own "
                                    "account.")
    return by.name


def _account(row) -> Account:
    return Account(row["name"], bool(row["is_admin"]), row["created_at"], row["password_changed_at"])
