"""dedup-merge on PostgreSQL: move a month's staged rows into the main table, each row once, in one transaction.

stage gave every row its final id (the md5 of its key text, repeats numbered: see `stage.stage`).

Three ways in, by what the table allows (measured with `make bench`):
- bulk: the month's partition does not exist yet (a first load into a table taxi-loader created) and stage
  made the staging table a logged one with the main table's columns. Its out-of-month rows move to the main
  table, the rest is indexed in one sort and the table attached as the month's partition: every row is
  written once. Building an index once is several times cheaper than growing a large one row by row; its two
  indexes are built at once on two connections, before the merge's transaction (`_index_and_count_ahead`).
- incremental: the partition exists (a reload after rows were deleted), or the staging table cannot become
  the partition: the month's new rows found with one hash anti-join against its partition (`_insert_missing`),
  inserted in key order with ON CONFLICT DO NOTHING (on a table with a unique key but no partitions, ON
  CONFLICT alone).
- course table: a table the course's flows created has no unique key; INSERT ... WHERE NOT EXISTS under a
  table lock that serializes merges.
A re-run of a file already loaded whole is recognised from the ledger and skips the insert (`MergePlan`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

from taxi_loader.contract import held_whole
from taxi_loader.errors import NotStaged, TransientError, UsageError
from taxi_loader.months import Month
from taxi_loader.taxis import TaxiType

from . import ledger
from .connect import Connection, commit_unflushed, one
from .ddl import (
    Layout,
    Tables,
    attach_xact_lock,
    column_list,
    ensure_main_table,
    ensure_support_tables,
    key_text_sql,
    month_filter,
    month_lock,
    pin_text_forms,
    relation_exists,
    unique_key_ddl,
)

_T = TypeVar("_T")

MERGE_WORK_MEM = "256MB"  # lets the merge hash and sort a month in memory instead of on disk
# What a staging table changed by hand since stage makes the merge's statements fail with (and two of its rows
# with one id, when a first load indexes it: see `_as_stage_left_it`).
_STAGING_CHANGED = (
    psycopg2.errors.UndefinedColumn,
    psycopg2.errors.DatatypeMismatch,
    psycopg2.errors.WrongObjectType,
    psycopg2.errors.NotNullViolation,
)


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


@dataclass(frozen=True)
class MergePlan:
    """What decides how the month is merged, read before the merge in a transaction of its own."""

    staged_load: dict[str, Any] | None  # the ledger row stage wrote ('staged'), if any
    previous: dict[str, Any] | None  # the month's last successful load, if any
    rows_of_file: int  # rows of this month's file in the main table now
    kept: int  # rows stage kept: read less rejected
    unstaged: bool = False  # stage found the file identical to the last load, held whole, and staged nothing

    def already_whole(self, drop_duplicates: bool) -> bool:
        """Whether this very file (same checksum) was loaded before and every row of it is still in the table.

        Then there is nothing to insert: ids are a function of the file's content.
        """
        if self.unstaged:  # stage saw that already: there is nothing staged to merge
            return True
        return bool(
            self.staged_load
            and held_whole(
                self.previous, self.staged_load["source_size"], self.staged_load["source_sha256"], self.rows_of_file
            )
            and not drop_duplicates
        )


# Opens a second connection to the server and database of the one given, for the time of a `with` block (None:
# the server refused one).
Sibling = Callable[[Connection], AbstractContextManager[Connection | None]]


def dedup_merge(
    conn: Connection, tables: Tables, month: Month, drop_duplicates: bool = False, sibling: Sibling | None = None
) -> MergeResult:
    """Insert the staged rows whose unique_row_id is not yet in the main table, in one transaction.

    Repeats keep ids of their own, or are dropped with `drop_duplicates`. The month's 'staged' ledger row
    becomes 'succeeded' with the counts. A file already loaded whole inserts nothing (`MergePlan`).
    `sibling` lends a second connection, on which a first load builds one of its two indexes beside the other,
    then counts the staged rows.
    """
    taxi, filename = tables.taxi, tables.taxi.filename(str(month))
    ensure_support_tables(conn, tables)
    layout = ensure_main_table(conn, tables)
    with month_lock(conn, tables, month):
        # Read what decides the plan in a transaction of its own: its read locks on the main table must be
        # gone before the merge, or another month's ATTACH PARTITION would wait for them while we wait for it.
        plan = _plan(conn, tables, month)
        if plan.unstaged and drop_duplicates:
            raise UsageError(
                f"{taxi.name} {month}: stage found the file already loaded whole and staged nothing, so "
                "there are no repeats to drop: run `taxi-loader stage --force`, then dedup-merge --drop-duplicates"
            )
        whole = plan.already_whole(drop_duplicates)
        known = plan.staged_load["rows_repeated"] if plan.staged_load else None
        ahead = None
        if sibling and layout.partitioned and not whole:
            with _as_stage_left_it(tables, month):
                places = plan.kept <= _PLACES_OF_AT_MOST
                ahead = _index_and_count_ahead(conn, sibling, tables, month, known is None, places)
        with conn.cursor() as cur:
            _merge_settings(cur)
            rows_of_file = plan.rows_of_file
            if whole:
                assert plan.previous is not None
                inserted, repeated = 0, plan.previous["rows_repeated"] or 0
                staged, suspicious = plan.kept, plan.previous["rows_suspicious"] or 0
            else:
                with _as_stage_left_it(tables, month):
                    inserted, repeated, staged, suspicious = _merge(
                        cur, tables, month, layout, drop_duplicates, known, ahead
                    )
                if staged != plan.kept:
                    raise _short_staging(taxi, month, staged, plan.kept)
                rows_of_file += inserted
            dropped = repeated if drop_duplicates else 0
            present = staged - inserted - dropped
            rejected = (plan.staged_load or {}).get("rows_rejected") or 0
            if plan.staged_load:
                counts = {
                    "rows_repeated": repeated,
                    "rows_inserted": inserted,
                    "rows_present": present,
                    "rows_suspicious": suspicious,
                    "rows_after": rows_of_file,
                }
                ledger.record_success(cur, tables, plan.staged_load["load_id"], counts)
        if whole:
            commit_unflushed(conn)  # only the ledger changed: the rows were made durable by their own load
        else:
            conn.commit()
    return MergeResult(
        taxi.name, str(month), filename, staged, inserted, present, repeated, dropped, rejected, suspicious
    )


def _merge_settings(cur: Cursor) -> None:
    """For the rest of the transaction: the text forms ids are made of, and room to hash and sort in memory."""
    pin_text_forms(cur)
    cur.execute(
        "SET LOCAL jit = off; SET LOCAL work_mem = %(mem)s; SET LOCAL maintenance_work_mem = %(mem)s",
        {"mem": MERGE_WORK_MEM},
    )


@contextmanager
def _as_stage_left_it(tables: Tables, month: Month) -> Iterator[None]:
    """Turn what a staging table changed by hand since stage makes the merge's statements fail with into a
    UsageError that says so (exit 2)."""
    try:
        yield
    except (*_STAGING_CHANGED, psycopg2.errors.UniqueViolation) as exc:
        staging = (tables.staging_name(month), tables.partition_name(month))
        if isinstance(exc, psycopg2.errors.UniqueViolation) and exc.diag.table_name not in staging:
            raise  # another table's own unique index: not the staging table's doing
        raise UsageError(
            f"{tables.taxi.name} {month}: the staging table is not as stage left it "
            f"({str(exc).strip().splitlines()[0]}); run `taxi-loader stage` again, then dedup-merge"
        ) from None


def _plan(conn: Connection, tables: Tables, month: Month) -> MergePlan:
    """Check that the month is staged and read its plan; commits (its locks must not outlive it)."""
    taxi = tables.taxi
    with conn.cursor() as cur:
        staged_load = ledger.last_load(cur, tables, month, ledger.STAGED)
        previous = ledger.last_load(cur, tables, month, ledger.SUCCEEDED)
        rows_of_file = ledger.rows_of_file(cur, tables, taxi.filename(str(month)))
        if not relation_exists(cur, tables.staging(month)):
            # stage found the file identical to the last load, held whole: nothing to merge (checked again)
            if staged_load and held_whole(
                previous, staged_load["source_size"], staged_load["source_sha256"], rows_of_file
            ):
                conn.commit()
                kept = staged_load["rows_read"] - staged_load["rows_rejected"]
                return MergePlan(staged_load, previous, rows_of_file, kept, unstaged=True)
            raise NotStaged(f"nothing staged for {taxi.name} {month}: run `taxi-loader stage` first")
        if not _has_ids(cur, tables, month):
            raise UsageError(f"{taxi.name} {month} was staged by an older taxi-loader: run `taxi-loader stage` again")
        if staged_load:
            kept = staged_load["rows_read"] - staged_load["rows_rejected"]
            cur.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(tables.staging(month)))
            if kept and not one(cur)[0]:
                raise _short_staging(taxi, month, 0, kept)
        else:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(tables.staging(month)))
            kept = one(cur)[0]
    conn.commit()
    return MergePlan(staged_load, previous, rows_of_file, kept)


def _has_ids(cur: Cursor, tables: Tables, month: Month) -> bool:
    cur.execute(
        "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'unique_row_id'"
        " AND NOT attisdropped)",
        (tables.staging(month).as_string(cur),),
    )
    return bool(one(cur)[0])


def _short_staging(taxi: TaxiType, month: Month, staged: int, kept: int) -> TransientError:
    # An unlogged table is emptied by crash recovery: never pass a short staging table off as a load.
    return TransientError(
        f"{taxi.name} {month}: the staging table holds {staged} rows but stage kept {kept} "
        "(did PostgreSQL restart after a crash?); run stage again, then dedup-merge"
    )


def _merge(
    cur: Cursor,
    tables: Tables,
    month: Month,
    layout: Layout,
    drop_duplicates: bool,
    repeated: int | None,
    ahead: _Counts | None,
) -> tuple[int, int, int, int]:
    """Insert what is new; return (rows inserted, repeats, rows staged, rows suspicious).

    `repeated`: the repeats stage numbered (None when unknown: counted here); `ahead`: the staged rows' counts
    from `_index_and_count_ahead` (None: counted here)."""
    # Here nothing hides a serial count (see `_count`): the out-of-month rows are found by a scan instead.
    counts = _count(cur, tables, month, repeated is None, places=False) if ahead is None else ahead
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
        return _bulk(cur, tables, month, kept, counts), repeated, counts.staged, counts.suspicious
    if layout.partitioned:  # rows may be routed to the default partition: not while another month attaches
        attach_xact_lock(cur, tables)
    elif not layout.unique_index:
        # A course-created table has no unique key: serialize merges so NOT EXISTS stays true.
        cur.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(tables.main))
    return _insert_new(cur, tables, month, layout), repeated, counts.staged, counts.suspicious


@dataclass
class _Counts:
    staged: int
    suspicious: int
    outside: int  # pickups outside the month
    repeated: int  # rows whose id is not their key's plain md5 (counted only when asked)
    outside_at: list[str] | None  # where the out-of-month rows are (ctids): None when not asked, or too many


# A first load's count notes where the out-of-month rows are (a few thousand in a month of the course's files), so
# that they are moved from there instead of searched for by a second scan of the month; past this many, they
# are searched for. PostgreSQL gathers the places of all of them before it can tell how many there are (about
# 30 bytes each on the server): a month of more than _PLACES_OF_AT_MOST rows is not asked for them at all.
_NAMED_AT_MOST = 100_000
_PLACES_OF_AT_MOST = 4_000_000


def _count(cur: Cursor, tables: Tables, month: Month, repeats: bool, places: bool) -> _Counts:
    """One pass over the staged rows: how many, how many suspicious, outside the month, (repeats), and (with
    `places`) where the out-of-month rows are. Gathering the places makes the pass serial on PostgreSQL 15,
    which has no parallel array_agg (16 has): 0.44 s for 1.37M rows against 0.21 s with two workers, which
    pays only where the count runs in the shadow of an index build (`_index_and_count_ahead`)."""
    repeat = sql.SQL("count(*) FILTER (WHERE s.unique_row_id <> md5({}))").format(key_text_sql(tables.taxi, "s"))
    outside = month_filter(tables, month, "s", inside=False)
    noted = sql.SQL("""
               CASE WHEN count(*) FILTER (WHERE {outside}) <= {most}
                    THEN coalesce(array_agg(s.ctid) FILTER (WHERE {outside}), '{{}}')::text[] END""")
    cur.execute(
        sql.SQL("""
        SELECT count(*), count(*) FILTER (WHERE {suspicious}), count(*) FILTER (WHERE {outside}), {repeat}, {noted}
        FROM {stg} s""").format(
            suspicious=_suspicious(tables, month, "s"),
            outside=outside,
            repeat=repeat if repeats else sql.SQL("0"),
            noted=noted.format(outside=outside, most=sql.Literal(_NAMED_AT_MOST)) if places else sql.SQL("NULL"),
            stg=tables.staging(month),
        )
    )
    return _Counts(*one(cur))


def _attachable(cur: Cursor, tables: Tables, month: Month) -> bool:
    """Whether the staging table can become the month's partition: stage made it logged (it does so only with
    the main table's exact columns) and the month has no partition yet."""
    cur.execute(
        "SELECT relpersistence = 'p' AND to_regclass(%s) IS NULL FROM pg_class WHERE oid = to_regclass(%s)",
        (tables.partition(month).as_string(cur), tables.staging(month).as_string(cur)),
    )
    return bool(one(cur)[0])


