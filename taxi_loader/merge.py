"""dedup-merge: move a month's staged rows into the main table, each row once, in one transaction.

Identity is computed here, in SQL, from the typed staged values: md5 of the key fields rendered as
PostgreSQL's CAST(x AS text) (the course's expression; `identity.py` is its Python twin). The k-th exact
repeat of a key in the file gets md5(key_text || '|' || k), k counted in file order.

Three ways in, by what the table allows (measured with `make bench`):
- bulk: the month's partition does not exist yet (a first load into a table taxi-loader created). The rows
  are written into a fresh table, indexed in one sort, and attached as the partition. Building an index
  once is several times cheaper than growing a large one row by row.
- incremental: the partition exists (a reload after rows were deleted) or the rows belong to other months
  (pickups outside the file's month): INSERT ... ON CONFLICT DO NOTHING, in key order.
- course table: a table the course's flows created has no unique key; INSERT ... WHERE NOT EXISTS under a
  table lock that serializes merges.
A re-run of a file already loaded whole is recognised from the ledger and skips the insert (see dedup_merge).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2.errors
from psycopg2 import sql

from taxi_loader.errors import TransientError, UsageError
from taxi_loader.identity import REPEAT_SEPARATOR
from taxi_loader.months import Month
from taxi_loader.postgres import (
    Layout,
    Tables,
    _xact_lock,
    ensure_main_table,
    ensure_support_tables,
    month_lock,
    relation_exists,
    staging_exists,
)
from taxi_loader.taxis import Kind, TaxiType

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


def key_text_sql(taxi: TaxiType, alias: str) -> sql.Composed:
    """The key text of a row: the key fields as PostgreSQL's CAST(x AS text), NULL as '' (the course's rule)."""
    # concat() renders each argument with its type's output function, as ::text does, without the casts'
    # per-value overhead (measured: a quarter of the key text's cost).
    return sql.SQL("concat({})").format(
        sql.SQL(", ").join(sql.Identifier(alias, taxi.column(f).db_name) for f in taxi.key_fields)
    )


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
                kept = _count_staged(cur, tables, month)[0]
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
                inserted, repeated, staged, suspicious = _merge(cur, tables, month, layout, drop_duplicates)
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


def _short_staging(taxi: TaxiType, month: Month, staged: int, kept: int) -> TransientError:
    # An unlogged table is emptied by crash recovery: never pass a short staging table off as a load.
    return TransientError(
        f"{taxi.name} {month}: the staging table holds {staged} rows but stage kept {kept} "
        "(did PostgreSQL restart after a crash?); run stage again, then dedup-merge"
    )


def _merge(cur, tables: Tables, month: Month, layout: Layout, drop_duplicates: bool) -> tuple[int, int, int, int]:
    """Insert what is new; return (rows inserted, repeats seen, rows staged, rows suspicious)."""
    if not layout.partitioned or relation_exists(cur, tables.partition(month)):
        if not layout.partitioned and not layout.unique_index:
            # A course-created table has no unique key: serialize merges so NOT EXISTS stays true.
            cur.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(tables.main))
        staged, suspicious = _count_staged(cur, tables, month)
        return (*_incremental(cur, tables, month, layout, drop_duplicates, only=None), staged, suspicious)
    in_month, repeats_in_month, staged, suspicious = _bulk(cur, tables, month, drop_duplicates)
    others, repeats_elsewhere = _incremental(cur, tables, month, layout, drop_duplicates, only="outside")
    return in_month + others, repeats_in_month + repeats_elsewhere, staged, suspicious


@contextmanager
def _planner(cur, **settings: str) -> Iterator[None]:
    """Planner settings for the statements inside the block only; the transaction's own come back after."""
    previous = {}
    for name, value in settings.items():
        cur.execute("SELECT current_setting(%s), set_config(%s, %s, true)", (name, name, value))
        previous[name] = cur.fetchone()[0]
    yield
    for name, value in previous.items():
        cur.execute("SELECT set_config(%s, %s, true)", (name, value))


