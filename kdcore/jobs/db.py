"""Connecting to the store: which database, SQLite settings that make several processes safe, schema setup.

SQLite is used in WAL mode (readers never block the writer) with a busy timeout, and every transaction
that writes starts with BEGIN IMMEDIATE: it takes the write lock up front, so two processes never both
read, then both try to upgrade to writing and one gets "database is locked" without waiting."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, create_engine, event, func, select, text
from sqlalchemy.engine import make_url

from kdcore.errors import KDError
from kdcore.jobs.schema import SCHEMA_VERSION, meta_table, metadata
from kdcore.paths import kd_home

SQLITE_BUSY_TIMEOUT_S = 30.0  # well under STALE_AFTER_S: a blocked heartbeat must not look like a dead worker

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


class StoreUnavailableError(KDError):
    """The database cannot be opened or was written by a newer KD Studio."""


def default_url() -> str:
    """$KD_DATABASE_URL, else a SQLite file in KD_HOME."""
    url = os.environ.get("KD_DATABASE_URL", "").strip()
    if url:
        return url
    return f"sqlite:///{kd_home() / 'kdstudio.db'}"


def get_engine(url: str) -> Engine:
    """One engine (and connection pool) per URL per process; the schema is checked once, on first use."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create_engine(url)
            ensure_schema(engine)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests; a process about to exit)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def _create_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception:
        raise StoreUnavailableError(f"the database URL {url!r} is not a valid SQLAlchemy URL") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = os.path.dirname(os.path.abspath(parsed.database))
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as err:
                raise StoreUnavailableError(f"cannot open the run store: the folder {folder} cannot be created "
                                            f"({err.strerror})") from None
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        )
        _configure_sqlite(engine)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except ModuleNotFoundError as err:
        raise StoreUnavailableError(
            f"the database driver {err.name!r} is not installed (for PostgreSQL: pip install psycopg2-binary)"
        ) from None


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions cannot do BEGIN IMMEDIATE).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a power cut may lose the last commits only
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("kd_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A transaction that writes: committed on success, rolled back on error."""
    with engine.connect() as conn:
        conn = conn.execution_options(kd_write=True)
        with conn.begin():
            yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A read-only snapshot (several SELECTs see one consistent state)."""
    with engine.connect() as conn:
        with conn.begin():
            yield conn


def database_now(conn: Connection) -> datetime:
    """The database's clock (UTC). Heartbeats are written and judged by it, so no worker's own clock,
    however far off, can make a healthy run look stale."""
    if conn.dialect.name == "sqlite":  # SQLite's 'now' is the database file's host clock, read in C
        value = conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar_one()
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    value = conn.execute(select(func.current_timestamp())).scalar_one()
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _add_run_notes(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE kd_runs ADD COLUMN notes TEXT")


# Steps that bring an older schema up to date: MIGRATIONS[v] turns version v into v + 1.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _add_run_notes}

_SCHEMA_LOCK_ID = 4_242_001  # PostgreSQL advisory lock: two processes creating the schema at once take turns


def ensure_schema(engine: Engine) -> None:
    try:
        with write_tx(engine) as conn:
            if is_postgres(engine):
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK_ID})
            metadata.create_all(conn, checkfirst=True)
            row = conn.execute(select(meta_table.c.value).where(meta_table.c.key == "schema_version")).first()
            if row is None:
                conn.execute(meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                return
            version = int(row[0])
            if version > SCHEMA_VERSION:
                raise StoreUnavailableError(
                    f"the run store was written by a newer KD Studio (schema {version}, this one knows {SCHEMA_VERSION})"
                )
            for v in range(version, SCHEMA_VERSION):
                MIGRATIONS[v](conn)
            if version != SCHEMA_VERSION:
                conn.execute(
                    meta_table.update().where(meta_table.c.key == "schema_version").values(value=str(SCHEMA_VERSION))
                )
    except StoreUnavailableError:
        raise
    except Exception as err:  # noqa: BLE001 - any driver error here means "cannot open the store"
        url = engine.url.render_as_string(hide_password=True)
        raise StoreUnavailableError(f"cannot open the run store at {url} ({err.__class__.__name__}: "
                                    f"{str(err).splitlines()[0] if str(err) else ''})") from err