def _bulk(cur: Cursor, tables: Tables, month: Month, kept: int, counts: _Counts) -> int:
    """Make the staging table the month's partition: out-of-month rows to the main table, index, attach.

    `kept` rows are staged, `counts.outside` of them with pickups outside the month. Returns the rows
    inserted."""
    taxi, stg, part = tables.taxi, tables.staging(month), tables.partition(month)
    # From here on the main table's partitions are written and its partition bounds change (rows moved out
    # of the default partition, ATTACH): two months doing this at once would each hold a lock the other
    # needs, or route a row by bounds the other is changing, so this part goes one month at a time.
    attach_xact_lock(cur, tables)
    # 1. Pickups outside the month belong to other partitions: move them into the main table, taken from the
    #    places the count noted (a scan of the month costs 0.15 s for 1.37M rows). Each is tested again there,
    #    and a scan looks for any the places missed: they are a shortcut, never trusted.
    inserted = kept
    if counts.outside:
        moved, new = (0, 0) if counts.outside_at is None else _move_out(cur, tables, month, counts.outside_at)
        if moved < counts.outside:
            more = _move_out(cur, tables, month, None)
            moved, new = moved + more[0], new + more[1]
        inserted += new - moved
    # 2. Rows of other files whose pickups fall in this month wait in the default partition: move them in,
    #    keeping the older copy of a row both files hold.
    cur.execute(
        sql.SQL("""
        CREATE TEMP TABLE taxi_loader_moved ON COMMIT DROP AS
        WITH moved AS (DELETE FROM {default} d WHERE {inside} RETURNING d.*) SELECT * FROM moved""").format(
            default=tables.default_partition, inside=month_filter(tables, month, "d", inside=True)
        )
    )
    if cur.rowcount:
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE unique_row_id IN (SELECT unique_row_id FROM taxi_loader_moved)").format(stg)
        )
        inserted -= cur.rowcount
        cur.execute(
            sql.SQL("INSERT INTO {} ({cols}) SELECT {cols} FROM taxi_loader_moved").format(stg, cols=column_list(taxi))
        )
    # 3. The staging table becomes the partition: indexed once (unless `_index_and_count_ahead` did it), then
    #    attached (the parent's indexes adopt these instead of building their own).
    cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN filename DROP DEFAULT").format(stg))
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(stg, sql.Identifier(tables.partition_name(month))))
    _create_indexes(cur, _missing_indexes(cur, tables, part, month))
    # The CHECK constraint lets ATTACH skip its own validation scan. It must imply the whole partition
    # constraint, which includes `pickup IS NOT NULL` (a CHECK passes on NULL): without it ATTACH scans the
    # table again (measured: 0.1 s for 1.37M rows).
    first, after = sql.Literal(month.first_day.isoformat()), sql.Literal(month.next().first_day.isoformat())
    cur.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} IS NOT NULL AND {})").format(
            part,
            sql.Identifier(f"{tables.partition_name(month)}_month"),
            tables.pickup,
            month_filter(tables, month, None, inside=True),
        )
    )
    cur.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            tables.main, part, first, after
        )
    )
    return inserted


