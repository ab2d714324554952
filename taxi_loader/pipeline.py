"""The steps of one month's load, as the CLI and Kestra run them: download, stage, dedup-merge, cleanup, load.

Each function takes what it needs as arguments (no environment, no printing) and returns a plain dict of
results that the CLI reports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg2.errors

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


class Cancellation:
    """Lets another thread stop running steps: a flag, and the connections whose running query to cancel.

    The CLI sets it on Ctrl-C or SIGTERM; the running statement is cancelled, its transaction rolls back,
    the ledger records the month as interrupted and cleanup still drops the staging table.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict = {}  # connection -> how many steps use it (load lends its own to each)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        self._event.set()
        with self._lock:
            for conn in list(self._connections):  # noqa: SIM118 - a snapshot, the dict may change
                try:
                    conn.cancel()
                except Exception as exc:  # noqa: BLE001 - best effort: the connection may be closing
                    log.debug("cancel failed", error=str(exc))

    def check(self) -> None:
        """Raise Interrupted when cancelled (called between blocks of work)."""
        if self.cancelled:
            raise Interrupted("interrupted")

    @contextmanager
    def watching(self, conn) -> Iterator[None]:
        with self._lock:
            self._connections[conn] = self._connections.get(conn, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._connections[conn] -= 1
                if not self._connections[conn]:
                    del self._connections[conn]


NEVER = Cancellation()  # for callers that never cancel


def download(
    job: Job, progress: Callable[[int, int | None], None] | None = None, cancel: Cancellation = NEVER
) -> dict[str, Any]:
    """Make the month's file available locally (see source.fetch)."""

    def report(done: int, total: int | None) -> None:
        cancel.check()
        if progress:
            progress(done, total)

    path = source.fetch(job.taxi, job.month, job.data_dir, job.source_url, job.retry, report)
    log.info("file ready", path=str(path), bytes=path.stat().st_size, **job.tags)
    return {**job.tags, "path": str(path), "bytes": path.stat().st_size}


def stage(job: Job, settings: PgSettings, conn=None, cancel: Cancellation = NEVER) -> dict[str, Any]:
    """Fetch the file when needed, then COPY it into the month's staging table."""
    tables = pg.Tables(settings.schema, job.taxi)
    with _connected(settings, job, conn, cancel) as c:
        try:
            path = source.fetch(job.taxi, job.month, job.data_dir, job.source_url, job.retry)
            result = pg.stage(c, tables, job.month, path, job.location, settings.max_rejects)
        except BaseException as exc:
            _note_failure(c, tables, job, exc, cancel)
            raise
    if result.extra_columns:
        log.warning("unknown columns ignored", columns=result.extra_columns, **job.tags)
    if result.rows_rejected:
        log.warning("rows rejected", rows=result.rows_rejected, table=job.taxi.rejects_table, **job.tags)
    log.info("staged", rows=result.rows_staged, table=tables.staging_name(job.month), **job.tags)
    return asdict(result)


def dedup_merge(job: Job, settings: PgSettings, conn=None, cancel: Cancellation = NEVER) -> dict[str, Any]:
    """Insert the month's staged rows that are not in the main table yet, in one transaction."""
    tables = pg.Tables(settings.schema, job.taxi)
    with _connected(settings, job, conn, cancel) as c:
        try:
            result = merge.dedup_merge(c, tables, job.month, settings.drop_duplicates)
        except BaseException as exc:
            _note_failure(c, tables, job, exc, cancel)
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
    with _connected(settings, job, conn, NEVER) as c:
        dropped = pg.drop_staging(c, pg.Tables(settings.schema, job.taxi), job.month)
    log.info("cleaned up", staging_dropped=dropped, files_removed=len(removed), **job.tags)
    return {**job.tags, "staging_dropped": dropped, "files_removed": [str(p) for p in removed]}


def load(
    job: Job,
    settings: PgSettings,
    progress: Callable[[int, int | None], None] | None = None,
    cancel: Cancellation = NEVER,
) -> dict[str, Any]:
    """download, stage, dedup-merge and cleanup in one process; cleanup runs even when a step fails.

    The whole load holds the month's lock, so a second load of the same month waits for this one instead of
    re-staging under its feet; loads of other months run alongside.
    """
    tables = pg.Tables(settings.schema, job.taxi)
    with _connected(settings, job, None, cancel) as conn, pg.month_lock(conn, tables, job.month):
        try:
            download(job, progress, cancel)
            staged = stage(job, settings, conn, cancel)
            cancel.check()  # a cancel that fell between two statements must not let the merge start
            merged = dedup_merge(job, settings, conn, cancel)
        finally:
            _best_effort(conn, lambda: cleanup(job, settings, conn))
    return {**merged, "rows_read": staged["rows_read"], "source_sha256": staged["source_sha256"]}


@contextmanager
def _connected(settings: PgSettings, job: Job, conn, cancel: Cancellation) -> Iterator:
    """The caller's connection, or one opened (and closed) for this step; cancellable either way."""
    if conn is not None:
        with cancel.watching(conn):
            yield conn
        return
    cancel.check()
    try:
        with pg.session(settings.db_url, job.retry) as own, cancel.watching(own):
            yield own
    except Interrupted:
        raise
    except BaseException as exc:
        if cancel.cancelled:  # a cancelled query surfaces as a database error: report the interrupt
            raise Interrupted(f"{job.taxi.name} {job.month}: interrupted") from exc
        raise


def _note_failure(conn, tables: pg.Tables, job: Job, exc: BaseException, cancel: Cancellation) -> None:
    """Record the failure in the ledger when the database still answers; never mask `exc`."""
    interrupted = isinstance(exc, (KeyboardInterrupt, Interrupted)) or cancel.cancelled
    message = "interrupted" if interrupted else str(exc) or exc.__class__.__name__
    status = "interrupted" if interrupted else "failed"
    _best_effort(conn, lambda: pg.record_failure(conn, tables, job.month, job.location, status, message))


def _best_effort(conn, action: Callable[[], object]) -> None:
    """Run a bookkeeping action that must not mask the original error. A cancel request is asynchronous:
    when it arrives after the statement it was meant for, it cancels the next one, so try twice."""
    for attempt in (1, 2):
        if conn.closed:
            return
        try:
            action()
            return
        except psycopg2.errors.QueryCanceled:
            conn.rollback()
        except Exception as exc:  # noqa: BLE001
            log.debug("bookkeeping failed", error=str(exc), attempt=attempt)
            return


# ---------------------------------------------------------------- the Google Cloud sink
# gcp (and with it pyarrow and the Google clients) is imported inside these functions: the PostgreSQL path
# does not pay for them in start-up time or memory.


def upload_gcs(job: Job, settings) -> dict[str, Any]:
    """Fetch the file when needed, write it as typed Parquet with final ids, upload it to GCS."""
    from taxi_loader import gcp

    path = source.fetch(job.taxi, job.month, job.data_dir, job.source_url, job.retry)
    result = gcp.upload_gcs(path, job.taxi, job.month, settings, job.data_dir, job.retry)
    if result.rows_rejected:
        log.warning("rows rejected", rows=result.rows_rejected, **job.tags)
    log.info("uploaded" if result.uploaded else "identical object already there", object=result.object, **job.tags)
    return asdict(result)


def bq_load(job: Job, settings) -> dict[str, Any]:
    """Load the month's object into BigQuery: staging table, MERGE of the new rows, ledger."""
    from taxi_loader import gcp

    result = gcp.bq_load(job.taxi, job.month, settings, job.retry)
    log.info("merged", inserted=result.rows_inserted, present=result.rows_present, table=result.table, **job.tags)
    return asdict(result)


def cleanup_bigquery(job: Job, settings, remove_object: bool = False) -> dict[str, Any]:
    """Drop the month's BigQuery staging table and its local files (and the GCS object if asked)."""
    from taxi_loader import gcp

    removed = source.remove_downloads(job.taxi, job.month, job.data_dir, job.source_url)
    result = gcp.cleanup(job.taxi, job.month, settings, job.data_dir, remove_object)
    result["files_removed"] += [str(p) for p in removed]
    log.info("cleaned up", **{k: v for k, v in result.items() if k not in job.tags}, **job.tags)
    return result


def load_bigquery(job: Job, settings, progress=None, cancel: Cancellation = NEVER) -> dict[str, Any]:
    """download, upload-gcs, bq-load and cleanup; cleanup runs even when a step fails (the object stays)."""
    try:
        download(job, progress, cancel)
        uploaded = upload_gcs(job, settings)
        cancel.check()
        loaded = bq_load(job, settings)
    finally:
        try:
            cleanup_bigquery(job, settings)
        except Exception as exc:  # noqa: BLE001 - never hide the original error behind a cleanup failure
            log.warning("cleanup failed", error=str(exc), **job.tags)
    return {
        **loaded,
        "rows_read": uploaded["rows_read"],
        "rows_repeated": uploaded["rows_repeated"],
        "rows_rejected": uploaded["rows_rejected"],
    }
