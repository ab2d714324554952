"""stage on PostgreSQL: the month's file, in one streaming pass, into its own staging table with each row's id.

Fast path: the ids are computed as the file streams (`arrowids.RowIds`, in a thread of its own) and COPY
parses and types every value. When either finds a value it cannot vouch for, the pass is redone in Python,
which records each bad row in the rejects table with its line, column and reason.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Generator, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

from taxi_loader.contract import ROW_ID, held_whole, skippable
from taxi_loader.errors import BadData
from taxi_loader.identity import row_id, value_text
from taxi_loader.months import Month
from taxi_loader.reader import (
    ChunkStream,
    FileStats,
    MonthFile,
    Reject,
    Rejects,
    check_rejects,
    fingerprint,
    prefetched,
    validated_rows,
)
from taxi_loader.source import is_parquet

from . import ledger
from .connect import Connection, commit_unflushed, one
from .ddl import (
    Tables,
    add_filename,
    create_staging,
    drop_staging,
    ensure_support_tables,
    key_text_sql,
    month_lock,
    pin_text_forms,
    staged_columns,
)

if TYPE_CHECKING:
    from taxi_loader.arrowids import Digests


@dataclass
class StageResult:
    """What stage found in the month's file."""

    taxi: str
    month: str
    filename: str
    rows_read: int
    rows_staged: int
    rows_rejected: int
    source_size: int
    source_sha256: str
    extra_columns: list[str]
    validated: bool  # True when COPY found a bad value and the Python validating pass ran
    unchanged: bool = False  # the month's last load was of this file and the table holds it whole: not staged


def stage(
    conn: Connection, tables: Tables, month: Month, path: Path, source: str, max_rejects: str, force: bool = False
) -> StageResult:
    """Read the month's file in one streaming pass and COPY it, with each row's id, into its staging table.

    The staging table has the main table's columns, `filename` added after the COPY as a default the catalog
    keeps once (`ddl.add_filename`). When the month has no partition yet, it is a logged
    table that dedup-merge indexes and attaches as the partition: the rows are written once. Otherwise it
    is unlogged, and the merge copies what is new.

    Too many rejects raise BadData. One transaction: on any failure the staging table is gone and the main
    table was never touched. The ledger gets a 'staged' row with the stats.

    A file identical to the month's last load, which the table still holds whole, is not read at all (unless
    `force`): the 'staged' row says so and dedup-merge records the load without a staging table.
    """
    ensure_support_tables(conn, tables)
    started = datetime.now(UTC)
    with month_lock(conn, tables, month):
        if not force:
            unchanged = _unchanged(conn, tables, month, path, source, max_rejects, started)
            if unchanged:
                return unchanged
        from taxi_loader.arrowids import Digests  # Arrow only when the file is read: the rest starts faster

        with Digests() as digests:
            return _stage_file(conn, tables, month, path, source, max_rejects, started, digests)


def _stage_file(
    conn: Connection,
    tables: Tables,
    month: Month,
    path: Path,
    source: str,
    max_rejects: str,
    started: datetime,
    digests: Digests,
) -> StageResult:
    """stage's pass over the file (its docstring tells the rules), under the month's lock."""
    taxi = tables.taxi
    filename = taxi.filename(str(month))
    try:
        if is_parquet(path):
            staged, rejects, stats, extra = _copy_parquet(conn, tables, month, path, digests, max_rejects)
            validated = False
        else:
            with MonthFile(path, taxi) as mf:
                extra = mf.header.extra
                attachable = not extra and _partition_missing(conn, tables, month)
                columns = _create_staging(conn, tables, month, mf, logged=attachable)
                try:
                    staged = _copy_fast(conn, tables, month, columns, mf, digests)
                    rejects, stats, validated = Rejects(), mf.stats, False
                except _BadValue:
                    validated = True
            if validated:  # the validating pass copies the file again, into a new staging table
                conn.rollback()
                digests.clear()
                with MonthFile(path, taxi) as mf:
                    _create_staging(conn, tables, month, mf, logged=attachable)
                    staged, rejects = _copy_validated(conn, tables, month, mf, digests, max_rejects)
                    stats = mf.stats
        check_rejects(rejects, stats.data_lines, max_rejects, filename)
        with conn.cursor() as cur:
            add_filename(cur, tables, month)
            repeated = _number_repeats(cur, tables, month, digests)
            ledger.record_staged(cur, tables, month, source, stats, rejects, repeated, started)
        commit_unflushed(conn)  # dedup-merge's commit makes it durable
    except BaseException:
        with suppress(psycopg2.Error):
            conn.rollback()
        with suppress(psycopg2.Error):
            drop_staging(conn, tables, month)
        raise
    return StageResult(
        taxi.name,
        str(month),
        filename,
        stats.data_lines,
        staged,
        len(rejects),
        stats.size,
        stats.sha256,
        extra,
        validated,
    )