def _move_out(cur: Cursor, tables: Tables, month: Month, at: list[str] | None) -> tuple[int, int]:
    """Move the staged rows with pickups outside the month into the main table: those at the places `at`
    (ctids), or all of them (None). Returns the rows moved and the rows of them the main table did not hold."""
    outside = month_filter(tables, month, "s", inside=False)
    where = outside if at is None else sql.SQL("s.ctid = ANY(%s::tid[]) AND {}").format(outside)
    cur.execute(
        sql.SQL("""
        WITH moved AS (DELETE FROM {stg} s WHERE {where} RETURNING s.*),
        ins AS (INSERT INTO {main} ({cols}) SELECT {cols} FROM moved {tail} RETURNING 1)
        SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM ins)""").format(
            stg=tables.staging(month),
            where=where,
            main=tables.main,
            cols=column_list(tables.taxi),
            tail=_in_key_order_once(tables, "moved"),
        ),
        None if at is None else (at,),
    )
    moved, new = one(cur)
    return moved, new


# A first load moves the month's rows out of the default partition into its own: past this many, inserting them
# into indexes built ahead costs more than building the indexes after them (measured: 1.37M rows, 7 s more).
_MOVED_IN_AT_MOST = 10_000


def _index_and_count_ahead(
    conn: Connection, sibling: Sibling, tables: Tables, month: Month, repeats: bool, places: bool
) -> _Counts | None:
    """Give a staging table that is to become the month's partition its two indexes before the merge, built
    at once on two connections, and count its rows (`_count`, with `places`) on the second one, after its
    build (on this one when the table has its indexes already); return the counts, or None when nothing was
    done (`_bulk` then builds the indexes in the merge's transaction, and the merge counts).

    A b-tree build is one backend's scan, sort and write: on two cores the pair takes about as long as the
    longer one (measured for a 1.37M-row month: 1.0-1.2 s for both and the count, against 1.3-1.7 s one after
    the other with PostgreSQL's parallel workers). The unique index is the longer, with its sort of random ids
    and 89 MB to write; the filename index, its rows already in order (`_create_indexes`), takes 0.5 s, and
    the count (0.3-0.5 s) fits in the other's shadow. Each build commits, as the other connection must see
    the table; the indexes already have the partition's names, and `_bulk` builds only those missing (a merge
    that failed after them leaves them for the next). The counts hold in the merge: the table is logged (no
    crash empties it) and the month's lock keeps every other load out of it."""

    def counted(on: Connection) -> _Counts:
        with on.cursor() as cur:
            _merge_settings(cur)
            counts = _count(cur, tables, month, repeats, places)
        on.commit()
        return counts

    with conn.cursor() as cur:
        attachable = _attachable(cur, tables, month) and _moved_in_at_most(cur, tables, month, _MOVED_IN_AT_MOST)
        missing = _missing_indexes(cur, tables, tables.staging(month), month) if attachable else []
    conn.commit()
    if not attachable:
        return None
    if not missing:
        return counted(conn)
    with sibling(conn) as other:
        if other is None:
            return None
        return _at_once(conn, missing[:1], other, missing[1:], then=counted)


