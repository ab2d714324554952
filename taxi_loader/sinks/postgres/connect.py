"""Connecting to PostgreSQL: libpq's settings, retries for an unreachable server, messages without passwords."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from taxi_loader.errors import ConfigError, TransientError
from taxi_loader.source import RetryPolicy

Connection = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor


def one(cur: Cursor) -> tuple[Any, ...]:
    """The row a statement that always returns one row (an aggregate, a function call) returned."""
    row = cur.fetchone()
    assert row is not None, "the statement returned no row"
    return row


def commit_unflushed(conn: Connection) -> None:
    """Commit without waiting for the commit to reach the disk (synchronous_commit off, for this transaction
    only). A server crash in the next fraction of a second may undo it, as if it had not run.

    Only for a transaction whose loss costs a re-run and nothing else: stage's (the merge that follows waits
    for its own commit, and PostgreSQL writes its log in order, so a merged month is on disk with its
    staging), a staging table's drop, and the ledger rows of a load that changed no row of the table. Each
    flush waited for is a write to the disk: on a busy one, tens to hundreds of milliseconds.
    """
    with conn.cursor() as cur:
        cur.execute("SET LOCAL synchronous_commit = off")
    conn.commit()


def libpq_dsn(db_url: str | None) -> str:
    """`--db-url` as libpq takes it. The course's SQLAlchemy-style `postgresql+psycopg2://root:root@host/db` loses
    its `+driver`; everything else is libpq's to read as it is (several hosts, `options=` with spaces, quoted
    passwords). Another database's URL is refused."""
    if not db_url or "://" not in db_url:
        return db_url or ""
    scheme, rest = db_url.split("://", 1)
    backend = scheme.split("+", 1)[0].lower()
    if backend not in ("postgresql", "postgres"):
        raise ConfigError(
            f"the database URL is a {backend} URL: taxi-loader loads into PostgreSQL "
            "(postgresql://user:password@host:port/dbname)"
        )
    return f"postgresql://{rest}"


def describe_target(db_url: str | None) -> str:
    """host:port/dbname as a connection string or URL gives them, without the password, for messages before
    a connection exists; what it leaves out comes from libpq's PG* variables, which only libpq reads."""
    try:
        params = psycopg2.extensions.parse_dsn(libpq_dsn(db_url))
    except (psycopg2.ProgrammingError, ConfigError):
        return "the configured database"
    if not params.get("host") and not params.get("dbname"):
        return "the server of the PG* variables"
    host = params.get("host") or "(PGHOST)"
    port = params.get("port") or "(PGPORT)"
    db = params.get("dbname") or "(PGDATABASE)"
    return f"{host}:{port}/{db}"


def connected_target(conn: Connection) -> str:
    """user@host:port/dbname of an open connection: the values libpq resolved, whatever set them."""
    info = conn.info
    return f"{info.user}@{info.host}:{info.port}/{info.dbname}"


_CONFIG_PROBLEMS = (
    "password authentication failed",
    "authentication failed",
    "does not exist",
    "no password supplied",
    "permission denied",
    "pg_hba.conf",
    # settings libpq cannot use: configuration, not a server to wait for
    "invalid port number",
    "invalid sslmode value",
    "invalid connection option",
    "invalid integer value",
    "invalid value for parameter",
)


class _Unreachable(Exception):
    pass


def connect(db_url: str | None, retry: RetryPolicy = RetryPolicy(), **overrides: Any) -> Connection:
    """Open a connection; libpq's PG* variables apply when `db_url` leaves something out, `overrides` (libpq
    keywords) over both.

    Unreachable servers are retried with backoff, then TransientError; wrong credentials or a missing
    database are ConfigError at once. Messages name the host, never the password.
    """
    dsn = libpq_dsn(db_url)
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        raise ConfigError(
            "the database URL cannot be parsed; use postgresql://user:password@host:port/dbname"
        ) from None
    try:
        for attempt in retry.retrying((_Unreachable,)):
            with attempt:
                try:
                    conn = psycopg2.connect(
                        dsn, connect_timeout=max(1, int(retry.timeout)), application_name="taxi-loader", **overrides
                    )
                except psycopg2.OperationalError as exc:
                    # libpq's own words name the host, port, user and database in force, wherever they came
                    # from (the URL, PG* variables, its defaults): quoted rather than guessed.
                    text = " ".join(str(exc).split()) if str(exc).strip() else "connection failed"
                    missing = re.search(r'database "([^"]+)" does not exist', text)
                    if missing:
                        raise ConfigError(
                            f"database {missing[1]} does not exist on that PostgreSQL server: create it with "
                            f"`createdb {missing[1]}` (or CREATE DATABASE), or name another in --db-url / PGDATABASE"
                        ) from None
                    if any(p in text for p in _CONFIG_PROBLEMS):
                        raise ConfigError(
                            f"cannot log in to PostgreSQL: {_scrub(text, params)}; "
                            "check --db-url / TAXI_LOADER_DB_URL or the PG* variables"
                        ) from None
                    raise _Unreachable(_scrub(text, params)) from None
    except _Unreachable as exc:
        raise TransientError(
            f"PostgreSQL is unreachable after {retry.attempts} attempts ({exc}); "
            "start it or fix --db-url / the PG* variables, then run the command again"
        ) from None
    conn.autocommit = False
    return conn


def _scrub(text: str, params: dict[str, str]) -> str:
    password = params.get("password")
    return text.replace(password, "***") if password else text


@contextmanager
def session(db_url: str | None, retry: RetryPolicy = RetryPolicy()) -> Iterator[Connection]:
    """A connection that is closed afterwards; database errors become TransientError naming the host."""
    conn = connect(db_url, retry)
    try:
        yield conn
    except psycopg2.errors.InsufficientPrivilege as exc:
        detail = " ".join(str(exc).split()) or "permission denied"
        user = describe_target(db_url)
        with suppress(psycopg2.Error):
            user = conn.info.user
        raise ConfigError(
            f"PostgreSQL refused a privilege to {user}: {detail}. A role needs USAGE and CREATE on its schema "
            f"(GRANT USAGE, CREATE ON SCHEMA <schema> TO {user};), and CREATE on the database only if "
            "taxi-loader is to create the schema"
        ) from None
    except (psycopg2.errors.DatatypeMismatch, psycopg2.errors.UndefinedColumn) as exc:
        detail = " ".join(str(exc).split()).split(" LINE ")[0]
        raise ConfigError(
            f"an existing table's columns are not taxi-loader's ({detail}): rename that table, or load into "
            "another --schema; its rows were not touched"
        ) from None
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        what = "lost the connection to" if conn.closed else "a transient failure in"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        where = describe_target(db_url)
        with suppress(psycopg2.Error):  # a connection that is gone cannot say where it was
            where = connected_target(conn)
        raise TransientError(f"{what} PostgreSQL at {where} ({detail}); run the command again") from None
    finally:
        with suppress(psycopg2.Error):
            conn.close()