def _unchanged(
    conn: Connection, tables: Tables, month: Month, path: Path, source: str, max_rejects: str, started: datetime
) -> StageResult | None:
    """The result of staging a file the table already holds whole (`contract.held_whole` and `skippable`),
    else None. Its reads end their transaction either way: their locks on the main table must not last
    through a COPY (another month's ATTACH PARTITION would wait for them)."""
    taxi = tables.taxi
    filename = taxi.filename(str(month))
    try:
        with conn.cursor() as cur:
            previous = ledger.last_load(cur, tables, month, ledger.SUCCEEDED)
            if not previous or not skippable(previous, ledger.latest_load_id(cur, tables, month), max_rejects):
                return None
            size, sha256 = fingerprint(path)
            if (size, sha256) != (previous["source_size"], previous["source_sha256"]):
                return None
            if not held_whole(previous, size, sha256, ledger.rows_of_file(cur, tables, filename)):
                return None
    finally:
        conn.commit()
    drop_staging(conn, tables, month)  # a staging table an interrupted stage left must not be merged
    with conn.cursor() as cur:
        ledger.record_unchanged(cur, tables, month, source, previous, started)
    commit_unflushed(conn)  # a ledger row of a load that changes nothing
    read, rejected = previous["rows_read"] or 0, previous["rows_rejected"] or 0
    return StageResult(taxi.name, str(month), filename, read, 0, rejected, size, sha256, [], False, unchanged=True)


class _BadValue(Exception):
    """COPY or the id pass met a value it cannot vouch for: the validating pass takes over."""


# The ids are computed a segment at a time: big enough that Arrow's per-call costs vanish, small enough that
# the segments in flight (one being read, one queued, one being sent) and Arrow's work on one hold little
# memory. Measured for a 1.37M-row month: 512 KiB (about 3,500 rows) as fast as 2 MiB or 8 MiB, with a peak
# of 117 MB against 160 and 290.
SEGMENT_BYTES = 512 << 10
_COPY_DATA_ERRORS = (
    psycopg2.DataError,
    psycopg2.errors.BadCopyFileFormat,
    psycopg2.errors.CharacterNotInRepertoire,
)


def _partition_missing(conn: Connection, tables: Tables, month: Month) -> bool:
    """Whether the month's rows can become a new partition: the main table is (or will be) taxi-loader's
    partitioned table and has no partition for the month yet."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT to_regclass(%s), to_regclass(%s)",
            (tables.main.as_string(cur), tables.partition(month).as_string(cur)),
        )
        main, partition = one(cur)
        if main is None:
            return True
        cur.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = %s::regclass", (main,))
        return bool(one(cur)[0]) and partition is None


def _create_staging(conn: Connection, tables: Tables, month: Month, mf: MonthFile, logged: bool) -> list[str]:
    """The month's staging table for this file; returns the COPY column list: unique_row_id, then the file's
    columns in the file's order (its unknown ones as `_extra_<i>`)."""
    create_staging(conn, tables, month, len(mf.header.extra), logged)
    unknown = (f"_extra_{i}" for i in range(len(mf.header.extra)))
    return [ROW_ID.db_name] + [c.db_name if c else next(unknown) for c in mf.header.columns]


