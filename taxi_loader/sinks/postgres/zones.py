"""The taxi zone lookup on PostgreSQL: replaced whole in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg2 import sql
from psycopg2.extras import execute_values

from taxi_loader.zones import ZONE_COLUMNS, ZONES_TABLE, Zone

from .connect import Connection, one
from .ddl import column_defs, ensure_schema, relation_exists, xact_lock


def replace_zones(conn: Connection, schema: str, zones: Sequence[Zone]) -> None:
    """Make `zones` the whole of <schema>.taxi_zone_lookup: created when missing, emptied and filled in one
    transaction, so a reader sees the old rows or the new ones."""
    table = sql.Identifier(schema, ZONES_TABLE)
    with conn.cursor() as cur:
        ensure_schema(cur, schema)
        xact_lock(cur, "zones", schema)  # two replacements at once (two flows' first tasks) take turns
        cur.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
                table, sql.SQL(", ").join(column_defs(ZONE_COLUMNS)), sql.Identifier(ZONE_COLUMNS[0].db_name)
            )
        )
        cur.execute(sql.SQL("DELETE FROM {}").format(table))
        execute_values(cur, sql.SQL("INSERT INTO {} VALUES %s").format(table).as_string(cur), zones)
    conn.commit()


def zone_count(conn: Connection, schema: str) -> int | None:
    """The rows of <schema>.taxi_zone_lookup; None when there is no such table."""
    table = sql.Identifier(schema, ZONES_TABLE)
    with conn.cursor() as cur:
        if not relation_exists(cur, table):
            return None
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
        return int(one(cur)[0])
