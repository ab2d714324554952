"""The PostgreSQL sink: connection, tables, stage, dedup-merge, ledger and cleanup.

Table contract (DESIGN.md): `<schema>.<taxi>_tripdata` with unique_row_id, filename and the course's columns;
one UNLOGGED staging table per (taxi, month); `<taxi>_tripdata_rejects`; the ledger `taxi_loader_ledger`.
Identifiers are composed with psycopg2.sql, values are always parameters.
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from taxi_loader import __version__
from taxi_loader.errors import BadData, ConfigError, TransientError, UsageError
from taxi_loader.months import Month
from taxi_loader.reader import ChunkStream, MonthFile, Reject, validated_rows
from taxi_loader.source import RetryPolicy
from taxi_loader.taxis import PG_MAIN_TYPE, PG_STAGE_TYPE, Kind, TaxiType

LEDGER = "taxi_loader_ledger"
REPEAT_SEPARATOR = "|"  # the k-th repeat of a key gets md5(key_text || '|' || k)
MERGE_WORK_MEM = "256MB"  # lets the merge sort and hash a month in memory instead of on disk

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

    def staging_name(self, month: Month) -> str:
        return f"{self.taxi.table}_staging_{month.year:04d}_{month.mm}"

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
    """CREATE TABLE and indexes for a new main table: the course's columns and types, plus two indexes.

    unique_row_id stays text, as in the course, but its unique index is on `unique_row_id::uuid`: an md5 in
    16 bytes instead of 33 makes the index half the size, and the merge, which inserts a month's keys in
    one sorted batch, measured faster with it. The filename index lets a re-run prove in one count that
    the month's rows are all still there.
    """
    t = tables.taxi.table
    cols = [sql.SQL("unique_row_id text NOT NULL"), sql.SQL("filename text")]
    cols += [
        sql.SQL("{} {}").format(sql.Identifier(c.db_name), sql.SQL(PG_MAIN_TYPE[c.kind])) for c in tables.taxi.columns
    ]
    return [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(tables.main, sql.SQL(", ").join(cols)),
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ((unique_row_id::uuid))").format(
            sql.Identifier(f"{t}_unique_row_id_key"), tables.main
        ),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (filename)").format(
            sql.Identifier(f"{t}_filename_idx"), tables.main
        ),
    ]


UUID_KEY, TEXT_KEY = "uuid", "text"


def ensure_main_table(conn, tables: Tables) -> str | None:
    """Create the main table when missing; return which unique index guards unique_row_id.

    UUID_KEY for the index taxi-loader creates, TEXT_KEY for a unique index on the column itself, None for
    a table the course's flows created (no index): that table is accepted as it is.
    """
    with conn.cursor() as cur:
        _xact_lock(cur, "ddl", tables.schema, tables.taxi.table)
        cur.execute("SELECT to_regclass(%s) IS NULL", (tables.main.as_string(cur),))
        if cur.fetchone()[0]:
            for statement in main_table_ddl(tables):
                cur.execute(statement)
        cur.execute(
            """
            SELECT CASE WHEN i.indexprs IS NULL THEN 'text' ELSE 'uuid' END
            FROM pg_index i
            WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indnatts = 1 AND i.indpred IS NULL
              AND ((i.indexprs IS NULL AND i.indkey[0] = (SELECT attnum FROM pg_attribute
                                                          WHERE attrelid = i.indrelid AND attname = 'unique_row_id'))
                   OR pg_get_indexdef(i.indexrelid) LIKE '%%((unique_row_id)::uuid)%%')
            ORDER BY 1 DESC LIMIT 1""",
            (tables.main.as_string(cur),),
        )
        found = cur.fetchone()
        return found[0] if found else None


def staging_exists(cur, tables: Tables, month: Month) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (tables.staging(month).as_string(cur),))
    return cur.fetchone()[0]


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


def parse_max_rejects(text: str) -> tuple[int | None, float | None]:
    """'100' is a count, '0.5%' or '0.005' a fraction of the data rows."""
    t = str(text).strip()
    try:
        if t.endswith("%"):
            return None, float(t[:-1]) / 100
        if "." in t:
            return None, float(t)
        return int(t), None
    except ValueError:
        raise UsageError(f"invalid --max-rejects {text!r}: give a count (100) or a fraction (0.1% or 0.001)") from None


def stage(conn, tables: Tables, month: Month, path: Path, source: str, max_rejects: str = "0.1%") -> StageResult:
    """Read the month's file in one streaming pass and COPY it into the month's own staging table.

    Fast path: COPY parses and types every value itself. When it finds a bad value, the pass is redone in
    Python, which records each bad row in the rejects table with its line, column and reason. Too many
    rejects raise BadData and leave every table as it was. The ledger gets a 'staged' row with the stats.
    """
    taxi = tables.taxi
    filename = taxi.filename(str(month))
    ensure_support_tables(conn, tables)
    started = datetime.now(UTC)
    stg = tables.staging(month)
    with conn.cursor() as cur:
        _xact_lock(cur, "month", tables.schema, taxi.name, str(month))
        with MonthFile(path, taxi) as mf:
            extra = mf.header.extra
            col_defs = [
                sql.SQL("{} {}").format(sql.Identifier(c.db_name), sql.SQL(PG_STAGE_TYPE[c.kind])) for c in taxi.columns
            ]
            col_defs += [sql.SQL("{} text").format(sql.Identifier(f"_extra_{i}")) for i in range(len(extra))]
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stg))
            cur.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(stg, sql.SQL(", ").join(col_defs)))
            extra_names = iter(f"_extra_{i}" for i in range(len(extra)))
            file_order = [sql.Identifier(c.db_name if c else next(extra_names)) for c in mf.header.columns]
            cur.execute("SAVEPOINT fast_copy")
            try:
                cur.copy_expert(
                    sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(stg, sql.SQL(", ").join(file_order)),
                    ChunkStream(mf.chunks()),
                    size=1 << 20,
                )
                staged, rejects, stats, validated = cur.rowcount, [], mf.stats, False
            except (psycopg2.DataError, psycopg2.errors.BadCopyFileFormat, psycopg2.errors.CharacterNotInRepertoire):
                cur.execute("ROLLBACK TO SAVEPOINT fast_copy")
                validated = True
        if validated:
            with MonthFile(path, taxi) as mf:
                staged, rejects = _copy_validated(cur, stg, taxi, mf)
                stats = mf.stats
        limit_count, limit_fraction = parse_max_rejects(max_rejects)
        allowed = limit_count if limit_count is not None else int(limit_fraction * stats.data_lines)
        if len(rejects) > allowed:
            conn.rollback()
            sample = "; ".join(
                f"line {r.line}" + (f" {r.column}" if r.column else "") + f": {r.reason}" for r in rejects[:3]
            )
            raise BadData(
                f"{filename}: {len(rejects)} of {stats.data_lines} rows rejected, more than --max-rejects "
                f"{max_rejects} allows; nothing was loaded. First: {sample}"
            )
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
                            started_at, status, loader_version)
            VALUES ('postgres', %s, %s, %s, %s, %s, %s, %s, %s, %s, 'staged', %s)""").format(tables.ledger),
            (
                taxi.name,
                str(month),
                filename,
                source,
                stats.size,
                stats.sha256,
                stats.data_lines,
                len(rejects),
                started,
                __version__,
            ),
        )
    conn.commit()
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


