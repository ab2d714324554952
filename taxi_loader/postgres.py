"""The PostgreSQL sink: connection, tables, stage, dedup-merge, ledger and cleanup.

Table contract (DESIGN.md): `<schema>.<taxi>_tripdata` with unique_row_id, filename and the course's columns;
one staging table per (taxi, month) with the main table's columns and each row's id; `<taxi>_tripdata_rejects`;
the ledger `taxi_loader_ledger`.
Identifiers are composed with psycopg2.sql, values are always parameters.
"""

from __future__ import annotations

import csv
import io
import queue
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from taxi_loader import __version__
from taxi_loader.errors import ConfigError, TransientError
from taxi_loader.identity import row_id, value_text
from taxi_loader.months import Month
from taxi_loader.reader import (
    ChunkStream,
    Header,
    MonthFile,
    Reject,
    check_rejects,
    validated_rows,
)
from taxi_loader.source import RetryPolicy
from taxi_loader.taxis import PG_MAIN_TYPE, TaxiType

if TYPE_CHECKING:
    from taxi_loader.arrowids import Digests

LEDGER = "taxi_loader_ledger"

# ---------------------------------------------------------------- connection


def describe_target(db_url: str | None) -> str:
    """host:port/dbname of a connection string or URL, without the password, for messages."""
    try:
        params = psycopg2.extensions.parse_dsn(db_url or "")
    except psycopg2.ProgrammingError:
        return "the configured database"
    host = params.get("host") or "(PGHOST or local socket)"
    port = params.get("port") or "5432"
    db = params.get("dbname") or ""
    return f"{host}:{port}/{db}" if db else f"{host}:{port}"


_CONFIG_PROBLEMS = (
    "password authentication failed",
    "authentication failed",
    "does not exist",
    "no password supplied",
    "permission denied",
    "pg_hba.conf",
)


def connect(db_url: str | None, retry: RetryPolicy = RetryPolicy()) -> psycopg2.extensions.connection:
    """Open a connection; libpq's PG* variables apply when `db_url` leaves something out.

    Unreachable servers are retried with backoff, then TransientError; wrong credentials or a missing
    database are ConfigError at once. Messages name the host, never the password.
    """
    where = describe_target(db_url)
    try:
        params = psycopg2.extensions.parse_dsn(db_url or "")
    except psycopg2.ProgrammingError:
        raise ConfigError(
            "the database URL cannot be parsed; use postgresql://user:password@host:port/dbname"
        ) from None

    class _Unreachable(Exception):
        pass

    try:
        for attempt in retry.retrying((_Unreachable,)):
            with attempt:
                try:
                    conn = psycopg2.connect(
                        db_url or "", connect_timeout=max(1, int(retry.timeout)), application_name="taxi-loader"
                    )
                except psycopg2.OperationalError as exc:
                    text = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
                    if any(p in text for p in _CONFIG_PROBLEMS):
                        user = params.get("user") or "(PGUSER)"
                        raise ConfigError(
                            f"cannot log in to PostgreSQL at {where} as {user}: {_scrub(text, params)}; "
                            "check --db-url / TAXI_LOADER_DB_URL or the PG* variables"
                        ) from None
                    raise _Unreachable(_scrub(text, params)) from None
    except _Unreachable as exc:
        raise TransientError(
            f"PostgreSQL at {where} is unreachable after {retry.attempts} attempts ({exc}); "
            "start it or fix --db-url, then run the command again"
        ) from None
    conn.autocommit = False
    return conn


def _scrub(text: str, params: dict) -> str:
    password = params.get("password")
    return text.replace(password, "***") if password else text


# ---------------------------------------------------------------- names and DDL


@dataclass(frozen=True)
class Tables:
    """The qualified names of one taxi type's tables in one schema, and of its month's staging table."""

    schema: str
    taxi: TaxiType

    def ident(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    @property
    def main(self) -> sql.Identifier:
        return self.ident(self.taxi.table)

    @property
    def rejects(self) -> sql.Identifier:
        return self.ident(self.taxi.rejects_table)

    @property
    def ledger(self) -> sql.Identifier:
        return self.ident(LEDGER)

    @property
    def default_partition(self) -> sql.Identifier:
        return self.ident(f"{self.taxi.table}_pdefault")

    def partition_name(self, month: Month) -> str:
        return f"{self.taxi.table}_p{month.year:04d}_{month.mm}"

    def partition(self, month: Month) -> sql.Identifier:
        return self.ident(self.partition_name(month))

    def staging_name(self, month: Month) -> str:
        return self.taxi.staging_table(month)

    def staging(self, month: Month) -> sql.Identifier:
        return self.ident(self.staging_name(month))


def _lock_key(*parts: str) -> int:
    # A stable 63-bit advisory-lock key; crc32 of two halves keeps it deterministic across processes.
    text = "\x1f".join(parts)
    return (zlib.crc32(text.encode()) << 31) ^ zlib.crc32(text[::-1].encode())


def _xact_lock(cur, *parts: str) -> None:
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(*parts),))


