"""dedup-merge: move a month's staged rows into the main table, each row once, in one transaction.

stage gave every row its final id (the md5 of its key text, repeats numbered: see `postgres.stage`).

Three ways in, by what the table allows (measured with `make bench`):
- bulk: the month's partition does not exist yet (a first load into a table taxi-loader created) and stage
  made the staging table a logged one with the main table's columns. Its out-of-month rows move to the main
  table, the rest is indexed in one sort and the table attached as the month's partition: every row is
  written once. Building an index once is several times cheaper than growing a large one row by row.
- incremental: the partition exists (a reload after rows were deleted), or the staging table cannot become
  the partition: INSERT ... ON CONFLICT DO NOTHING, in key order.
- course table: a table the course's flows created has no unique key; INSERT ... WHERE NOT EXISTS under a
  table lock that serializes merges.
A re-run of a file already loaded whole is recognised from the ledger and skips the insert (see dedup_merge).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

from taxi_loader.errors import TransientError, UsageError
from taxi_loader.months import Month
from taxi_loader.postgres import (
    Layout,
    Tables,
    _xact_lock,
    ensure_main_table,
    ensure_support_tables,
    key_text_sql,
    month_lock,
    staging_exists,
)
from taxi_loader.taxis import TaxiType

MERGE_WORK_MEM = "256MB"  # lets the merge hash and sort a month in memory instead of on disk


@dataclass
class MergeResult:
    """What dedup-merge did with the month's staged rows."""

    taxi: str
    month: str
    filename: str
    rows_staged: int
    rows_inserted: int
    rows_present: int
    rows_repeated: int
    rows_dropped: int
    rows_rejected: int
    rows_suspicious: int


def dedup_merge(conn, tables: Tables, month: Month, drop_duplicates: bool = False) -> MergeResult:
    """Insert the staged rows whose unique_row_id is not yet in the main table, in one transaction.

    Repeats keep ids of their own, or are dropped with `drop_duplicates`. The month's 'staged' ledger row
    becomes 'succeeded' with the counts.

    A re-run of a file whose last successful load had the same checksum, and whose rows are all still in the
    table (the count by filename equals the one recorded then), has nothing to insert: ids are a function of
    the file's content. The insert is skipped and every staged row reported as present.
    """
    taxi, filename = tables.taxi, tables.taxi.filename(str(month))
    ensure_support_tables(conn, tables)
    layout = ensure_main_table(conn, tables)
    with month_lock(conn, tables, month):
        # Read what decides the plan in a transaction of its own: its read locks on the main table must be
        # gone before the merge, or another month's ATTACH PARTITION would wait for them while we wait for it.
        with conn.cursor() as cur:
            if not staging_exists(cur, tables, month):
                raise UsageError(f"nothing staged for {taxi.name} {month}: run `taxi-loader stage` first")
            if not _has_ids(cur, tables, month):
                raise UsageError(
                    f"{taxi.name} {month} was staged by an older taxi-loader: run `taxi-loader stage` again"
                )
            staged_load = _last_load(cur, tables, month, "staged")
            previous = _last_load(cur, tables, month, "succeeded")
            cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE filename = %s").format(tables.main), (filename,))
            rows_of_file = cur.fetchone()[0]
            if staged_load:
                kept = staged_load["rows_read"] - staged_load["rows_rejected"]
                cur.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(tables.staging(month)))
                if kept and not cur.fetchone()[0]:
                    raise _short_staging(taxi, month, 0, kept)
            else:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(tables.staging(month)))
                kept = cur.fetchone()[0]
        conn.commit()
        with conn.cursor() as cur:
            # Pin the text forms the identity depends on, whatever the server's defaults are.
            cur.execute(
                "SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL extra_float_digits = 1; SET LOCAL jit = off;"
                "SET LOCAL work_mem = %(mem)s; SET LOCAL maintenance_work_mem = %(mem)s",
                {"mem": MERGE_WORK_MEM},
            )
            if (
                staged_load
                and previous
                and previous["source_sha256"] == staged_load["source_sha256"]
                and previous["rows_after"] == rows_of_file
                and not drop_duplicates
            ):
                inserted, repeated = 0, previous["rows_repeated"] or 0
                staged, suspicious = kept, previous["rows_suspicious"] or 0
            else:
                repeated = staged_load["rows_repeated"] if staged_load else None
                inserted, repeated, staged, suspicious = _merge(cur, tables, month, layout, drop_duplicates, repeated)
                if staged != kept:
                    raise _short_staging(taxi, month, staged, kept)
                rows_of_file += inserted
            dropped = repeated if drop_duplicates else 0
            present = staged - inserted - dropped
            rejected = (staged_load or {}).get("rows_rejected") or 0
            if staged_load:
                cur.execute(
                    sql.SQL("""
                    UPDATE {} SET rows_repeated = %s, rows_inserted = %s, rows_present = %s, rows_suspicious = %s,
                                  rows_after = %s, finished_at = now(), status = 'succeeded'
                    WHERE load_id = %s""").format(tables.ledger),
                    (repeated, inserted, present, suspicious, rows_of_file, staged_load["load_id"]),
                )
        conn.commit()
    return MergeResult(
        taxi.name, str(month), filename, staged, inserted, present, repeated, dropped, rejected, suspicious
    )


