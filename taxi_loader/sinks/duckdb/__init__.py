"""The DuckDB sink: one database file, no server (the embedded default when no PostgreSQL is configured).

connect (the file, one writer at a time), ddl (the contract's tables, the ledger), stage (file -> staging
table, through Arrow), merge (staging table -> main table). `DuckDBSink` is the Sink of `sinks/base.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from taxi_loader.contract import LoadRecord
from taxi_loader.job import Cancellation, Job
from taxi_loader.logs import get_logger
from taxi_loader.months import Month
from taxi_loader.source import RetryPolicy
from taxi_loader.taxis import TaxiType

from . import ddl
from .connect import Connection, Interruptible, connect, writer
from .merge import merge
from .stage import stage

log = get_logger("taxi_loader")
DEFAULT_PATH = "taxi.duckdb"


@dataclass(frozen=True)
class DuckDBSettings:
    """Where the DuckDB sink writes (field metadata: the command-line option's help)."""

    duckdb_path: str = field(
        default=DEFAULT_PATH,
        metadata={"help": "The DuckDB database file (created when missing).", "show_default": True},
    )


class DuckDBMonth:
    """One month's load into the DuckDB file; each step writes while holding the file's write slot."""

    def __init__(self, conn: Connection, path: Path, job: Job):
        self.conn, self.path, self.job = conn, path, job

    def stage(self, path: Path) -> dict[str, Any]:
        with writer(self.path):
            return stage(self.conn, self.job, path)

    def merge(self) -> dict[str, Any]:
        with writer(self.path):
            return merge(self.conn, self.job)

    def cleanup(self, remove_object: bool = False) -> dict[str, Any]:
        name = self.job.taxi.staging_table(self.job.month)
        with writer(self.path):
            existed = ddl.exists(self.conn, name)
            self.conn.execute(f"DROP TABLE IF EXISTS {ddl.ident(name)}")
        return {"staging_dropped": existed}

    def record_failure(self, status: str, message: str) -> None:
        job = self.job
        try:
            with writer(self.path):
                ddl.record_failure(self.conn, job.taxi, job.month, job.location, status, message)
        except Exception as exc:  # noqa: BLE001 - never mask the failure being recorded
            log.debug("bookkeeping failed", error=str(exc))


class DuckDBSink:
    """The DuckDB sink (see the package's docstring)."""

    name: ClassVar[str] = "duckdb"
    Settings: ClassVar[type[DuckDBSettings]] = DuckDBSettings

    def __init__(self, settings: DuckDBSettings = DuckDBSettings()):
        self.settings = settings
        self.path = Path(settings.duckdb_path)

    @contextmanager
    def open(self, job: Job, cancel: Cancellation, whole_load: bool = False) -> Iterator[DuckDBMonth]:
        conn = connect(self.path)
        try:
            with cancel.watching(Interruptible(conn)):
                yield DuckDBMonth(conn, self.path, job)
        finally:
            conn.close()

    def last_loads(
        self, taxis: Sequence[TaxiType], month: Month | None = None, retry: RetryPolicy = RetryPolicy()
    ) -> list[LoadRecord]:
        if not self.path.exists():  # nothing loaded yet: do not create the file just to say so
            return []
        conn = connect(self.path)
        try:
            return ddl.last_loads(conn, taxis, month)
        finally:
            conn.close()

    def target_options(self) -> list[str]:
        return ["--duckdb-path", str(self.path)] if self.settings.duckdb_path != DEFAULT_PATH else []
