"""The DuckDB sink: one database file, no server (the embedded default when no PostgreSQL is configured).

connect (the file, its errors, one writer at a time), ddl (the contract's tables, the ledger), stage (file ->
staging table, through Arrow), merge (staging table -> main table). `DuckDBSink` is the Sink of
`sinks/base.py`. duckdb and pyarrow load only when a step runs: the other sinks do not pay for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from taxi_loader.contract import LoadRecord
from taxi_loader.job import Cancellation, Job
from taxi_loader.logs import get_logger
from taxi_loader.months import Month
from taxi_loader.source import RetryPolicy
from taxi_loader.taxis import TaxiType
from taxi_loader.zones import ZONES_TABLE, Zone

if TYPE_CHECKING:
    from .connect import Connection

log = get_logger("taxi_loader")
SINK = "duckdb"
DEFAULT_PATH = "taxi.duckdb"


@dataclass(frozen=True)
class DuckDBSettings:
    """Where the DuckDB sink writes (field metadata: the command-line option's help)."""

    duckdb_path: str = field(
        default=DEFAULT_PATH,
        metadata={"help": "The DuckDB database file (the first load creates it).", "show_default": True},
    )


class DuckDBMonth:
    """One month's load into the DuckDB file. The file is opened at the first step that needs it; each step
    writes while holding the file's write slot, and checks for a cancel once it has it."""

    def __init__(self, db_path: Path, job: Job, cancel: Cancellation):
        self.db_path, self.job, self.cancel = db_path, job, cancel
        self.target = str(db_path.resolve())
        self._conn: Connection | None = None
        self._open = ExitStack()
        self._unusable = False  # the file could not be opened: nothing of ours is in it to clean up

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            from .connect import Interruptible, connect

            try:
                self._conn = self._open.enter_context(closing(connect(self.db_path)))
            except BaseException:
                self._unusable = True
                raise
            self._open.enter_context(self.cancel.watching(Interruptible(self._conn)))
        return self._conn

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        from . import connect

        with connect.writer(self.db_path), connect.mapped_errors(self.db_path):
            self.cancel.check()
            yield self.conn

    def stage(self, path: Path) -> dict[str, Any]:
        from .stage import stage

        with self._writing() as conn:
            return stage(conn, self.job, path, self.cancel)

    def merge(self) -> dict[str, Any]:
        from .merge import merge

        with self._writing() as conn:
            return merge(conn, self.job, self.db_path)

    def cleanup(self, remove_object: bool = False) -> dict[str, Any]:
        if self._unusable or (self._conn is None and not self.db_path.exists()):  # nothing of ours to drop
            return {"staging_dropped": False}
        from . import connect, ddl

        name = self.job.taxi.staging_table(self.job.month)
        with connect.writer(self.db_path), connect.mapped_errors(self.db_path):
            return {"staging_dropped": connect.once_more_if_interrupted(lambda: ddl.drop_table(self.conn, name))}

    def record_failure(self, status: str, message: str) -> None:
        from . import connect, ddl

        job = self.job
        if self._unusable:  # the file it would go into could not be opened
            return
        try:
            with connect.writer(self.db_path):
                connect.once_more_if_interrupted(
                    lambda: ddl.record_failure(self.conn, job.taxi, job.month, job.source_label, status, message)
                )
        except Exception as exc:  # noqa: BLE001 - never mask the failure being recorded
            log.debug("bookkeeping failed", error=str(exc))

    def close(self) -> None:
        self._open.close()


class DuckDBSink:
    """The DuckDB sink (see the package's docstring)."""

    name: ClassVar[str] = SINK
    title: ClassVar[str] = "DuckDB"
    Settings: ClassVar[type[DuckDBSettings]] = DuckDBSettings

    def __init__(self, settings: DuckDBSettings = DuckDBSettings()):
        self.settings = settings
        self.path = Path(settings.duckdb_path)

    @contextmanager
    def open(self, job: Job, cancel: Cancellation, whole_load: bool = False) -> Iterator[DuckDBMonth]:
        # `whole_load` needs nothing more: another process cannot open the file while this one has it, and in
        # this process a backfill never runs one month twice at once.
        month = DuckDBMonth(self.path, job, cancel)
        try:
            yield month
        finally:
            month.close()

    def last_loads(
        self, taxis: Sequence[TaxiType], month: Month | None = None, retry: RetryPolicy = RetryPolicy()
    ) -> list[LoadRecord]:
        if not self.path.exists():  # nothing loaded yet: do not create the file just to say so
            return []
        from . import connect, ddl

        with connect.mapped_errors(self.path), closing(connect.connect(self.path)) as conn:
            return ddl.last_loads(conn, taxis, month)

    def target_options(self) -> list[str]:
        return ["--duckdb-path", str(self.path)] if self.settings.duckdb_path != DEFAULT_PATH else []

    def replace_zones(self, zones: Sequence[Zone], retry: RetryPolicy = RetryPolicy()) -> str:
        from . import connect, ddl

        with connect.writer(self.path), connect.mapped_errors(self.path), closing(connect.connect(self.path)) as conn:
            ddl.replace_zones(conn, zones)
        return f"{ZONES_TABLE} in {self.path.resolve()}"

    def zone_count(self, retry: RetryPolicy = RetryPolicy()) -> int | None:
        if not self.path.exists():
            return None
        from . import connect, ddl

        with connect.mapped_errors(self.path), closing(connect.connect(self.path)) as conn:
            return ddl.zone_count(conn)