def _has_ids(cur, tables: Tables, month: Month) -> bool:
    cur.execute(
        "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'unique_row_id'"
        " AND NOT attisdropped)",
        (tables.staging(month).as_string(cur),),
    )
    return cur.fetchone()[0]


def _short_staging(taxi: TaxiType, month: Month, staged: int, kept: int) -> TransientError:
    # An unlogged table is emptied by crash recovery: never pass a short staging table off as a load.
    return TransientError(
        f"{taxi.name} {month}: the staging table holds {staged} rows but stage kept {kept} "
        "(did PostgreSQL restart after a crash?); run stage again, then dedup-merge"
    )


def _merge(
    cur, tables: Tables, month: Month, layout: Layout, drop_duplicates: bool, repeated: int | None
) -> tuple[int, int, int, int]:
    """Insert what is new; return (rows inserted, repeats, rows staged, rows suspicious).

    `repeated`: the repeats stage numbered (None when unknown: counted here)."""
    counts = _count(cur, tables, month, repeats=repeated is None)
    if repeated is None:
        repeated = counts.repeated
    if drop_duplicates and repeated:
        # A repeat is a row whose id is not the plain md5 of its key text: only this option pays for the md5s.
        cur.execute(
            sql.SQL("DELETE FROM {} s WHERE s.unique_row_id <> md5({})").format(
                tables.staging(month), key_text_sql(tables.taxi, "s")
            )
        )
    if layout.partitioned and _attachable(cur, tables, month):
        kept = counts.staged - (repeated if drop_duplicates else 0)
        return _bulk(cur, tables, month, kept, counts.outside), repeated, counts.staged, counts.suspicious
    if layout.partitioned:  # rows may be routed to the default partition: not while another month attaches
        _xact_lock(cur, "attach", tables.schema, tables.taxi.table)
    elif not layout.unique_index:
        # A course-created table has no unique key: serialize merges so NOT EXISTS stays true.
        cur.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(tables.main))
    return _insert_new(cur, tables, month, layout), repeated, counts.staged, counts.suspicious


def _month_filter(tables: Tables, month: Month, alias: str, inside: bool) -> sql.Composed:
    pickup = sql.Identifier(alias, tables.taxi.column(tables.taxi.pickup).db_name)
    bounds = (sql.Literal(month.first_day.isoformat()), sql.Literal(month.next().first_day.isoformat()))
    test = sql.SQL("{p} >= {a}::timestamp AND {p} < {b}::timestamp").format(p=pickup, a=bounds[0], b=bounds[1])
    return test if inside else sql.SQL("({}) IS NOT TRUE").format(test)  # a NULL pickup is outside too