def _moved_in_at_most(cur: Cursor, tables: Tables, month: Month, limit: int) -> bool:
    """Whether the default partition holds at most `limit` rows of the month (stops counting past it)."""
    cur.execute(
        sql.SQL("SELECT count(*) <= %s FROM (SELECT FROM {} d WHERE {} LIMIT %s) m").format(
            tables.default_partition, month_filter(tables, month, "d", inside=True)
        ),
        (limit, limit + 1),
    )
    return bool(one(cur)[0])


def _missing_indexes(cur: Cursor, tables: Tables, table: sql.Identifier, month: Month) -> list[sql.Composed]:
    """The statements that create the month's partition indexes `table` does not have yet (by name)."""
    cur.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(%s)",
        (table.as_string(cur),),
    )
    present = {name for (name,) in cur.fetchall()}
    wanted = unique_key_ddl(tables, table, tables.partition_name(month))
    return [statement for name, statement in wanted.items() if name not in present]


def _at_once(
    conn: Connection,
    here: list[sql.Composed],
    other: Connection,
    there: list[sql.Composed],
    then: Callable[[Connection], _T],
) -> _T:
    """Build the indexes `here` on `conn` while `other` builds those `there` and then runs `then`, each build
    committed; return what `then` returns. When one side fails, the other's statement is cancelled and the
    first failure raised."""
    failed: list[BaseException] = []
    done: list[_T] = []
    built_here = threading.Event()  # this side's builds ended, one way or the other

    def build_there() -> None:
        try:
            _build_indexes(other, there)
            done.append(then(other))
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            failed.append(exc)
            _cancel_until(conn, built_here.is_set, built_here.wait)

    # A daemon thread, as the command's own worker is: a statement that will not end must not keep the
    # process from exiting on a second Ctrl-C.
    beside = threading.Thread(target=build_there, name="taxi-loader-index", daemon=True)
    beside.start()
    try:
        try:
            _build_indexes(conn, here)
        finally:
            built_here.set()
    except psycopg2.errors.QueryCanceled:
        beside.join()
        if failed:  # cancelled because the other side failed: that failure is the one to tell
            raise failed[0] from None
        raise
    except BaseException:
        _cancel_until(other, lambda: not beside.is_alive(), beside.join)
        raise
    beside.join()
    if failed:
        raise failed[0]
    return done[0]


