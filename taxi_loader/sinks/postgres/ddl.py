"""The PostgreSQL side of the table contract: names, DDL, locks and the SQL fragments the steps share.

Every table's columns come from `contract.py` and `taxis.py` through `PG_TYPE`; identifiers are composed
with psycopg2.sql, values are always parameters (or, in DDL, literals composed by psycopg2.sql).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import psycopg2
from psycopg2 import sql

from taxi_loader.contract import FILENAME, LEDGER_COLUMNS, LEDGER_TABLE, REJECTS_COLUMNS, columns_to_add, main_columns
from taxi_loader.months import Month
from taxi_loader.taxis import Column, Kind, TaxiType

from .connect import Connection, commit_unflushed, one

# The PostgreSQL type of each kind: for the trip columns, the types the DE Zoomcamp flows create.
PG_TYPE = {
    Kind.CODE: "text",
    Kind.INT: "integer",
    Kind.TIMESTAMP: "timestamp",
    Kind.FLOAT: "double precision",
    Kind.TEXT: "text",
    Kind.COUNT: "bigint",
    Kind.INSTANT: "timestamptz",
}


# The types of an existing table's column that take the kind's values (format_type()'s spelling): the course's
# own, and the near ones a table made by hand may have (varchar, bigint, numeric, timestamp(0)).
_TAKES = {
    Kind.CODE: ("text", "character varying", "character"),
    Kind.TEXT: ("text", "character varying", "character"),
    Kind.INT: ("integer", "bigint", "numeric"),
    Kind.COUNT: ("bigint", "numeric"),
    Kind.FLOAT: ("double precision", "numeric", "real"),
    Kind.TIMESTAMP: ("timestamp without time zone", "timestamp("),
    Kind.INSTANT: ("timestamp with time zone", "timestamp("),
}


def _takes(kind: Kind, type_name: str) -> bool:
    return any(type_name == t or type_name.startswith(t.rstrip("(") + "(") for t in _TAKES[kind]) and (
        kind is not Kind.TIMESTAMP or "with time zone" not in type_name
    )


@dataclass(frozen=True)
class Tables:
    """The qualified names of one taxi type's tables in one schema, and of its months' staging tables."""

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
        return self.ident(LEDGER_TABLE)

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

    @property
    def pickup(self) -> sql.Identifier:
        """The pickup column, which partitions the main table."""
        return sql.Identifier(self.taxi.column(self.taxi.pickup).db_name)


def column_defs(columns: Iterable[Column]) -> list[sql.Composable]:
    """`name type [NOT NULL]` for each column, names as PostgreSQL keeps them (lower-case)."""
    return [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.db_name), sql.SQL(PG_TYPE[c.kind]), sql.SQL(" NOT NULL" if c.required else "")
        )
        for c in columns
    ]


def column_list(taxi: TaxiType, alias: str | None = None) -> sql.Composed:
    """The main table's column names, in order, optionally qualified by `alias`."""
    names = [c.db_name for c in main_columns(taxi)]
    return sql.SQL(", ").join(sql.Identifier(alias, n) if alias else sql.Identifier(n) for n in names)


# ---------------------------------------------------------------- locks


def _lock_key(*parts: str) -> int:
    # A stable 63-bit advisory-lock key; crc32 of two halves keeps it deterministic across processes.
    text = "\x1f".join(parts)
    return (zlib.crc32(text.encode()) << 31) ^ zlib.crc32(text[::-1].encode())


def xact_lock(cur: psycopg2.extensions.cursor, *parts: str) -> None:
    """Take the advisory lock named by `parts` until the end of the transaction."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(*parts),))


def month_xact_lock(cur: psycopg2.extensions.cursor, tables: Tables, month: Month) -> None:
    """The month's lock, for this transaction: two loads of one month never stage or merge at once."""
    xact_lock(cur, "month", tables.schema, tables.taxi.name, str(month))


def attach_xact_lock(cur: psycopg2.extensions.cursor, tables: Tables) -> None:
    """The main table's partition-bounds lock, for this transaction: one month at a time changes them."""
    xact_lock(cur, "attach", tables.schema, tables.taxi.table)


@contextmanager
def month_lock(conn: Connection, tables: Tables, month: Month) -> Iterator[None]:
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


# ---------------------------------------------------------------- tables