def ensure_support_tables(conn, tables: Tables) -> None:
    """Create the schema, the ledger and the rejects table when missing."""
    with conn.cursor() as cur:
        _xact_lock(cur, "ddl", tables.schema)
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(tables.schema)))
        cur.execute(
            sql.SQL("""
            CREATE TABLE IF NOT EXISTS {ledger} (
                load_id bigserial PRIMARY KEY,
                sink text NOT NULL, taxi text NOT NULL, month text NOT NULL, filename text NOT NULL,
                source text, source_size bigint, source_sha256 text,
                rows_read bigint, rows_rejected bigint, rows_repeated bigint, rows_inserted bigint,
                rows_present bigint, rows_suspicious bigint, rows_after bigint,
                started_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz,
                status text NOT NULL, error text, loader_version text)""").format(ledger=tables.ledger)
        )
        cur.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (sink, taxi, month, load_id)").format(
                sql.Identifier(f"{LEDGER}_month_idx"), tables.ledger
            )
        )
        cur.execute(
            sql.SQL("""
            CREATE TABLE IF NOT EXISTS {rejects} (
                filename text NOT NULL, line bigint NOT NULL, column_name text, reason text NOT NULL,
                raw_line text, recorded_at timestamptz NOT NULL DEFAULT now())""").format(rejects=tables.rejects)
        )
    conn.commit()


def main_table_ddl(tables: Tables) -> list[sql.Composed]:
    """DDL for a new main table: the course's columns and types, partitioned by pickup month.

    Each loaded month gets its own partition, which the merge fills and indexes in bulk before attaching it;
    the default partition holds the pickups that fall outside every loaded month. The unique key is
    (unique_row_id, pickup), because a partitioned table's unique key must hold its partition column; the id
    is the md5 of a key that includes the pickup time, so this is exactly uniqueness of unique_row_id.
    Its "C" collation compares bytes, which is all hex needs and cheaper than a linguistic order.
    """
    taxi = tables.taxi
    pickup = sql.Identifier(taxi.column(taxi.pickup).db_name)
    cols = [sql.SQL("unique_row_id text"), sql.SQL("filename text")]
    cols += [sql.SQL("{} {}").format(sql.Identifier(c.db_name), sql.SQL(PG_MAIN_TYPE[c.kind])) for c in taxi.columns]
    return [
        sql.SQL("CREATE TABLE {} ({}) PARTITION BY RANGE ({})").format(tables.main, sql.SQL(", ").join(cols), pickup),
        sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(tables.default_partition, tables.main),
        sql.SQL('CREATE UNIQUE INDEX {} ON {} (unique_row_id COLLATE "C", {})').format(
            sql.Identifier(f"{taxi.table}_unique_row_id_key"), tables.main, pickup
        ),
        sql.SQL("CREATE INDEX {} ON {} (filename)").format(sql.Identifier(f"{taxi.table}_filename_idx"), tables.main),
    ]


@dataclass(frozen=True)
class Layout:
    """What kind of main table the merge writes to."""

    partitioned: bool  # created by taxi-loader: partitioned by pickup month
    unique_index: bool  # some unique index guards unique_row_id (false for a course-created table)


def ensure_main_table(conn, tables: Tables) -> Layout:
    """Create the main table when missing and tell its layout; a course-created table is accepted as it is."""
    with conn.cursor() as cur:
        _xact_lock(cur, "ddl", tables.schema, tables.taxi.table)
        # pg_class itself, not to_regclass(): a name looked up earlier in this session (stage does) can stay
        # cached as missing after another session created the table while we waited for the lock.
        layout = """
            SELECT c.relkind = 'p',
                   EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a
                             ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                           WHERE i.indrelid = c.oid AND i.indisunique AND a.attname = 'unique_row_id'
                             AND i.indpred IS NULL)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')"""
        cur.execute(layout, (tables.schema, tables.taxi.table))
        found = cur.fetchone()
        if found is None:
            for statement in main_table_ddl(tables):
                cur.execute(statement)
            cur.execute(layout, (tables.schema, tables.taxi.table))
            found = cur.fetchone()
        partitioned, unique = found
    conn.commit()
    return Layout(partitioned, unique)