def _month_filter(tables: Tables, month: Month, alias: str, inside: bool) -> sql.Composed:
    pickup = sql.Identifier(alias, tables.taxi.column(tables.taxi.pickup).db_name)
    bounds = (sql.Literal(month.first_day.isoformat()), sql.Literal(month.next().first_day.isoformat()))
    test = sql.SQL("{p} >= {a}::timestamp AND {p} < {b}::timestamp").format(p=pickup, a=bounds[0], b=bounds[1])
    return test if inside else sql.SQL("({}) IS NOT TRUE").format(test)  # a NULL pickup is outside too


def _main_columns(taxi: TaxiType) -> sql.Composed:
    return sql.SQL(", ").join(
        [sql.Identifier("unique_row_id"), sql.Identifier("filename")]
        + [sql.Identifier(c.db_name) for c in taxi.columns]
    )


def _typed_columns(taxi: TaxiType, alias: str) -> sql.Composed:
    # Codes are bigint in staging (so COPY validates them) and text in the main table, as in the course.
    return sql.SQL(", ").join(
        sql.SQL("{}::text AS {}").format(sql.Identifier(alias, c.db_name), sql.Identifier(c.db_name))
        if c.kind is Kind.CODE
        else sql.SQL("{} AS {}").format(sql.Identifier(alias, c.db_name), sql.Identifier(c.db_name))
        for c in taxi.columns
    )


def _bulk(cur, tables: Tables, month: Month, drop_duplicates: bool) -> tuple[int, int, int, int]:
    """Fill a new partition for the month's own pickups, index it in one pass, attach it.

    Returns (rows inserted, repeats, rows staged, rows suspicious)."""
    taxi, stg, part = tables.taxi, tables.staging(month), tables.partition(month)
    inside = _month_filter(tables, month, "s", inside=True)
    # 1. Repeats, numbered in file order (the staging table's _line).
    # The planner prices handing a month of rows from the workers to the leader above computing the md5s
    # alone; measured, parallel plans are faster on two cores, so make that hand-over free here.
    cur.execute("SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0")
    repeats, staged, suspicious = _find_repeats(cur, tables, month)
    # 2. The partition's rows, ids computed from the typed values. CREATE TABLE AS can run its SELECT in
    #    parallel workers, which INSERT ... SELECT cannot: the md5 work is shared between the cores.
    keep = sql.SQL("AND r.rn IS NULL") if drop_duplicates else sql.SQL("")
    cur.execute("SAVEPOINT bulk")
    # One worker beside the leader, which writes the rows: measured faster than two on two cores. The fresh
    # staging tables have no statistics, and the planner, guessing them small, would sort a month of rows to
    # merge-join the few repeats: hash the repeats instead.
    with _planner(cur, max_parallel_workers_per_gather="1", enable_mergejoin="off", enable_nestloop="off"):
        cur.execute(
            sql.SQL("""
        CREATE TABLE {part} AS
        SELECT CASE WHEN r.rn IS NULL THEN md5({k}) ELSE md5({k} || {sep} || r.rn) END AS unique_row_id,
               %(filename)s::text AS filename, {cols}
        FROM {stg} s LEFT JOIN unnest(%(lines)s::bigint[], %(rns)s::int[]) AS r(line, rn) ON r.line = s._line
        WHERE {inside} {keep}""").format(
                part=part,
                k=key_text_sql(taxi, "s"),
                sep=sql.Literal(REPEAT_SEPARATOR),
                cols=_typed_columns(taxi, "s"),
                stg=stg,
                inside=inside,
                keep=keep,
            ),
            {"filename": taxi.filename(str(month)), "lines": list(repeats), "rns": list(repeats.values())},
        )
        inserted = cur.rowcount
    # From here on the default partition and the parent are touched (rows moved out, ATTACH): two months
    # doing this at once would each hold a lock the other needs, so this part goes one month at a time.
    _xact_lock(cur, "attach", tables.schema, taxi.table)
    # 3. Rows of other files whose pickups fall in this month wait in the default partition: move them in,
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
            sql.SQL("DELETE FROM {} WHERE unique_row_id IN (SELECT unique_row_id FROM taxi_loader_moved)").format(part)
        )
        inserted -= cur.rowcount
        cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM taxi_loader_moved").format(part))
    # 4. Index once, then attach: the parent's indexes adopt these instead of building their own.
    pickup = sql.Identifier(taxi.column(taxi.pickup).db_name)
    try:
        cur.execute(
            sql.SQL('CREATE UNIQUE INDEX {} ON {} (unique_row_id COLLATE "C", {})').format(
                sql.Identifier(f"{tables.partition_name(month)}_unique_row_id_key"), part, pickup
            )
        )
    except psycopg2.errors.UniqueViolation:
        # Two different keys rendered to the same text (concatenation without separators can do that, e.g.
        # PULocationID 15 + DOLocationID 1 and 1 + 51): number repeats by the key text instead.
        cur.execute("ROLLBACK TO SAVEPOINT bulk")
        return (*_bulk_by_text(cur, tables, month, drop_duplicates), staged, suspicious)
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
    return inserted, len(repeats), staged, suspicious