def ensure_schema(cur: psycopg2.extensions.cursor, schema: str) -> None:
    """Create the schema when it is missing, under the schema's DDL lock (two first loads at once take turns).

    Only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even for a schema that
    exists, and USAGE and CREATE on its schema are all a DBA need grant a loading role."""
    xact_lock(cur, "ddl", schema)
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))


def ensure_support_tables(conn: Connection, tables: Tables) -> None:
    """Create the schema, the ledger and the rejects table when missing (contract.py's columns; PostgreSQL
    adds a load_id to the ledger and a recorded_at to the rejects)."""
    with conn.cursor() as cur:
        ensure_schema(cur, tables.schema)
        cur.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (load_id bigserial PRIMARY KEY, {})").format(
                tables.ledger, sql.SQL(", ").join(column_defs(LEDGER_COLUMNS))
            )
        )
        cur.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (sink, taxi, month, load_id)").format(
                sql.Identifier(f"{LEDGER_TABLE}_month_idx"), tables.ledger
            )
        )
        cur.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, recorded_at timestamptz NOT NULL DEFAULT now())").format(
                tables.rejects, sql.SQL(", ").join(column_defs(REJECTS_COLUMNS))
            )
        )
    conn.commit()


def unique_key_ddl(tables: Tables, table: sql.Identifier, name: str) -> dict[str, sql.Composed]:
    """The indexes of the main table, or of one of its partitions (`table`, index names from `name`): each
    index's name and the statement that creates it.

    The unique key is (unique_row_id, pickup), because a partitioned table's unique key must hold its
    partition column; the id is the md5 of a key that includes the pickup time, so this is exactly
    uniqueness of unique_row_id. Its "C" collation compares bytes, which is all hex needs and cheaper than a
    linguistic order.
    """
    unique, by_file = f"{name}_unique_row_id_key", f"{name}_filename_idx"
    return {
        unique: sql.SQL('CREATE UNIQUE INDEX {} ON {} (unique_row_id COLLATE "C", {})').format(
            sql.Identifier(unique), table, tables.pickup
        ),
        by_file: sql.SQL("CREATE INDEX {} ON {} (filename)").format(sql.Identifier(by_file), table),
    }


def main_table_ddl(tables: Tables) -> list[sql.Composed]:
    """DDL for a new main table: the contract's columns with the course's types, partitioned by pickup month.

    Each loaded month gets its own partition, which the merge fills and indexes in bulk before attaching it
    (with the same `unique_key_ddl`); the default partition holds the pickups outside every loaded month.
    """
    return [
        sql.SQL("CREATE TABLE {} ({}) PARTITION BY RANGE ({})").format(
            tables.main, sql.SQL(", ").join(column_defs(main_columns(tables.taxi))), tables.pickup
        ),
        sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(tables.default_partition, tables.main),
        *unique_key_ddl(tables, tables.main, tables.taxi.table).values(),
    ]


@dataclass(frozen=True)
class Layout:
    """What kind of main table the merge writes to."""

    partitioned: bool  # created by taxi-loader: partitioned by pickup month
    unique_index: bool  # some unique index guards unique_row_id (false for a course-created table)


def ensure_main_table(conn: Connection, tables: Tables) -> Layout:
    """Create the main table when missing and tell its layout; a course-created table is accepted as it is."""
    with conn.cursor() as cur:
        xact_lock(cur, "ddl", tables.schema, tables.taxi.table)
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
        assert found is not None  # created just above
        partitioned, unique = found
        _add_later_columns(cur, tables)
    conn.commit()
    return Layout(partitioned, unique)


def _add_later_columns(cur: psycopg2.extensions.cursor, tables: Tables) -> None:
    """Give a main table created before the TLC added a column (`Column.optional`) that column, at its end,
    NULL for the rows it holds; on a partitioned table PostgreSQL adds it to every partition."""
    cur.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (tables.main.as_string(cur),),
    )
    have = dict(cur.fetchall())
    wrong_types = [
        f"{c.db_name} ({have[c.db_name]}, not {PG_TYPE[c.kind]})"
        for c in main_columns(tables.taxi)
        if c.db_name in have and not _takes(c.kind, have[c.db_name])
    ]
    table = f"{tables.schema}.{tables.taxi.table}"
    for column in columns_to_add(tables.taxi, have, table, "choose another --schema", wrong_types):
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {}").format(tables.main, column_defs([column])[0]))


