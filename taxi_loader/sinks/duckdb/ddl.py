"""The DuckDB side of the table contract: the tables from `contract.py`, and the ledger's reads and writes.

Names are double-quoted; values are always parameters. Times in the ledger are UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from taxi_loader.contract import (
    ERROR_CHARS,
    LEDGER_COLUMNS,
    LEDGER_TABLE,
    REJECTS_COLUMNS,
    STAGED,
    LoadRecord,
    columns_to_add,
    file_figures,
    ledger_row,
    main_columns,
    reject_rows,
)
from taxi_loader.months import Month
from taxi_loader.reader import FileStats, Rejects
from taxi_loader.taxis import Column, Kind, TaxiType
from taxi_loader.zones import ZONE_COLUMNS, ZONES_TABLE, Zone

from . import SINK
from .connect import Connection

DUCK_TYPE = {
    Kind.CODE: "VARCHAR",
    Kind.INT: "INTEGER",
    Kind.TIMESTAMP: "TIMESTAMP",
    Kind.FLOAT: "DOUBLE",
    Kind.TEXT: "VARCHAR",
    Kind.COUNT: "BIGINT",
    Kind.INSTANT: "TIMESTAMP",  # UTC: a zoned type would need DuckDB's ICU extension to read back
}


def ident(name: str) -> str:
    """A quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def column_defs(columns: Iterable[Column]) -> str:
    return ", ".join(f"{ident(c.db_name)} {DUCK_TYPE[c.kind]}{' NOT NULL' if c.required else ''}" for c in columns)


def now() -> datetime:
    """The time the ledger records: UTC, without a zone."""
    return datetime.now(UTC).replace(tzinfo=None)


def exists(conn: Connection, table: str) -> bool:
    """Whether the table exists."""
    row = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchone()
    return bool(row and row[0])


def ensure_tables(conn: Connection, taxi: TaxiType) -> None:
    """The main table, its rejects table and the ledger, when missing; a main table created before a column
    the TLC added later existed gains it (`Column.optional`)."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {ident(taxi.table)} ({column_defs(main_columns(taxi))})")
    have = {
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [taxi.table]
        ).fetchall()
    }
    for c in columns_to_add(taxi, have, taxi.table, "choose another --duckdb-path"):
        conn.execute(f"ALTER TABLE {ident(taxi.table)} ADD COLUMN {column_defs([c])}")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {ident(taxi.rejects_table)} ({column_defs(REJECTS_COLUMNS)})")
    conn.execute(f"CREATE SEQUENCE IF NOT EXISTS {ident(LEDGER_TABLE + '_seq')}")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {ident(LEDGER_TABLE)} "
        f"(load_id BIGINT DEFAULT nextval('{LEDGER_TABLE}_seq'), {column_defs(LEDGER_COLUMNS)})"
    )


def drop_table(conn: Connection, table: str) -> bool:
    """Drop the table if it is there; return whether it was."""
    existed = exists(conn, table)
    conn.execute(f"DROP TABLE IF EXISTS {ident(table)}")
    return existed


def create_staging(conn: Connection, taxi: TaxiType, month: Month) -> str:
    """(Re)create the month's staging table, with the main table's columns; return its name."""
    name = taxi.staging_table(month)
    conn.execute(f"CREATE OR REPLACE TABLE {ident(name)} ({column_defs(main_columns(taxi))})")
    return name


def insert_ledger(conn: Connection, values: dict[str, Any]) -> None:
    names = ", ".join(ident(k) for k in values)
    conn.execute(
        f"INSERT INTO {ident(LEDGER_TABLE)} ({names}) VALUES ({', '.join('?' * len(values))})", list(values.values())
    )


def record_staged(
    conn: Connection,
    taxi: TaxiType,
    month: Month,
    source: str,
    stats: FileStats,
    rejects: Rejects,
    repeated: int,
    started: datetime,
) -> None:
    """The month's rejects (replacing an earlier stage's) and its 'staged' ledger row."""
    filename = taxi.filename(str(month))
    conn.execute(f"DELETE FROM {ident(taxi.rejects_table)} WHERE filename = ?", [filename])
    if rejects:
        names = ", ".join(ident(c.db_name) for c in REJECTS_COLUMNS)
        conn.executemany(
            f"INSERT INTO {ident(taxi.rejects_table)} ({names}) VALUES ({', '.join('?' * len(REJECTS_COLUMNS))})",
            [list(row) for row in reject_rows(filename, rejects)],
        )
    figures = file_figures(stats, rejects, repeated)
    insert_ledger(conn, ledger_row(SINK, taxi, str(month), STAGED, source=source, started_at=started, **figures))


def last_load(conn: Connection, taxi: TaxiType, month: Month, status: str) -> dict[str, Any] | None:
    """The month's last ledger row with this status."""
    cursor = conn.execute(
        "SELECT load_id, source_size, source_sha256, rows_read, rows_rejected, rows_repeated, rows_suspicious, "
        f"rows_after FROM {ident(LEDGER_TABLE)} "
        "WHERE sink = ? AND taxi = ? AND month = ? AND status = ? ORDER BY load_id DESC LIMIT 1",
        [SINK, taxi.name, str(month), status],
    )
    row = cursor.fetchone()
    return dict(zip([d[0] for d in cursor.description or ()], row, strict=True)) if row else None