def _cancel_until(conn: Connection, stopped: Callable[[], bool], wait: Callable[[float], object]) -> None:
    """Cancel `conn`'s statement, again every 0.1 s (`wait`), until `stopped()`: a cancel that reaches the
    server before the statement does is lost, and the statement would run to its end."""
    while not stopped():
        with suppress(psycopg2.Error):
            conn.cancel()
        wait(0.1)


def _build_indexes(conn: Connection, statements: list[sql.Composed]) -> None:
    """Run index builds in a transaction of their own, committed without waiting for the disk (the merge's own
    commit, which waits, makes them durable)."""
    with conn.cursor() as cur:
        # No parallel workers: the two builds already hold both cores (with workers, each took 1.4 s, not 0.9).
        cur.execute(
            "SET LOCAL maintenance_work_mem = %s; SET LOCAL max_parallel_maintenance_workers = 0", (MERGE_WORK_MEM,)
        )
        _create_indexes(cur, statements)
    commit_unflushed(conn)


def _create_indexes(cur: Cursor, statements: list[sql.Composed]) -> None:
    """Run index builds, each reading its table from the first page (for the rest of the transaction): the rows
    then come in their physical order, in which an index on `filename` (one value in a whole partition) is
    already sorted. PostgreSQL would start a large table's scan where another scan of it has got to, and
    sorting the rotated rows took 0.47 s of a 1.0 s build for 1.37M rows, against 0.03 s in order."""
    if statements:
        cur.execute("SET LOCAL synchronize_seqscans = off")
    for statement in statements:
        cur.execute(statement)