def relation_exists(cur, ident: sql.Identifier) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (ident.as_string(cur),))
    return cur.fetchone()[0]


def staging_exists(cur, tables: Tables, month: Month) -> bool:
    return relation_exists(cur, tables.staging(month))


# ---------------------------------------------------------------- stage


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


def stage(conn, tables: Tables, month: Month, path: Path, source: str, max_rejects: str = "0.1%") -> StageResult:
    """Read the month's file in one streaming pass and COPY it, with each row's id, into its staging table.

    The staging table has the main table's columns. When the month has no partition yet, it is a logged
    table that dedup-merge indexes and attaches as the partition: the rows are written once. Otherwise it
    is unlogged, and the merge copies what is new.

    Fast path: the ids are computed as the file streams (`arrowids.RowIds`, in a thread of its own) and
    COPY parses and types every value. When either finds a value it cannot vouch for, the pass is redone
    in Python, which records each bad row in the rejects table with its line, column and reason. Too many
    rejects raise BadData. One transaction: on any failure the staging table is gone and the main table
    was never touched. The ledger gets a 'staged' row with the stats.
    """
    from taxi_loader.arrowids import Digests  # Arrow is for stage only: merge starts faster

    taxi = tables.taxi
    filename = taxi.filename(str(month))
    ensure_support_tables(conn, tables)
    started = datetime.now(UTC)
    with month_lock(conn, tables, month), Digests() as digests:
        try:
            with MonthFile(path, taxi) as mf:
                extra = mf.header.extra
                attachable = not extra and _partition_missing(conn, tables, month)
                columns = _create_staging(conn, tables, month, mf.header, logged=attachable)
                try:
                    staged = _copy_fast(conn, tables, month, columns, mf, digests)
                    rejects, stats, validated = [], mf.stats, False
                except _BadValue:
                    validated = True
            if validated:  # the validating pass copies the file again, into a new staging table
                conn.rollback()
                digests.clear()
                with MonthFile(path, taxi) as mf:
                    columns = _create_staging(conn, tables, month, mf.header, logged=attachable)
                    staged, rejects = _copy_validated(conn, tables, month, mf, digests)
                    stats = mf.stats
            check_rejects(rejects, stats.data_lines, max_rejects, filename)
            with conn.cursor() as cur:
                repeated = _number_repeats(cur, tables, month, digests)
                _record_staged(cur, tables, month, source, stats, rejects, repeated, started)
            conn.commit()
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


class _BadValue(Exception):
    """COPY or the id pass met a value it cannot vouch for: the validating pass takes over."""


# The ids are computed a segment at a time: big enough that Arrow's per-call costs vanish, small enough that
# the segments in flight (one being read, one queued, one being sent) and Arrow's work on one hold little
# memory. Measured: 2 MiB (about 14,000 rows) as fast as 8 MiB, with a peak of 160 MB instead of 290.
SEGMENT_BYTES = 2 << 20
_COPY_DATA_ERRORS = (
    psycopg2.DataError,
    psycopg2.errors.BadCopyFileFormat,
    psycopg2.errors.CharacterNotInRepertoire,
)