def _main_columns(taxi: TaxiType, alias: str | None = None) -> sql.Composed:
    names = ["unique_row_id", "filename"] + [c.db_name for c in taxi.columns]
    return sql.SQL(", ").join(sql.Identifier(alias, n) if alias else sql.Identifier(n) for n in names)


@dataclass
class _Counts:
    staged: int
    suspicious: int
    outside: int  # pickups outside the month
    repeated: int  # rows whose id is not their key's plain md5 (counted only when asked)


def _count(cur, tables: Tables, month: Month, repeats: bool) -> _Counts:
    """One pass over the staged rows: how many, how many suspicious, outside the month, (repeats)."""
    repeat = sql.SQL("count(*) FILTER (WHERE s.unique_row_id <> md5({}))").format(key_text_sql(tables.taxi, "s"))
    cur.execute(
        sql.SQL("SELECT count(*), count(*) FILTER (WHERE {}), count(*) FILTER (WHERE {}), {} FROM {} s").format(
            _suspicious(tables, month, "s"),
            _month_filter(tables, month, "s", inside=False),
            repeat if repeats else sql.SQL("0"),
            tables.staging(month),
        )
    )
    return _Counts(*cur.fetchone())


def _attachable(cur, tables: Tables, month: Month) -> bool:
    """Whether the staging table can become the month's partition: stage made it logged (it does so only with
    the main table's exact columns) and the month has no partition yet."""
    cur.execute(
        "SELECT relpersistence = 'p' AND to_regclass(%s) IS NULL FROM pg_class WHERE oid = to_regclass(%s)",
        (tables.partition(month).as_string(cur), tables.staging(month).as_string(cur)),
    )
    return cur.fetchone()[0]


def _bulk(cur, tables: Tables, month: Month, kept: int, outside: int) -> int:
    """Make the staging table the month's partition: out-of-month rows to the main table, index, attach.

    `kept` rows are staged, `outside` of them with pickups outside the month. Returns the rows inserted."""
    taxi, stg, part = tables.taxi, tables.staging(month), tables.partition(month)
    # From here on the main table's partitions are written and its partition bounds change (rows moved out
    # of the default partition, ATTACH): two months doing this at once would each hold a lock the other
    # needs, or route a row by bounds the other is changing, so this part goes one month at a time.
    _xact_lock(cur, "attach", tables.schema, taxi.table)
    # 1. Pickups outside the month belong to other partitions: move them into the main table.
    inserted = kept
    if outside:
        cur.execute(
            sql.SQL("""
            WITH moved AS (DELETE FROM {stg} s WHERE {outside} RETURNING s.*),
            ins AS (INSERT INTO {main} ({cols}) SELECT {cols} FROM moved {tail} RETURNING 1)
            SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM ins)""").format(
                stg=stg,
                outside=_month_filter(tables, month, "s", inside=False),
                main=tables.main,
                cols=_main_columns(taxi),
                tail=_in_key_order_once(taxi, "moved"),
            )
        )
        moved, new = cur.fetchone()
        inserted += new - moved
    # 2. Rows of other files whose pickups fall in this month wait in the default partition: move them in,
    #    keeping the older copy of a row both files hold.
    cur.execute(
        sql.SQL("""
        CREATE TEMP TABLE taxi_loader_moved ON COMMIT DROP AS
        WITH moved AS (DELETE FROM {default} d WHERE {inside} RETURNING d.*) SELECT * FROM moved""").format(
            default=tables.default_partition, inside=_month_filter(tables, month, "d", inside=True)
        )
    )
    if cur.rowcount:
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE unique_row_id IN (SELECT unique_row_id FROM taxi_loader_moved)").format(stg)
        )
        inserted -= cur.rowcount
        cur.execute(
            sql.SQL("INSERT INTO {} ({cols}) SELECT {cols} FROM taxi_loader_moved").format(
                stg, cols=_main_columns(taxi)
            )
        )
    # 3. The staging table becomes the partition: indexed once, then attached (the parent's indexes adopt
    #    these instead of building their own).
    cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN filename DROP DEFAULT").format(stg))
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(stg, sql.Identifier(tables.partition_name(month))))
    pickup = sql.Identifier(taxi.column(taxi.pickup).db_name)
    cur.execute(
        sql.SQL('CREATE UNIQUE INDEX {} ON {} (unique_row_id COLLATE "C", {})').format(
            sql.Identifier(f"{tables.partition_name(month)}_unique_row_id_key"), part, pickup
        )
    )
    cur.execute(
        sql.SQL("CREATE INDEX {} ON {} (filename)").format(
            sql.Identifier(f"{tables.partition_name(month)}_filename_idx"), part
        )
    )
    # The CHECK constraint lets ATTACH skip its own validation scan.
    first, after = month.first_day.isoformat(), month.next().first_day.isoformat()
    cur.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} >= {}::timestamp AND {} < {}::timestamp)").format(
            part,
            sql.Identifier(f"{tables.partition_name(month)}_month"),
            pickup,
            sql.Literal(first),
            pickup,
            sql.Literal(after),
        )
    )
    cur.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            tables.main, part, sql.Literal(first), sql.Literal(after)
        )
    )
    return inserted