def _in_key_order_once(tables: Tables, alias: str) -> sql.Composed:
    """The tail of an INSERT into taxi-loader's partitioned table: rows in key order, each id once (the unique
    key is the id with the pickup, see ddl.unique_key_ddl)."""
    return sql.SQL('ORDER BY {} COLLATE "C" ON CONFLICT (unique_row_id COLLATE "C", {}) DO NOTHING').format(
        sql.Identifier(alias, "unique_row_id"), tables.pickup
    )


def _insert_new(cur: Cursor, tables: Tables, month: Month, layout: Layout) -> int:
    """INSERT the staged rows that are not in the table yet; return how many."""
    where: sql.Composable = sql.SQL("")
    # Inserting in key order keeps the b-tree's leaf pages hot instead of touching one at random per row.
    tail: sql.Composable
    if layout.partitioned:
        return _insert_missing(cur, tables, month)
    elif layout.unique_index:
        tail = sql.SQL("ORDER BY s.unique_row_id ON CONFLICT (unique_row_id) DO NOTHING")
    else:
        where = sql.SQL("WHERE NOT EXISTS (SELECT 1 FROM {} m WHERE m.unique_row_id = s.unique_row_id)").format(
            tables.main
        )
        tail = sql.SQL("")
    cur.execute(
        sql.SQL("INSERT INTO {main} ({cols}) SELECT {s_cols} FROM {stg} s {where} {tail}").format(
            main=tables.main,
            cols=column_list(tables.taxi),
            s_cols=column_list(tables.taxi, "s"),
            stg=tables.staging(month),
            where=where,
            tail=tail,
        )
    )
    return cur.rowcount