def _find_repeats(cur, tables: Tables, month: Month) -> tuple[dict[int, int], int, int]:
    """The k-th (k > 1) rows of keys seen more than once among the month's own pickups as {_line: k}, and the
    counts of staged and of suspicious rows (one pass counts them all).

    Candidates are the groups of a 64-bit hash of the typed key, found by sorting the hashes (measured:
    faster than hash-aggregating a month of distinct keys). Almost all groups are pairs, known by their first
    and last line; the rare larger groups are fetched by hash. Each candidate's key text, the text its id is
    made of, is then compared, so a hash collision never numbers two different keys.
    """
    taxi, stg = tables.taxi, tables.staging(month)
    inside = _month_filter(tables, month, "s", inside=True)
    digest = sql.SQL("hash_record_extended(ROW({}), 0)").format(
        sql.SQL(", ").join(sql.Identifier("s", taxi.column(f).db_name) for f in taxi.key_fields)
    )
    # Grouping sets: the () set is the whole table's counts. (They also keep the planner from aggregating in
    # the workers first, which only adds work when nearly every group has one row.)
    with _planner(cur, enable_hashagg="off"):
        cur.execute(
            sql.SQL("""
        SELECT grouping(h) = 1, min(_line), max(_line), count(*), count(*) FILTER (WHERE suspicious), h
        FROM (SELECT CASE WHEN {inside} THEN {digest} END AS h, s._line, {suspicious} AS suspicious
              FROM {stg} s) x
        GROUP BY GROUPING SETS ((h), ())
        HAVING grouping(h) = 1 OR (h IS NOT NULL AND count(*) > 1)""").format(
                digest=digest, stg=stg, inside=inside, suspicious=_suspicious(tables, month, "s")
            )
        )
        rows = cur.fetchall()
    staged, suspicious = next((n, sus) for total, _, _, n, sus, _ in rows if total)
    groups = [(first, last, n, h) for total, first, last, n, _, h in rows if not total]
    if not groups:
        return {}, staged, suspicious
    lines = [line for first, last, n, _ in groups if n == 2 for line in (first, last)]
    larger = [h for _, _, n, h in groups if n > 2]
    by_hash = sql.SQL("OR ({} AND {} = ANY(%(larger)s::bigint[]))").format(inside, digest) if larger else sql.SQL("")
    cur.execute(
        sql.SQL("""
        SELECT s._line, {key} FROM {stg} s
        WHERE s._line = ANY(%(lines)s::bigint[]) {by_hash} ORDER BY s._line""").format(
            key=key_text_sql(taxi, "s"), stg=stg, by_hash=by_hash
        ),
        {"lines": lines, "larger": larger},
    )
    seen: dict[str, int] = {}
    repeats: dict[int, int] = {}
    for line, key in cur.fetchall():
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            repeats[line] = seen[key]
    return repeats, staged, suspicious


