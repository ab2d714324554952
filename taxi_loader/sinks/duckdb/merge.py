"""merge on DuckDB: the month's staged rows whose id the main table does not hold yet, in one transaction."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any

import duckdb

from taxi_loader.contract import STAGED, SUCCEEDED, held_whole
from taxi_loader.errors import NotStaged
from taxi_loader.job import Job

from . import ddl
from .connect import Connection


def merge(conn: Connection, job: Job, db_path: Path) -> dict[str, Any]:
    """Insert what is new (an anti-join on unique_row_id), record the counts, drop the staging table."""
    taxi, month = job.taxi, job.month
    staging, main = ddl.ident(taxi.staging_table(month)), ddl.ident(taxi.table)
    conn.begin()
    try:
        ddl.ensure_tables(conn, taxi)
        staged_load = ddl.last_load(conn, taxi, month, STAGED)
        if staged_load and not ddl.exists(conn, taxi.staging_table(month)):
            unchanged = _unchanged(conn, job, staged_load)
            if unchanged:
                conn.commit()
                return unchanged
        if not staged_load or not ddl.exists(conn, taxi.staging_table(month)):
            raise NotStaged(
                f"nothing staged for {taxi.name} {month} in {db_path}: "
                f"run `taxi-loader load --sink duckdb --duckdb-path {db_path}` for it"
            )
        test, bounds = _suspicious(job)
        staged, suspicious = _one(conn, f"SELECT count(*), count(*) FILTER (WHERE {test}) FROM {staging}", bounds)
        (inserted,) = _one(
            conn,
            f"INSERT INTO {main} SELECT * FROM {staging} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {main} m WHERE m.unique_row_id = s.unique_row_id)",
        )
        (rows_after,) = _one(conn, f"SELECT count(*) FROM {main} WHERE filename = ?", [job.filename])
        repeated = staged_load["rows_repeated"] or 0
        dropped = repeated if job.drop_duplicates else 0
        counts = {
            "rows_staged": staged + dropped,
            "rows_inserted": inserted,
            "rows_present": staged - inserted,
            "rows_repeated": repeated,
            "rows_dropped": dropped,
            "rows_rejected": staged_load["rows_rejected"] or 0,
            "rows_suspicious": suspicious,
        }
        ledger = {k: counts[k] for k in ("rows_inserted", "rows_present", "rows_suspicious")}
        ddl.update_ledger(
            conn,
            staged_load["load_id"],
            {**ledger, "rows_after": rows_after, "finished_at": ddl.now(), "status": SUCCEEDED},
        )
        conn.execute(f"DROP TABLE {staging}")
        conn.commit()
    except BaseException:
        with suppress(duckdb.Error):  # a connection DuckDB gave up on refuses even this
            conn.rollback()
        raise
    return {"taxi": taxi.name, "month": str(month), "filename": job.filename, **counts}


def _unchanged(conn: Connection, job: Job, staged_load: dict[str, Any]) -> dict[str, Any] | None:
    """stage found the file identical to the last load and staged nothing: if the table still holds that load
    whole, record this load as succeeded with nothing inserted and return its counts."""
    taxi, month = job.taxi, job.month
    previous = ddl.last_load(conn, taxi, month, SUCCEEDED)
    rows = ddl.rows_of_file(conn, taxi, job.filename)
    if not previous or not held_whole(previous, staged_load["source_size"], staged_load["source_sha256"], rows):
        return None
    kept = (staged_load["rows_read"] or 0) - (staged_load["rows_rejected"] or 0)
    counts = {
        "rows_staged": kept,
        "rows_inserted": 0,
        "rows_present": kept,
        "rows_repeated": staged_load["rows_repeated"] or 0,
        "rows_dropped": 0,
        "rows_rejected": staged_load["rows_rejected"] or 0,
        "rows_suspicious": previous["rows_suspicious"] or 0,
    }
    ledger = {k: counts[k] for k in ("rows_inserted", "rows_present", "rows_suspicious")}
    ddl.update_ledger(
        conn,
        staged_load["load_id"],
        {**ledger, "rows_after": rows, "finished_at": ddl.now(), "status": SUCCEEDED},
    )
    return {"taxi": taxi.name, "month": str(month), "filename": job.filename, **counts}


def _one(conn: Connection, query: str, params: list[Any] | None = None) -> tuple[Any, ...]:
    row = conn.execute(query, params or []).fetchone()
    assert row is not None, "an aggregate returns one row"
    return tuple(row)


def _suspicious(job: Job) -> tuple[str, list[Any]]:
    """Loaded but worth a look: pickup outside the month, dropoff before pickup, a negative amount (the test,
    and its parameters: the month's bounds)."""
    taxi, month = job.taxi, job.month
    pickup, dropoff = (ddl.ident(taxi.column(c).db_name) for c in (taxi.pickup, taxi.dropoff))
    conds = [f"({pickup} >= ?::TIMESTAMP AND {pickup} < ?::TIMESTAMP) IS NOT TRUE", f"{dropoff} < {pickup}"]
    conds += [f"{ddl.ident(taxi.column(a).db_name)} < 0" for a in taxi.amount_fields]
    return " OR ".join(conds), [month.first_day.isoformat(), month.next().first_day.isoformat()]