def _partition_missing(conn, tables: Tables, month: Month) -> bool:
    """Whether the month's rows can become a new partition: the main table is (or will be) taxi-loader's
    partitioned table and has no partition for the month yet."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT to_regclass(%s), to_regclass(%s)",
            (tables.main.as_string(cur), tables.partition(month).as_string(cur)),
        )
        main, partition = cur.fetchone()
        if main is None:
            return True
        cur.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = %s::regclass", (main,))
        return cur.fetchone()[0] and partition is None


def _create_staging(conn, tables: Tables, month: Month, header: Header, logged: bool) -> list[str]:
    """The month's staging table, in this transaction: the main table's columns (filename filled by default),
    then the file's unknown columns as text. Returns the COPY column list: unique_row_id, then the file's
    columns in the file's order.

    `logged`: the table may become the month's partition. Otherwise UNLOGGED: its rows are written once and
    read once, they need no WAL.
    """
    taxi, stg = tables.taxi, tables.staging(month)
    filename = taxi.filename(str(month))
    col_defs = [sql.SQL("unique_row_id text"), sql.SQL("filename text DEFAULT {}").format(sql.Literal(filename))]
    col_defs += [
        sql.SQL("{} {}").format(sql.Identifier(c.db_name), sql.SQL(PG_MAIN_TYPE[c.kind])) for c in taxi.columns
    ]
    extra = [f"_extra_{i}" for i in range(len(header.extra))]
    col_defs += [sql.SQL("{} text").format(sql.Identifier(name)) for name in extra]
    with conn.cursor() as cur:
        _xact_lock(cur, "month", tables.schema, taxi.name, str(month))
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(stg))
        cur.execute(
            sql.SQL("CREATE {} TABLE {} ({})").format(
                sql.SQL("" if logged else "UNLOGGED"), stg, sql.SQL(", ").join(col_defs)
            )
        )
    unknown = iter(extra)
    return ["unique_row_id"] + [c.db_name if c else next(unknown) for c in header.columns]


def _copy(cur, tables: Tables, month: Month, columns: list[str], stream: io.RawIOBase) -> int:
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


def _copy_fast(conn, tables: Tables, month: Month, columns: list[str], mf: MonthFile, digests: Digests) -> int:
    """COPY the file's rows with their plain ids; return the rows copied. The 16-byte digests go to `digests`,
    in file order. Raises _BadValue when COPY or the id pass meets a value it cannot vouch for.

    A thread reads the file and computes the ids of each segment while this one sends the previous segment
    (psycopg2 lets go of the GIL while it sends), so the ids cost little beyond PostgreSQL's own parsing.
    """
    from taxi_loader.arrowids import NotCanonical, RowIds  # Arrow is for stage only: merge starts faster

    ids = RowIds(mf.header, tables.taxi)
    work: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def segment(blocks: list[bytes]) -> bytes:
        rows, raw = ids.prefixed(b"".join(blocks))
        digests.add(raw)
        return rows

    def produce() -> None:
        try:
            blocks, size = [], 0
            for block in mf.chunks():
                blocks.append(block)
                size += len(block)
                if size >= SEGMENT_BYTES:
                    if not _put(work, segment(blocks), stop):
                        return
                    blocks, size = [], 0
            if blocks:
                _put(work, segment(blocks), stop)
            _put(work, None, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the COPY, which raises it
            _put(work, exc, stop)

    failures: list[BaseException] = []

    def segments() -> Iterator[bytes]:
        while (item := work.get()) is not None:
            if isinstance(item, BaseException):
                failures.append(item)  # psycopg2 reports it as a failed COPY: raised again below
                raise item
            yield item

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        with conn.cursor() as cur:
            return _copy(cur, tables, month, columns, ChunkStream(segments()))
    except BaseException as exc:
        cause = failures[0] if failures else exc
        if isinstance(cause, (NotCanonical, *_COPY_DATA_ERRORS)):
            raise _BadValue(str(cause)) from None
        if cause is not exc:
            conn.rollback()
            raise cause from None
        raise
    finally:
        stop.set()
        producer.join()


def _put(work: queue.Queue, item, stop: threading.Event) -> bool:
    """Queue `item` unless the COPY has stopped; return whether it was queued."""
    while not stop.is_set():
        try:
            work.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _copy_validated(conn, tables: Tables, month: Month, mf: MonthFile, digests: Digests) -> tuple[int, list[Reject]]:
    """COPY the rows the Python validator accepts, with their plain ids (digests to `digests`); return the rows
    copied and the rejects."""
    taxi, rejects = tables.taxi, []
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

    with conn.cursor() as cur:
        columns = ["unique_row_id"] + [c.db_name for c in taxi.columns]
        return _copy(cur, tables, month, columns, ChunkStream(good_rows())), rejects


def key_text_sql(taxi: TaxiType, alias: str) -> sql.Composed:
    """The key text of a row: the key fields as PostgreSQL's CAST(x AS text), NULL as '' (the course's rule)."""
    # concat() renders each argument with its type's output function, as ::text does, without the casts'
    # per-value overhead (measured: a quarter of the key text's cost).
    return sql.SQL("concat({})").format(
        sql.SQL(", ").join(sql.Identifier(alias, taxi.column(f).db_name) for f in taxi.key_fields)
    )


def _number_repeats(cur, tables: Tables, month: Month, digests: Digests) -> int:
    """Give the k-th (k > 1) staged row of each key its own id, md5(key_text || '|' || k); return how many.

    The repeated ids are found from the digests of the COPY's rows (`arrowids.Digests`, bounded memory);
    their rows are read in the table's physical order, which is file order (one COPY statement into a
    table created in the same transaction). The key text is PostgreSQL's own rendering of the stored values.
    """
    repeated = sorted(digests.repeated())
    if not repeated:
        return 0
    stg = tables.staging(month)
    cur.execute("SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL extra_float_digits = 1")
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


def _record_staged(
    cur, tables: Tables, month: Month, source: str, stats, rejects: list[Reject], repeated: int, started
) -> None:
    """The month's rejects (replacing an earlier stage's) and its 'staged' ledger row."""
    taxi = tables.taxi
    filename = taxi.filename(str(month))
    cur.execute(sql.SQL("DELETE FROM {} WHERE filename = %s").format(tables.rejects), (filename,))
    if rejects:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerows((filename, r.line, r.column, r.reason, r.raw) for r in rejects)
        buf.seek(0)
        cur.copy_expert(
            sql.SQL("COPY {} (filename, line, column_name, reason, raw_line) FROM STDIN WITH (FORMAT csv)").format(
                tables.rejects
            ),
            buf,
        )
    cur.execute(
        sql.SQL("""
        INSERT INTO {} (sink, taxi, month, filename, source, source_size, source_sha256, rows_read, rows_rejected,
                        rows_repeated, started_at, status, loader_version)
        VALUES ('postgres', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'staged', %s)""").format(tables.ledger),
        (
            taxi.name,
            str(month),
            filename,
            source,
            stats.size,
            stats.sha256,
            stats.data_lines,
            len(rejects),
            repeated,
            started,
            __version__,
        ),
    )


# ---------------------------------------------------------------- ledger and cleanup


def record_failure(conn, tables: Tables, month: Month, source: str | None, status: str, error: str) -> None:
    """Note a failed or interrupted load in the ledger (the month's 'staged' row, or a new row)."""
    conn.rollback()
    ensure_support_tables(conn, tables)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("""
            UPDATE {} SET status = %s, error = %s, finished_at = now()
            WHERE load_id = (SELECT max(load_id) FROM {} WHERE sink = 'postgres' AND taxi = %s AND month = %s
                             AND status = 'staged')""").format(tables.ledger, tables.ledger),
            (status, error[:2000], tables.taxi.name, str(month)),
        )
        if cur.rowcount == 0:
            cur.execute(
                sql.SQL("""
                INSERT INTO {} (sink, taxi, month, filename, source, finished_at, status, error, loader_version)
                VALUES ('postgres', %s, %s, %s, %s, now(), %s, %s, %s)""").format(tables.ledger),
                (
                    tables.taxi.name,
                    str(month),
                    tables.taxi.filename(str(month)),
                    source,
                    status,
                    error[:2000],
                    __version__,
                ),
            )
    conn.commit()