def _copy(cur: Cursor, tables: Tables, month: Month, columns: list[str], stream: io.RawIOBase) -> int:
    # FREEZE: the table is new in this transaction, so its rows can be written frozen and all-visible, which
    # spares the partition a later rewrite of every page by VACUUM (and lets index-only scans skip the heap).
    # One COPY statement, one writer: rows are stored in file order, which numbers repeats.
    cur.copy_expert(
        sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, FREEZE)").format(
            tables.staging(month), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        ),
        stream,
        size=1 << 20,
    )
    return cur.rowcount


def _copy_fast(
    conn: Connection, tables: Tables, month: Month, columns: list[str], mf: MonthFile, digests: Digests
) -> int:
    """COPY the file's rows with their plain ids; return the rows copied. The 16-byte digests go to `digests`,
    in file order. Raises _BadValue when COPY or the id pass meets a value it cannot vouch for."""
    from taxi_loader.arrowids import NotCanonical, RowIds  # Arrow is for stage only: merge starts faster

    ids = RowIds(mf.header, tables.taxi)

    def segment(blocks: list[bytes]) -> bytes:
        rows, raw = ids.prefixed(b"".join(blocks))
        digests.add(raw)
        return rows

    def segments() -> Iterator[bytes]:
        blocks, size = [], 0
        for block in mf.chunks():
            blocks.append(block)
            size += len(block)
            if size >= SEGMENT_BYTES:
                yield segment(blocks)
                blocks, size = [], 0
        if blocks:
            yield segment(blocks)

    try:
        return _threaded_copy(conn, tables, month, columns, segments())
    except (NotCanonical, *_COPY_DATA_ERRORS) as exc:
        raise _BadValue(str(exc)) from None


def _threaded_copy(conn: Connection, tables: Tables, month: Month, columns: list[str], chunks: Iterator[bytes]) -> int:
    """COPY `chunks` into the month's staging table; return the rows copied.

    A thread produces the chunks (reads the file, computes the ids) while this one sends the previous chunk
    (psycopg2 lets go of the GIL while it sends), so the file's own work costs little beyond PostgreSQL's
    parsing. A failure of the producer is raised here as itself.
    """
    failures: list[BaseException] = []

    def produced() -> Generator[bytes, None, None]:
        try:
            yield from prefetched(chunks, depth=1)
        except BaseException as exc:
            failures.append(exc)  # psycopg2 reports it as a failed COPY: raised again below
            raise

    stream = produced()
    try:
        with conn.cursor() as cur:
            return _copy(cur, tables, month, columns, ChunkStream(stream))
    except BaseException as exc:
        cause = failures[0] if failures else exc
        if cause is not exc:
            conn.rollback()
            raise cause from None
        raise
    finally:
        stream.close()  # the producer thread ends here, whatever COPY did


def _copy_parquet(
    conn: Connection, tables: Tables, month: Month, path: Path, digests: Digests, max_rejects: str
) -> tuple[int, Rejects, FileStats, list[str]]:
    """COPY a Parquet month: its typed, coerced rows with their plain ids (`batches.MonthTables`, which sets
    aside the rows that do not fit), written as CSV a batch at a time. Returns the rows copied, the rejects,
    the file's figures and its unknown columns (not read at all)."""
    import pyarrow as pa  # Arrow is for stage only: merge starts faster
    import pyarrow.csv as pacsv

    from taxi_loader.batches import MonthTables

    taxi = tables.taxi
    month_tables = MonthTables(path, taxi, taxi.filename(str(month)), digests, max_rejects=max_rejects)
    create_staging(conn, tables, month, 0, logged=_partition_missing(conn, tables, month))
    # PostgreSQL's timestamp has no zone: hand it the wall times the files hold.
    copied = staged_columns(taxi)
    zoneless = pa.schema(
        [
            f.with_type(pa.timestamp("us")) if pa.types.is_timestamp(f.type) else f
            for f in (month_tables.schema.field(c.name) for c in copied)
        ]
    )
    options = pacsv.WriteOptions(include_header=False)

    def chunks() -> Iterator[bytes]:
        for table in month_tables:
            out = io.BytesIO()
            pacsv.write_csv(table.select(zoneless.names).cast(zoneless), out, options)
            yield out.getvalue()

    columns = [c.db_name for c in copied]
    try:
        staged = _threaded_copy(conn, tables, month, columns, chunks())
    except _COPY_DATA_ERRORS as exc:  # a value the coercion let through and PostgreSQL refuses
        raise _refused(path.name, exc) from None
    return staged, month_tables.rejects, month_tables.stats, month_tables.extra