def rows_of_file(conn: Connection, taxi: TaxiType, filename: str) -> int:
    """How many rows of the file `filename` the main table holds."""
    row = conn.execute(f"SELECT count(*) FROM {ident(taxi.table)} WHERE filename = ?", [filename]).fetchone()
    return int(row[0]) if row else 0


def latest_load_id(conn: Connection, taxi: TaxiType, month: Month) -> int | None:
    """The month's latest ledger row, whatever its status."""
    row = conn.execute(
        f"SELECT max(load_id) FROM {ident(LEDGER_TABLE)} WHERE sink = ? AND taxi = ? AND month = ?",
        [SINK, taxi.name, str(month)],
    ).fetchone()
    return row[0] if row else None


def update_ledger(conn: Connection, load_id: int, values: dict[str, Any]) -> None:
    sets = ", ".join(f"{ident(k)} = ?" for k in values)
    conn.execute(f"UPDATE {ident(LEDGER_TABLE)} SET {sets} WHERE load_id = ?", [*values.values(), load_id])


def record_failure(conn: Connection, taxi: TaxiType, month: Month, source: str, status: str, error: str) -> None:
    """Note a failed or interrupted load (the month's 'staged' row, or a new row)."""
    ensure_tables(conn, taxi)
    staged = last_load(conn, taxi, month, STAGED)
    ended = {"error": error[:ERROR_CHARS], "finished_at": now()}
    if staged:
        update_ledger(conn, staged["load_id"], {"status": status, **ended})
        return
    insert_ledger(conn, ledger_row(SINK, taxi, str(month), status, source=source, started_at=now(), **ended))


def last_loads(conn: Connection, taxis: Sequence[TaxiType], month: Month | None = None) -> list[LoadRecord]:
    """The last finished load of every (taxi, month) of `taxis` (of just `month` when given)."""
    if not exists(conn, LEDGER_TABLE):
        return []
    rows = conn.execute(
        "SELECT taxi, month, status, rows_after, source_size, source_sha256, finished_at, source "
        f"FROM {ident(LEDGER_TABLE)} "
        "WHERE sink = ? AND list_contains(?, taxi) AND status <> ? AND (? IS NULL OR month = ?) "
        "QUALIFY row_number() OVER (PARTITION BY taxi, month ORDER BY load_id DESC) = 1",
        [SINK, [t.name for t in taxis], STAGED, str(month) if month else None, str(month) if month else None],
    ).fetchall()
    return [
        LoadRecord(t, m, s, rows, size, sha, f"{f.isoformat(timespec='seconds')}+00:00" if f else None, src)
        for t, m, s, rows, size, sha, f, src in rows
    ]


def replace_zones(conn: Connection, zones: Sequence[Zone]) -> None:
    """Make `zones` the whole of taxi_zone_lookup, in one transaction."""
    table = ident(ZONES_TABLE)
    conn.begin()
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} ({column_defs(ZONE_COLUMNS)}, PRIMARY KEY ({ident('locationid')}))"
    )
    conn.execute(f"DELETE FROM {table}")
    conn.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", [list(z) for z in zones])
    conn.commit()


def zone_count(conn: Connection) -> int | None:
    """The rows of taxi_zone_lookup; None when there is no such table."""
    if not exists(conn, ZONES_TABLE):
        return None
    row = conn.execute(f"SELECT count(*) FROM {ident(ZONES_TABLE)}").fetchone()
    return int(row[0]) if row else 0
