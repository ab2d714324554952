"""The PostgreSQL sink: a staging table per month, filled by COPY, merged into a table partitioned by month.

connect (connections), ddl (the contract's tables, locks, SQL fragments), stage (file -> staging table),
merge (staging table -> main table), ledger (the ledger and rejects). `PostgresSink` is the Sink of
`sinks/base.py` over them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import psycopg2.errors

from taxi_loader.contract import LoadRecord
from taxi_loader.errors import ConfigError, TransientError, UsageError
from taxi_loader.job import Cancellation, Job
from taxi_loader.logs import get_logger
from taxi_loader.months import Month
from taxi_loader.source import RetryPolicy
from taxi_loader.taxis import TaxiType
from taxi_loader.zones import ZONES_TABLE, Zone

from . import ledger, merge, stage
from . import zones as zones_table
from .connect import Connection, connect, connected_target, describe_target, session
from .ddl import Tables, drop_staging, month_lock

log = get_logger("taxi_loader")
T = TypeVar("T")


@dataclass(frozen=True)
class PostgresSettings:
    """Where the PostgreSQL sink writes (field metadata: the command-line option's help)."""

    db_url: str | None = field(
        default=None, metadata={"help": "postgresql://user:password@host:port/db; else the PG* variables apply."}
    )
    schema: str = field(default="public", metadata={"help": "Schema of the tables.", "show_default": True})

    def __post_init__(self) -> None:
        # PostgreSQL keeps pg_* schemas for itself, and would cut a name of more than 63 bytes short.
        name = self.schema
        if not name.strip() or name.lower().startswith("pg_") or len(name.encode()) > 63 or "\x00" in name:
            raise UsageError(
                f"--schema {name!r} cannot hold taxi-loader's tables: give a name of 1-63 bytes that does not "
                "start with pg_ (a schema of your own, or public)"
            )


class PostgresMonth:
    """One month's load on PostgreSQL, over one connection."""

    def __init__(self, conn: Connection, tables: Tables, job: Job, sibling: merge.Sibling | None = None):
        self.conn, self.tables, self.job, self.sibling = conn, tables, job, sibling
        self.target = f"{connected_target(conn)}, schema {tables.schema}"

    def stage(self, path: Path) -> dict[str, Any]:
        job = self.job
        force = job.force or job.drop_duplicates  # repeats a whole earlier load kept are to be dropped now
        return asdict(stage.stage(self.conn, self.tables, job.month, path, job.source_label, job.max_rejects, force))

    def merge(self) -> dict[str, Any]:
        return asdict(merge.dedup_merge(self.conn, self.tables, self.job.month, self.job.drop_duplicates, self.sibling))

    def cleanup(self, remove_object: bool = False) -> dict[str, Any]:
        dropped = _once_more_if_cancelled(self.conn, lambda: drop_staging(self.conn, self.tables, self.job.month))
        return {"staging_dropped": dropped}

    def record_failure(self, status: str, message: str) -> None:
        job = self.job
        _best_effort(
            self.conn,
            lambda: ledger.record_failure(self.conn, self.tables, job.month, job.source_label, status, message),
        )


@contextmanager
def _second_connection(
    db_url: str | None, first: Connection, retry: RetryPolicy, cancel: Cancellation
) -> Iterator[Connection | None]:
    """A second connection to the server and database `first` is on (`merge.Sibling`), cancelled with it; None
    when the server grants none at the first attempt (a role or server at its connection limit)."""
    try:
        # The host and port `first` reached: a URL that names several hosts must not lead to another server.
        other = connect(db_url, replace(retry, attempts=1), host=first.info.host, port=str(first.info.port))
    except (ConfigError, TransientError) as exc:
        refused = str(exc)
    else:
        refused = ""
    if refused:
        log.info("no second connection: the partition's indexes are built one after the other", reason=refused)
        yield None
        return
    try:
        with cancel.watching(other):
            cancel.check()  # a cancel that came before the watch began
            yield other
    finally:
        other.close()


def _once_more_if_cancelled(conn: Connection, action: Callable[[], T]) -> T:
    """Run a bookkeeping action; run it again when a cancel request strikes it. A cancel is asynchronous: when it
    lands after the statement it was meant for, it cancels the next one, this."""
    try:
        return action()
    except psycopg2.errors.QueryCanceled:
        conn.rollback()
        return action()


def _best_effort(conn: Connection, action: Callable[[], object]) -> None:
    """Run a bookkeeping action that must not mask the original error (a closed connection: nothing to do)."""
    if conn.closed:
        return
    try:
        _once_more_if_cancelled(conn, action)
    except Exception as exc:  # noqa: BLE001
        log.debug("bookkeeping failed", error=str(exc))


class PostgresSink:
    """The PostgreSQL sink (see the package's docstring)."""

    name: ClassVar[str] = ledger.SINK
    title: ClassVar[str] = "PostgreSQL"
    Settings: ClassVar[type[PostgresSettings]] = PostgresSettings

    def __init__(self, settings: PostgresSettings = PostgresSettings()):
        self.settings = settings

    @contextmanager
    def open(self, job: Job, cancel: Cancellation, whole_load: bool = False) -> Iterator[PostgresMonth]:
        tables = Tables(self.settings.schema, job.taxi)

        with session(self.settings.db_url, job.retry) as conn, cancel.watching(conn):
            sibling = partial(_second_connection, self.settings.db_url, retry=job.retry, cancel=cancel)
            if not whole_load:
                yield PostgresMonth(conn, tables, job, sibling)
                return
            # The whole load holds the month's lock, so a second load of the same month waits for this one
            # instead of re-staging under its feet; loads of other months run alongside.
            with month_lock(conn, tables, job.month):
                yield PostgresMonth(conn, tables, job, sibling)

    def last_loads(
        self, taxis: Sequence[TaxiType], month: Month | None = None, retry: RetryPolicy = RetryPolicy()
    ) -> list[LoadRecord]:
        with session(self.settings.db_url, retry) as conn:
            return ledger.last_loads(conn, self.settings.schema, taxis, month)

    def target_options(self) -> list[str]:
        return ["--schema", self.settings.schema] if self.settings.schema != "public" else []

    def replace_zones(self, zones: Sequence[Zone], retry: RetryPolicy = RetryPolicy()) -> str:
        with session(self.settings.db_url, retry) as conn:
            zones_table.replace_zones(conn, self.settings.schema, zones)
        return f"{self.settings.schema}.{ZONES_TABLE} in PostgreSQL at {describe_target(self.settings.db_url)}"

    def zone_count(self, retry: RetryPolicy = RetryPolicy()) -> int | None:
        with session(self.settings.db_url, retry) as conn:
            return zones_table.zone_count(conn, self.settings.schema)