def _copy_validated(cur, stg: sql.Identifier, taxi: TaxiType, mf: MonthFile) -> tuple[int, list[Reject]]:
    rejects: list[Reject] = []

    def good_rows() -> Iterator[bytes]:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        n = 0
        for item in validated_rows(mf):
            if isinstance(item, Reject):
                rejects.append(item)
                continue
            w.writerow(item)
            n += 1
            if n % 20_000 == 0:
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue().encode()

    cols = sql.SQL(", ").join(sql.Identifier(c.db_name) for c in taxi.columns)
    cur.copy_expert(
        sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(stg, cols), ChunkStream(good_rows()), size=1 << 20
    )
    return cur.rowcount, rejects


# ---------------------------------------------------------------- identity in SQL


def key_text_sql(taxi: TaxiType, alias: str) -> sql.Composed:
    """The key text of a row: the key fields rendered as PostgreSQL's CAST(x AS text), NULL as ''.

    This is the course flow's expression; `identity.key_text` is its Python twin, tested against it.
    """
    return sql.SQL("concat({})").format(
        sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(alias, taxi.column(f).db_name)) for f in taxi.key_fields
        )
    )


# ---------------------------------------------------------------- dedup-merge


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

    Repeats of a key inside the file keep their own ids (the k-th gets md5(key || '|' || k)), or are dropped
    with `drop_duplicates`. The ledger's 'staged' row of the month becomes 'succeeded' with the counts.

    A re-run of a file whose last successful load had the same checksum, and whose rows are all still in the
    table (the count by filename matches the one recorded then), has nothing to insert: the ids are a
    function of the file's content, so the merge is skipped and every staged row reported as present.
    """
    taxi = tables.taxi
    filename = taxi.filename(str(month))
    ensure_support_tables(conn, tables)
    with conn.cursor() as cur:
        _xact_lock(cur, "month", tables.schema, taxi.name, str(month))
        if not staging_exists(cur, tables, month):
            raise UsageError(f"nothing staged for {taxi.name} {month}: run `taxi-loader stage` first")
        staged_load = _last_load(cur, tables, month, "staged")
        key = ensure_main_table(conn, tables)
        if key is None:
            # A course-created table has no unique key: serialize merges so NOT EXISTS stays true.
            cur.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(tables.main))
        # Pin the text forms the identity depends on, whatever the server's defaults are.
        cur.execute(
            "SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL extra_float_digits = 1; SET LOCAL jit = off;"
            "SET LOCAL work_mem = %s",
            (MERGE_WORK_MEM,),
        )
        previous = _last_load(cur, tables, month, "succeeded")
        cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE filename = %s").format(tables.main), (filename,))
        rows_of_file = cur.fetchone()[0]
        if (
            staged_load
            and previous
            and previous["source_sha256"] == staged_load["source_sha256"]
            and previous["rows_after"] == rows_of_file
            and not drop_duplicates
        ):
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(tables.staging(month)))
            staged, inserted, repeated = cur.fetchone()[0], 0, previous["rows_repeated"] or 0
            suspicious = previous["rows_suspicious"] or 0
        else:
            suspicious = _count_suspicious(cur, tables, month)
            cur.execute(_merge_sql(tables, month, key, drop_duplicates), {"filename": filename})
            staged, inserted, repeated = cur.fetchone()
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


def _last_load(cur, tables: Tables, month: Month, status: str) -> dict | None:
    cur.execute(
        sql.SQL("""
        SELECT load_id, source_sha256, rows_rejected, rows_repeated, rows_suspicious, rows_after FROM {}
        WHERE sink = 'postgres' AND taxi = %s AND month = %s AND status = %s
        ORDER BY load_id DESC LIMIT 1""").format(tables.ledger),
        (tables.taxi.name, str(month), status),
    )
    row = cur.fetchone()
    return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else None


def _merge_sql(tables: Tables, month: Month, key: str | None, drop_duplicates: bool) -> sql.Composed:
    taxi = tables.taxi
    # Codes are bigint in staging (so COPY validates them) and text in the main table, as in the course.
    select_cols = [
        sql.SQL("{}::text").format(sql.Identifier("s", c.db_name))
        if c.kind is Kind.CODE
        else sql.Identifier("s", c.db_name)
        for c in taxi.columns
    ]
    main_cols = [sql.Identifier("unique_row_id"), sql.Identifier("filename")] + [
        sql.Identifier(c.db_name) for c in taxi.columns
    ]
    # Only keys seen more than once are numbered: a window over every row would sort the whole month.
    keep = sql.SQL("WHERE n.rn IS NULL OR n.rn = 1") if drop_duplicates else sql.SQL("")
    # Inserting in key order keeps the b-tree's leaf pages hot instead of touching one at random per row.
    if key == UUID_KEY:
        guard, order = sql.SQL(""), sql.SQL("ORDER BY x.id::uuid ON CONFLICT ((unique_row_id::uuid)) DO NOTHING")
    elif key == TEXT_KEY:
        guard, order = sql.SQL(""), sql.SQL("ORDER BY x.id ON CONFLICT (unique_row_id) DO NOTHING")
    else:
        guard = sql.SQL("WHERE NOT EXISTS (SELECT 1 FROM {main} m WHERE m.unique_row_id = x.id)").format(
            main=tables.main
        )
        order = sql.SQL("")
    return sql.SQL("""
        WITH src AS MATERIALIZED (
            SELECT t.*, md5(t.k) AS h FROM (SELECT s.ctid AS tid, {key} AS k, {select_cols} FROM {stg} s) t),
        dup AS (SELECT h FROM src GROUP BY h HAVING count(*) > 1),
        numbered AS (
            SELECT tid, row_number() OVER (PARTITION BY h ORDER BY tid) AS rn FROM src WHERE h IN (SELECT h FROM dup)),
        x AS (
            SELECT CASE WHEN n.rn > 1 THEN md5(src.k || {sep} || n.rn) ELSE src.h END AS id, src.*
            FROM src LEFT JOIN numbered n ON n.tid = src.tid {keep}),
        ins AS (
            INSERT INTO {main} ({main_cols})
            SELECT x.id, %(filename)s, {x_cols} FROM x {guard} {order}
            RETURNING 1)
        SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM ins), (SELECT count(*) FROM numbered WHERE rn > 1)
    """).format(
        key=key_text_sql(taxi, "s"),
        stg=tables.staging(month),
        sep=sql.Literal(REPEAT_SEPARATOR),
        keep=keep,
        main=tables.main,
        select_cols=sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(e, sql.Identifier(c.db_name))
            for e, c in zip(select_cols, taxi.columns, strict=True)
        ),
        main_cols=sql.SQL(", ").join(main_cols),
        x_cols=sql.SQL(", ").join(sql.Identifier("x", c.db_name) for c in taxi.columns),
        guard=guard,
        order=order,
    )


def _count_suspicious(cur, tables: Tables, month: Month) -> int:
    """Rows that are loaded but worth a look: pickup outside the month, a negative amount, dropoff before pickup."""
    taxi = tables.taxi
    pickup, dropoff = (
        sql.Identifier(taxi.column(taxi.pickup).db_name),
        sql.Identifier(taxi.column(taxi.dropoff).db_name),
    )
    conds = [
        sql.SQL("{p} < %(start)s OR {p} >= %(end)s").format(p=pickup),
        sql.SQL("{d} < {p}").format(d=dropoff, p=pickup),
    ]
    conds += [sql.SQL("{} < 0").format(sql.Identifier(taxi.column(a).db_name)) for a in taxi.amount_fields]
    cur.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {}").format(tables.staging(month), sql.SQL(" OR ").join(conds)),
        {"start": month.first_day, "end": month.next().first_day},
    )
    return cur.fetchone()[0]


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


def drop_staging(conn, tables: Tables, month: Month) -> bool:
    """Drop the month's staging table; return whether there was one."""
    with conn.cursor() as cur:
        _xact_lock(cur, "month", tables.schema, tables.taxi.name, str(month))
        existed = staging_exists(cur, tables, month)
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(tables.staging(month)))
    conn.commit()
    return existed


@contextmanager
def session(db_url: str | None, retry: RetryPolicy = RetryPolicy()):
    """A connection that is closed afterwards; database errors become TransientError naming the host."""
    conn = connect(db_url, retry)
    try:
        yield conn
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        raise TransientError(
            f"lost the connection to PostgreSQL at {describe_target(db_url)} ({str(exc).strip()}); "
            "run the command again"
        ) from None
    finally:
        with suppress(psycopg2.Error):
            conn.close()
