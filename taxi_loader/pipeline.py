"""The steps of one month's load, as the CLI and Kestra run them: download, stage, dedup-merge, cleanup, load.

Each function takes what it needs as arguments (no environment, no printing) and returns a plain dict of
results that the CLI reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taxi_loader import merge, source
from taxi_loader import postgres as pg
from taxi_loader.errors import Interrupted
from taxi_loader.logs import get_logger
from taxi_loader.months import Month
from taxi_loader.taxis import TaxiType

log = get_logger("taxi_loader")


@dataclass(frozen=True)
class Job:
    """One (taxi, month) and where its file comes from."""

    taxi: TaxiType
    month: Month
    data_dir: Path = Path("data")
    source_url: str = source.DEFAULT_SOURCE_URL
    retry: source.RetryPolicy = field(default_factory=source.RetryPolicy)

    @property
    def location(self) -> str:
        return source.source_location(self.source_url, self.taxi, self.month)

    @property
    def tags(self) -> dict[str, str]:
        return {"taxi": self.taxi.name, "month": str(self.month)}


@dataclass(frozen=True)
class PgSettings:
    """Where and how to load into PostgreSQL."""

    db_url: str | None = None
    schema: str = "public"
    max_rejects: str = "0.1%"
    drop_duplicates: bool = False


def download(job: Job, progress: Callable[[int, int | None], None] | None = None) -> dict[str, Any]:
    """Make the month's file available locally (see source.fetch)."""
    path = source.fetch(job.taxi, job.month, job.data_dir, job.source_url, job.retry, progress)
    log.info("file ready", path=str(path), bytes=path.stat().st_size, **job.tags)
    return {**job.tags, "path": str(path), "bytes": path.stat().st_size}


def stage(job: Job, settings: PgSettings, conn=None) -> dict[str, Any]:
    """Fetch the file when needed, then COPY it into the month's staging table."""
    with _connection(settings, job, conn) as c:
        tables = pg.Tables(settings.schema, job.taxi)
        try:
            path = source.fetch(job.taxi, job.month, job.data_dir, job.source_url, job.retry)
            result = pg.stage(c, tables, job.month, path, job.location, settings.max_rejects)
        except BaseException as exc:
            _note_failure(c, tables, job, exc)
            raise
        if result.extra_columns:
            log.warning("unknown columns ignored", columns=result.extra_columns, **job.tags)
        if result.rows_rejected:
            log.warning("rows rejected", rows=result.rows_rejected, table=job.taxi.rejects_table, **job.tags)
        log.info("staged", rows=result.rows_staged, table=tables.staging_name(job.month), **job.tags)
        return asdict(result)


def dedup_merge(job: Job, settings: PgSettings, conn=None) -> dict[str, Any]:
    """Insert the month's staged rows that are not in the main table yet, in one transaction."""
    with _connection(settings, job, conn) as c:
        tables = pg.Tables(settings.schema, job.taxi)
        try:
            result = merge.dedup_merge(c, tables, job.month, settings.drop_duplicates)
        except BaseException as exc:
            _note_failure(c, tables, job, exc)
            raise
        log.info(
            "merged",
            inserted=result.rows_inserted,
            present=result.rows_present,
            repeated=result.rows_repeated,
            suspicious=result.rows_suspicious,
            table=job.taxi.table,
            **job.tags,
        )
        return asdict(result)


def cleanup(job: Job, settings: PgSettings, conn=None) -> dict[str, Any]:
    """Drop the month's staging table and delete its downloaded file (never a local mirror)."""
    removed = source.remove_downloads(job.taxi, job.month, job.data_dir, job.source_url)
    with _connection(settings, job, conn) as c:
        dropped = pg.drop_staging(c, pg.Tables(settings.schema, job.taxi), job.month)
    log.info("cleaned up", staging_dropped=dropped, files_removed=len(removed), **job.tags)
    return {**job.tags, "staging_dropped": dropped, "files_removed": [str(p) for p in removed]}


def load(job: Job, settings: PgSettings, progress: Callable[[int, int | None], None] | None = None) -> dict[str, Any]:
    """download, stage, dedup-merge and cleanup in one process; cleanup runs even when a step fails."""
    with pg.session(settings.db_url, job.retry) as conn:
        try:
            download(job, progress)
            staged = stage(job, settings, conn)
            merged = dedup_merge(job, settings, conn)
        finally:
            try:
                cleanup(job, settings, conn)
            except Exception as exc:  # noqa: BLE001 - never hide the original error behind a cleanup failure
                log.warning("cleanup failed", error=str(exc), **job.tags)
    return {**merged, "rows_read": staged["rows_read"], "source_sha256": staged["source_sha256"]}


class _connection:
    """Use the caller's connection, or open (and close) one for this step."""

    def __init__(self, settings: PgSettings, job: Job, conn):
        self._settings, self._job, self._conn, self._session = settings, job, conn, None

    def __enter__(self):
        if self._conn is not None:
            return self._conn
        self._session = pg.session(self._settings.db_url, self._job.retry)
        return self._session.__enter__()

    def __exit__(self, *exc):
        return self._session.__exit__(*exc) if self._session else False


def _note_failure(conn, tables: pg.Tables, job: Job, exc: BaseException) -> None:
    """Record the failure in the ledger when the database still answers; never mask `exc`."""
    status = "interrupted" if isinstance(exc, (KeyboardInterrupt, Interrupted)) else "failed"
    try:
        if conn.closed:
            return
        pg.record_failure(conn, tables, job.month, job.location, status, str(exc) or exc.__class__.__name__)
    except Exception as inner:  # noqa: BLE001
        log.debug("could not record the failure in the ledger", error=str(inner))