def _bulk_by_text(cur, tables: Tables, month: Month, drop_duplicates: bool) -> tuple[int, int]:
    """The rare fallback of `_bulk`: create the partition empty and insert with repeats numbered by key text."""
    first, after = month.first_day.isoformat(), month.next().first_day.isoformat()
    cur.execute(
        sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
            tables.partition(month), tables.main, sql.Literal(first), sql.Literal(after)
        )
    )
    layout = Layout(partitioned=True, unique_index=True)
    return _incremental(cur, tables, month, layout, drop_duplicates, only="inside")


def _incremental(
    cur, tables: Tables, month: Month, layout: Layout, drop_duplicates: bool, only: str | None
) -> tuple[int, int]:
    """INSERT the staged rows (all, or those `inside` / `outside` the month) that are not in the table yet."""
    taxi = tables.taxi
    pickup = taxi.column(taxi.pickup).db_name
    where = sql.SQL("")
    if only:
        where = sql.SQL("WHERE {}").format(_month_filter(tables, month, "s", inside=only == "inside"))
    keep = sql.SQL("WHERE n.rn IS NULL OR n.rn = 1") if drop_duplicates else sql.SQL("")
    # Inserting in key order keeps the b-tree's leaf pages hot instead of touching one at random per row.
    if layout.partitioned:
        guard = sql.SQL("")
        tail = sql.SQL('ORDER BY x.id COLLATE "C" ON CONFLICT (unique_row_id COLLATE "C", {}) DO NOTHING').format(
            sql.Identifier(pickup)
        )
    elif layout.unique_index:
        guard, tail = sql.SQL(""), sql.SQL("ORDER BY x.id ON CONFLICT (unique_row_id) DO NOTHING")
    else:
        guard = sql.SQL("WHERE NOT EXISTS (SELECT 1 FROM {} m WHERE m.unique_row_id = x.id)").format(tables.main)
        tail = sql.SQL("")
    # Only keys seen more than once are numbered: a window over every row would sort the whole month.
    cur.execute(
        sql.SQL("""
        WITH src AS MATERIALIZED (
            SELECT t.*, md5(t.k) AS h FROM (SELECT s._line AS line, {key} AS k, {cols} FROM {stg} s {where}) t),
        dup AS (SELECT h FROM src GROUP BY h HAVING count(*) > 1),
        numbered AS (
            SELECT line, row_number() OVER (PARTITION BY h ORDER BY line) AS rn
            FROM src WHERE h IN (SELECT h FROM dup)),
        x AS (
            SELECT CASE WHEN n.rn > 1 THEN md5(src.k || {sep} || n.rn) ELSE src.h END AS id, src.*
            FROM src LEFT JOIN numbered n ON n.line = src.line {keep}),
        ins AS (
            INSERT INTO {main} ({main_cols})
            SELECT x.id, %(filename)s, {x_cols} FROM x {guard} {tail}
            RETURNING 1)
        SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM numbered WHERE rn > 1)
        """).format(
            key=key_text_sql(taxi, "s"),
            cols=_typed_columns(taxi, "s"),
            stg=tables.staging(month),
            where=where,
            sep=sql.Literal(REPEAT_SEPARATOR),
            keep=keep,
            main=tables.main,
            main_cols=_main_columns(taxi),
            x_cols=sql.SQL(", ").join(sql.Identifier("x", c.db_name) for c in taxi.columns),
            guard=guard,
            tail=tail,
        ),
        {"filename": taxi.filename(str(month))},
    )
    inserted, repeated = cur.fetchone()
    return inserted, repeated


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


def _count_staged(cur, tables: Tables, month: Month) -> tuple[int, int]:
    """Staged rows, and the suspicious ones among them."""
    cur.execute(
        sql.SQL("SELECT count(*), count(*) FILTER (WHERE {}) FROM {} s").format(
            _suspicious(tables, month, "s"), tables.staging(month)
        )
    )
    return cur.fetchone()