def _copy_validated(
    conn: Connection, tables: Tables, month: Month, mf: MonthFile, digests: Digests, max_rejects: str
) -> tuple[int, Rejects]:
    """COPY the rows the Python validator accepts, with their plain ids (digests to `digests`); return the rows
    copied and the rejects."""
    taxi, rejects = tables.taxi, Rejects(max_rejects, mf.path.name)
    key = [(i, c.kind) for i, c in enumerate(taxi.columns) if c.name in taxi.key_fields]
    key.sort(key=lambda item: taxi.key_fields.index(taxi.columns[item[0]].name))

    def good_rows() -> Iterator[bytes]:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        batch: list[str] = []  # ids, handed to `digests` a batch at a time like the fast path's segments
        for item in validated_rows(mf):
            if isinstance(item, Reject):
                rejects.append(item)
                continue
            batch.append(row_id("".join(value_text(item[i], kind) for i, kind in key)))
            w.writerow([batch[-1], *item])
            if len(batch) == 20_000:
                digests.add(bytes.fromhex("".join(batch)))
                batch.clear()
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
        digests.add(bytes.fromhex("".join(batch)))
        yield buf.getvalue().encode()

    # In a producer thread like the fast path, so that the file's own failure (a truncated gzip after the bad
    # value) is raised as itself, not as the failed COPY psycopg2 would report.
    columns = [ROW_ID.db_name] + [c.db_name for c in taxi.columns]
    try:
        return _threaded_copy(conn, tables, month, columns, good_rows()), rejects
    except _COPY_DATA_ERRORS as exc:  # a value the validator let through and PostgreSQL refuses
        raise _refused(mf.path.name, exc) from None


def _refused(name: str, exc: Exception) -> BadData:
    """A value the loader's own checks let through and PostgreSQL refused: the file's fault, exit 5."""
    return BadData(f"{name}: PostgreSQL refused a value: {' '.join(str(exc).split())}")


def _number_repeats(cur: Cursor, tables: Tables, month: Month, digests: Digests) -> int:
    """Give the k-th (k > 1) staged row of each key its own id, md5(key_text || '|' || k); return how many.

    The repeated ids are found from the digests of the COPY's rows (`arrowids.Digests`, bounded memory);
    their rows are read in the table's physical order, which is file order (one COPY statement into a
    table created in the same transaction). The key text is PostgreSQL's own rendering of the stored values.
    """
    repeated = sorted(digests.repeated())
    if not repeated:
        return 0
    stg = tables.staging(month)
    pin_text_forms(cur)
    # A table made in this transaction has no statistics: PostgreSQL would take the ids' test for a match on
    # every row and compile the scan (measured: 50 ms of a 0.2 s scan of 1.37M rows).
    cur.execute("SET LOCAL jit = off")
    cur.execute(
        sql.SQL(
            "SELECT s.ctid::text, s.unique_row_id, {} FROM {} s WHERE s.unique_row_id = ANY(%s) ORDER BY s.ctid"
        ).format(key_text_sql(tables.taxi, "s"), stg),
        (repeated,),
    )
    seen: dict[str, int] = {}
    tids, ids = [], []
    for tid, rid, key in cur.fetchall():
        seen[rid] = seen.get(rid, 0) + 1
        if seen[rid] > 1:
            tids.append(tid)
            ids.append(row_id(key, seen[rid]))
    cur.execute(
        sql.SQL("""
        UPDATE {} s SET unique_row_id = v.id FROM unnest(%s::tid[], %s::text[]) AS v(tid, id)
        WHERE s.ctid = v.tid""").format(stg),
        (tids, ids),
    )
    return len(tids)
