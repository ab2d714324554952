"""stage on DuckDB: the month's file, as Arrow tables with their ids, into its own staging table.

One transaction. The tables come from `batches.MonthTables` (Arrow's typed parse, or the shared Python
validation when a value does not parse); DuckDB reads each Arrow table in place. Exact repeats are numbered
(or, with --drop-duplicates, dropped) once the whole file is in, from the digests of its rows.
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from taxi_loader.arrowids import Digests
from taxi_loader.batches import MonthTables
from taxi_loader.contract import STAGED, SUCCEEDED, figures_of, held_whole, ledger_row, skippable
from taxi_loader.identity import key_text, row_id
from taxi_loader.job import NEVER, Cancellation, Job
from taxi_loader.reader import check_rejects, fingerprint

from . import SINK, ddl
from .connect import Connection


def stage(conn: Connection, job: Job, path: Path, cancel: Cancellation = NEVER) -> dict[str, Any]:
    """Validate the file at `path` and write it, each row with its id, into the month's staging table."""
    taxi, month = job.taxi, job.month
    started = ddl.now()
    ddl.ensure_tables(conn, taxi)
    if not (job.force or job.drop_duplicates):
        unchanged = _unchanged(conn, job, path, started)
        if unchanged:
            return unchanged
    with Digests() as digests:
        conn.begin()
        try:
            try:
                tables = _copy(conn, job, path, digests, cancel, fast=True)
            except pa.ArrowInvalid:  # a value Arrow cannot type: the validating pass records why
                conn.rollback()
                conn.begin()
                digests.clear()
                tables = _copy(conn, job, path, digests, cancel, fast=False)
            check_rejects(tables.rejects, tables.stats.data_lines, job.max_rejects, job.filename)
            repeated = _number_repeats(conn, job, digests)
            ddl.record_staged(conn, taxi, month, job.source_label, tables.stats, tables.rejects, repeated, started)
            conn.commit()
        except BaseException:
            with suppress(duckdb.Error):  # a connection DuckDB gave up on refuses even this
                conn.rollback()
            raise
    dropped = repeated if job.drop_duplicates else 0
    return {
        "taxi": taxi.name,
        "month": str(month),
        "filename": job.filename,
        "rows_read": tables.stats.data_lines,
        "rows_staged": tables.rows - dropped,
        "rows_rejected": len(tables.rejects),
        "rows_repeated": repeated,
        "source_size": tables.stats.size,
        "source_sha256": tables.stats.sha256,
    }


def _unchanged(conn: Connection, job: Job, path: Path, started: Any) -> dict[str, Any] | None:
    """The result of staging a file the table already holds whole (`contract.held_whole`), else None: its
    'staged' ledger row carries the last load's figures, and no staging table is made."""
    taxi, month = job.taxi, job.month
    previous = ddl.last_load(conn, taxi, month, SUCCEEDED)
    if not previous or not skippable(previous, ddl.latest_load_id(conn, taxi, month), job.max_rejects):
        return None
    size, sha256 = fingerprint(path)
    if (size, sha256) != (previous["source_size"], previous["source_sha256"]):
        return None
    if not held_whole(previous, size, sha256, ddl.rows_of_file(conn, taxi, job.filename)):
        return None
    figures = figures_of(previous)
    conn.begin()
    conn.execute(f"DROP TABLE IF EXISTS {ddl.ident(taxi.staging_table(month))}")
    ddl.insert_ledger(
        conn, ledger_row(SINK, taxi, str(month), STAGED, source=job.source_label, started_at=started, **figures)
    )
    conn.commit()
    return {
        "taxi": taxi.name,
        "month": str(month),
        "filename": job.filename,
        "rows_read": previous["rows_read"],
        "rows_staged": 0,
        "rows_rejected": previous["rows_rejected"],
        "rows_repeated": previous["rows_repeated"],
        "source_size": size,
        "source_sha256": sha256,
        "unchanged": True,
    }


def _copy(conn: Connection, job: Job, path: Path, digests: Digests, cancel: Cancellation, fast: bool) -> MonthTables:
    staging = ddl.create_staging(conn, job.taxi, job.month)
    tables = MonthTables(path, job.taxi, job.filename, digests, fast, job.max_rejects)
    # DuckDB's TIMESTAMP has no zone: hand it the UTC wall times the files hold.
    zoneless = pa.schema(
        [f.with_type(pa.timestamp("us")) if pa.types.is_timestamp(f.type) else f for f in tables.schema]
    )
    for table in tables:
        cancel.check()
        batch = table.cast(zoneless)
        # The relation API scans the Arrow table in place and lets it go after the insert (a registered view
        # kept the month's tables alive: 600-900 MB against 350 MB for 1.37M rows, and slower).
        conn.from_arrow(batch).insert_into(staging)
    return tables


def _number_repeats(conn: Connection, job: Job, digests: Digests) -> int:
    """Give the k-th (k > 1) staged row of each key its own id, md5(key_text || '|' || k), or drop it with
    --drop-duplicates; return how many there were. Rows are read in insertion order, which is file order."""
    repeated = sorted(digests.repeated())
    if not repeated:
        return 0
    taxi = job.taxi
    staging = ddl.ident(taxi.staging_table(job.month))
    key = [taxi.column(f).db_name for f in taxi.key_fields]
    rows = conn.execute(
        f"SELECT rowid, unique_row_id, {', '.join(ddl.ident(k) for k in key)} FROM {staging} "
        "WHERE unique_row_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY rowid",
        [repeated],
    ).fetchall()
    seen: dict[str, int] = {}
    rowids, ids = [], []
    for rowid, rid, *values in rows:
        seen[rid] = seen.get(rid, 0) + 1
        if seen[rid] > 1:
            rowids.append(rowid)
            ids.append(row_id(key_text(taxi, dict(zip(key, values, strict=True))), seen[rid]))
    if job.drop_duplicates:
        conn.execute(f"DELETE FROM {staging} WHERE rowid IN (SELECT unnest(?::BIGINT[]))", [rowids])
    else:
        conn.execute(
            f"UPDATE {staging} SET unique_row_id = v.id "
            "FROM (SELECT unnest(?::BIGINT[]) AS r, unnest(?::VARCHAR[]) AS id) v WHERE rowid = v.r",
            [rowids, ids],
        )
    return len(rowids)