@contextmanager
def month_lock(conn, tables: Tables, month: Month) -> Iterator[None]:
    """Hold the month's lock for a whole load (stage and merge take it per transaction too)."""
    key = _lock_key("month", tables.schema, tables.taxi.name, str(month))
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (key,))
    conn.commit()
    try:
        yield
    finally:
        with suppress(psycopg2.Error), conn.cursor() as cur:
            conn.rollback()
            cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
            conn.commit()


def drop_staging(conn, tables: Tables, month: Month) -> bool:
    """Drop the month's staging table; return whether there was one."""
    with conn.cursor() as cur:
        _xact_lock(cur, "month", tables.schema, tables.taxi.name, str(month))
        existed = staging_exists(cur, tables, month)
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(tables.staging(month)))
    conn.commit()
    return existed


@contextmanager
def session(db_url: str | None, retry: RetryPolicy = RetryPolicy()):
    """A connection that is closed afterwards; database errors become TransientError naming the host."""
    conn = connect(db_url, retry)
    try:
        yield conn
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        what = "lost the connection to" if conn.closed else "a transient failure in"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise TransientError(
            f"{what} PostgreSQL at {describe_target(db_url)} ({detail}); run the command again"
        ) from None
    finally:
        with suppress(psycopg2.Error):
            conn.close()