def _insert_missing(cur: Cursor, tables: Tables, month: Month) -> int:
    """INSERT into taxi-loader's partitioned table the staged rows it does not hold; return how many.

    The month's rows are first told apart from those the table holds with one hash anti-join against the
    month's partition (the pickup range, as constants, prunes the others): asking the unique index row by row
    (ON CONFLICT) costs several times more when most rows are there already (a re-run after some rows were
    deleted). Out-of-month rows, a few, go the ON CONFLICT way; ON CONFLICT also guards all of them against a
    concurrent load.
    """
    taxi = tables.taxi
    pickup = taxi.column(taxi.pickup).db_name
    cur.execute(
        sql.SQL("""
        INSERT INTO {main} ({cols})
        SELECT {cols} FROM (
            SELECT {s_cols} FROM {stg} s
            WHERE {inside} AND NOT EXISTS (
                SELECT FROM {main} m
                WHERE {m_inside} AND m.unique_row_id = s.unique_row_id AND {m_pickup} = {s_pickup})
            UNION ALL
            SELECT {s_cols} FROM {stg} s WHERE {outside}
        ) s {tail}""").format(
            main=tables.main,
            cols=column_list(taxi),
            s_cols=column_list(taxi, "s"),
            stg=tables.staging(month),
            inside=month_filter(tables, month, "s", inside=True),
            outside=month_filter(tables, month, "s", inside=False),
            m_inside=month_filter(tables, month, "m", inside=True),
            m_pickup=sql.Identifier("m", pickup),
            s_pickup=sql.Identifier("s", pickup),
            tail=_in_key_order_once(tables, "s"),
        )
    )
    return cur.rowcount


def _suspicious(tables: Tables, month: Month, alias: str) -> sql.Composed:
    """Loaded but worth a look: pickup outside the month, dropoff before pickup, a negative amount."""
    taxi = tables.taxi
    pickup = sql.Identifier(alias, taxi.column(taxi.pickup).db_name)
    dropoff = sql.Identifier(alias, taxi.column(taxi.dropoff).db_name)
    conds = [month_filter(tables, month, alias, inside=False), sql.SQL("{} < {}").format(dropoff, pickup)]
    conds += [sql.SQL("{} < 0").format(sql.Identifier(alias, taxi.column(a).db_name)) for a in taxi.amount_fields]
    return sql.SQL("({})").format(sql.SQL(" OR ").join(conds))