def relation_exists(cur: psycopg2.extensions.cursor, ident: sql.Identifier) -> bool:
    """Whether the table (or other relation) `ident` exists."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (ident.as_string(cur),))
    return bool(one(cur)[0])


def staged_columns(taxi: TaxiType) -> list[Column]:
    """The columns a staging table is created with and COPY fills: the main table's but filename, which
    `add_filename` adds once the rows are in."""
    return [c for c in main_columns(taxi) if c is not FILENAME]


def staging_ddl(tables: Tables, month: Month, extra: int, logged: bool) -> sql.Composed:
    """CREATE TABLE of the month's staging table: its `staged_columns`, then `extra` text columns `_extra_<i>`
    for the file's unknown columns.

    `logged`: the table may become the month's partition. Otherwise UNLOGGED: its rows are written once and
    read once, they need no WAL.
    """
    defs = column_defs(staged_columns(tables.taxi))
    defs += [sql.SQL("{} text").format(sql.Identifier(f"_extra_{i}")) for i in range(extra)]
    return sql.SQL("CREATE {}TABLE {} ({})").format(
        sql.SQL("" if logged else "UNLOGGED "), tables.staging(month), sql.SQL(", ").join(defs)
    )


def add_filename(cur: psycopg2.extensions.cursor, tables: Tables, month: Month) -> None:
    """Give the month's staging table, its rows copied, the filename column: the file's name is the column's
    default, which PostgreSQL keeps once in the catalog for the rows already there instead of in every row
    (a 1.37M-row partition is 12% smaller, and every later scan of it that much shorter). A rewrite of the
    table (VACUUM FULL, CLUSTER, a column's type changed) stores the value in each row again; the partition's
    `filename` is its last column, which costs a row routed through the parent a conversion."""
    cur.execute(
        sql.SQL("ALTER TABLE {} ADD COLUMN {} DEFAULT {}").format(
            tables.staging(month),
            column_defs([FILENAME])[0],
            sql.Literal(tables.taxi.filename(str(month))),
        )
    )


def create_staging(conn: Connection, tables: Tables, month: Month, extra: int, logged: bool) -> None:
    """(Re)create the month's staging table in this transaction (see `staging_ddl`)."""
    with conn.cursor() as cur:
        month_xact_lock(cur, tables, month)
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(tables.staging(month)))
        cur.execute(staging_ddl(tables, month, extra, logged))


def drop_staging(conn: Connection, tables: Tables, month: Month) -> bool:
    """Drop the month's staging table; return whether there was one."""
    with conn.cursor() as cur:
        month_xact_lock(cur, tables, month)
        existed = relation_exists(cur, tables.staging(month))
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(tables.staging(month)))
    commit_unflushed(conn)  # a crash that undid it would leave a staging table the next stage drops
    return existed


# ---------------------------------------------------------------- SQL fragments


def key_text_sql(taxi: TaxiType, alias: str) -> sql.Composed:
    """The key text of a row: the key fields as PostgreSQL's CAST(x AS text), NULL as '' (the course's rule;
    `identity.py` is its Python twin)."""
    # concat() renders each argument with its type's output function, as ::text does, without the casts'
    # per-value overhead (measured: a quarter of the key text's cost).
    return sql.SQL("concat({})").format(
        sql.SQL(", ").join(sql.Identifier(alias, taxi.column(f).db_name) for f in taxi.key_fields)
    )


def month_filter(tables: Tables, month: Month, alias: str | None, inside: bool) -> sql.Composed:
    """Whether a row's pickup falls in `month` (`inside`), or not; a NULL pickup is outside."""
    name = tables.taxi.column(tables.taxi.pickup).db_name
    pickup = sql.Identifier(alias, name) if alias else sql.Identifier(name)
    bounds = (sql.Literal(month.first_day.isoformat()), sql.Literal(month.next().first_day.isoformat()))
    test = sql.SQL("{p} >= {a}::timestamp AND {p} < {b}::timestamp").format(p=pickup, a=bounds[0], b=bounds[1])
    return test if inside else sql.SQL("({}) IS NOT TRUE").format(test)


def pin_text_forms(cur: psycopg2.extensions.cursor) -> None:
    """Pin, for this transaction, the text forms the identity depends on, whatever the server's defaults."""
    cur.execute("SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL extra_float_digits = 1")