def _in_key_order_once(taxi: TaxiType, alias: str) -> sql.Composed:
    """The tail of an INSERT into taxi-loader's partitioned table: rows in key order, each id once (the unique
    key is the id with the pickup, see postgres.main_table_ddl)."""
    return sql.SQL('ORDER BY {} COLLATE "C" ON CONFLICT (unique_row_id COLLATE "C", {}) DO NOTHING').format(
        sql.Identifier(alias, "unique_row_id"), sql.Identifier(taxi.column(taxi.pickup).db_name)
    )


def _insert_new(cur, tables: Tables, month: Month, layout: Layout) -> int:
    """INSERT the staged rows that are not in the table yet; return how many."""
    taxi = tables.taxi
    where = sql.SQL("")
    # Inserting in key order keeps the b-tree's leaf pages hot instead of touching one at random per row.
    if layout.partitioned:
        tail = _in_key_order_once(taxi, "s")
    elif layout.unique_index:
        tail = sql.SQL("ORDER BY s.unique_row_id ON CONFLICT (unique_row_id) DO NOTHING")
    else:
        where = sql.SQL("WHERE NOT EXISTS (SELECT 1 FROM {} m WHERE m.unique_row_id = s.unique_row_id)")
        where, tail = where.format(tables.main), sql.SQL("")
    cur.execute(
        sql.SQL("INSERT INTO {main} ({cols}) SELECT {s_cols} FROM {stg} s {where} {tail}").format(
            main=tables.main,
            cols=_main_columns(taxi),
            s_cols=_main_columns(taxi, "s"),
            stg=tables.staging(month),
            where=where,
            tail=tail,
        )
    )
    return cur.rowcount


def _last_load(cur, tables: Tables, month: Month, status: str) -> dict | None:
    cur.execute(
        sql.SQL("""
        SELECT load_id, source_sha256, rows_read, rows_rejected, rows_repeated, rows_suspicious, rows_after FROM {}
        WHERE sink = 'postgres' AND taxi = %s AND month = %s AND status = %s
        ORDER BY load_id DESC LIMIT 1""").format(tables.ledger),
        (tables.taxi.name, str(month), status),
    )
    row = cur.fetchone()
    return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else None


def _suspicious(tables: Tables, month: Month, alias: str) -> sql.Composed:
    """Loaded but worth a look: pickup outside the month, dropoff before pickup, a negative amount."""
    taxi = tables.taxi
    pickup = sql.Identifier(alias, taxi.column(taxi.pickup).db_name)
    dropoff = sql.Identifier(alias, taxi.column(taxi.dropoff).db_name)
    conds = [_month_filter(tables, month, alias, inside=False), sql.SQL("{} < {}").format(dropoff, pickup)]
    conds += [sql.SQL("{} < 0").format(sql.Identifier(alias, taxi.column(a).db_name)) for a in taxi.amount_fields]
    return sql.SQL("({})").format(sql.SQL(" OR ").join(conds))
