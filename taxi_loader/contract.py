"""The table contract every sink keeps, described once as data.

- A main table `<taxi>_tripdata`: the system columns (`SYSTEM_COLUMNS`: unique_row_id, filename), then the
  taxi type's source columns (`taxis.py`).
- A rejects table `<taxi>_tripdata_rejects` (`REJECTS_COLUMNS`): the rows that could not be loaded.
- A ledger `taxi_loader_ledger` (`LEDGER_COLUMNS`): one row per load, what `status` and `backfill` read.

Each sink derives its DDL or schema from these (PostgreSQL: `sinks/postgres/ddl.py`, BigQuery:
`sinks/bigquery/bq.py`, Arrow and Parquet: `batches.py`, DuckDB: `sinks/duckdb/ddl.py`), mapping each `Kind`
to a type of its own.
See docs/architecture.md for the whole contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taxi_loader import __version__
from taxi_loader.errors import ConfigError
from taxi_loader.taxis import Column, Kind, TaxiType

if TYPE_CHECKING:
    from taxi_loader.reader import FileStats, Reject, Rejects

ROW_ID = Column("unique_row_id", Kind.TEXT, required=True)
FILENAME = Column("filename", Kind.TEXT)
SYSTEM_COLUMNS = (ROW_ID, FILENAME)

REJECTS_COLUMNS = (
    Column("filename", Kind.TEXT, required=True),
    Column("line", Kind.COUNT, required=True),  # CSV: the header is line 1, as an editor counts; Parquet: the row
    Column("column_name", Kind.TEXT),  # None: the line as a whole (wrong number of fields)
    Column("reason", Kind.TEXT, required=True),
    Column("raw_line", Kind.TEXT),
)

LEDGER_TABLE = "taxi_loader_ledger"
LEDGER_COLUMNS = (
    Column("sink", Kind.TEXT, required=True),
    Column("taxi", Kind.TEXT, required=True),
    Column("month", Kind.TEXT, required=True),  # YYYY-MM
    Column("filename", Kind.TEXT, required=True),
    Column("source", Kind.TEXT),  # the URL or path the file came from
    Column("source_size", Kind.COUNT),
    Column("source_sha256", Kind.TEXT),
    Column("rows_read", Kind.COUNT),
    Column("rows_rejected", Kind.COUNT),
    Column("rows_repeated", Kind.COUNT),
    Column("rows_inserted", Kind.COUNT),
    Column("rows_present", Kind.COUNT),
    Column("rows_suspicious", Kind.COUNT),
    Column("rows_after", Kind.COUNT),  # rows of this file in the table after the load
    Column("started_at", Kind.INSTANT),
    Column("finished_at", Kind.INSTANT),
    Column("status", Kind.TEXT, required=True),  # staged, succeeded, failed, interrupted
    Column("error", Kind.TEXT),
    Column("loader_version", Kind.TEXT),
)

ERROR_CHARS = 2000  # of a failure's message kept in the ledger's `error`

# Ledger statuses. 'staged' is a load between its two steps; the others are how a load ended.
STAGED, SUCCEEDED, FAILED, INTERRUPTED = "staged", "succeeded", "failed", "interrupted"


def held_whole(previous: dict[str, Any] | None, size: int, sha256: str, rows_of_file: int) -> bool:
    """Whether the month's last successful load (`previous`, its ledger row) was of this very file, left every
    row it kept under the file's name, and the table still holds them all: then loading the file again could
    add nothing (ids are a function of the file's content) and is skipped. Rows deleted since, another file,
    or rows the table held under another file's name (whose deletion the count here would not see): it loads.
    (Stage asks `skippable` too.)
    """
    if not previous:
        return False
    kept = (previous.get("rows_read") or 0) - (previous.get("rows_rejected") or 0)
    return (
        previous.get("source_size") == size
        and previous.get("source_sha256") == sha256
        and kept > 0
        and previous.get("rows_after") == kept == rows_of_file
    )


def skippable(previous: dict[str, Any], latest_load_id: int | None, max_rejects: str) -> bool:
    """What stage asks beyond `held_whole` before it skips a file: that `previous` is the month's latest load
    (a later one, failed, may have left another file's rejects in the rejects table), and that its rejects are
    within today's --max-rejects (a stricter limit must refuse the file as a load would)."""
    from taxi_loader.reader import allowed_rejects

    read, rejected = previous.get("rows_read") or 0, previous.get("rows_rejected") or 0
    return previous.get("load_id") == latest_load_id and rejected <= allowed_rejects(max_rejects, read)


def main_columns(taxi: TaxiType) -> tuple[Column, ...]:
    """The columns of `taxi`'s main table, in order: the system columns, then the source columns."""
    return SYSTEM_COLUMNS + taxi.columns


def columns_to_add(
    taxi: TaxiType, existing: Iterable[str], table: str, elsewhere: str, wrong_types: Sequence[str] = ()
) -> list[Column]:
    """The contract's columns an existing main table lacks, which a load adds at its end: the TLC's later ones
    (`Column.optional`), NULL for the rows the table holds. Every sink's one rule.

    Raises ConfigError, rows untouched, when it lacks a column every file has or a column is of a type the sink
    found wrong (`wrong_types`, already described): it is then no table of this taxi type. `elsewhere` is the
    sink's other place to load into ("choose another --schema").
    """
    have = {name.lower() for name in existing}
    missing = [c for c in main_columns(taxi) if c.db_name not in have]
    wrong = [c.db_name for c in missing if not c.optional] + list(wrong_types)
    if wrong:
        raise ConfigError(
            f"table {table} exists, but these of its columns are missing or of another type: {', '.join(wrong)}; "
            f"it is not a {taxi.name} table taxi-loader can load into: rename it, or {elsewhere} (its rows were "
            "not touched)"
        )
    return missing


def reject_rows(filename: str, rejects: Iterable[Reject]) -> Iterator[tuple[Any, ...]]:
    """The rejects table's rows for a file's rejected rows, in `REJECTS_COLUMNS` order.

    A raw line with NUL bytes, which no sink's text type can hold, is stored escaped, losslessly (Python's
    unicode_escape: `\\x00`, and `\\\\` for a backslash), and its reason says so.
    """
    return ((filename, r.line, r.column, *_storable(r.reason, r.raw)) for r in rejects)


def _storable(reason: str, raw: str | None) -> tuple[str, str | None]:
    if raw is None or "\x00" not in raw:
        return reason.replace("\x00", "\\x00"), raw
    escaped = raw.encode("unicode_escape").decode("ascii")
    return reason.replace("\x00", "\\x00") + " (raw line escaped: it holds NUL bytes)", escaped


def ledger_row(sink: str, taxi: TaxiType, month: str, status: str, **values: Any) -> dict[str, Any]:
    """A ledger row: which load it is, its status and the loader's version, and `values` for other columns."""
    unknown = set(values) - {c.name for c in LEDGER_COLUMNS}
    assert not unknown, f"not ledger columns: {unknown}"
    who = {"sink": sink, "taxi": taxi.name, "month": month, "filename": taxi.filename(month)}
    return {**who, **values, "status": status, "loader_version": __version__}


# What stage learns of a file, as ledger columns (`file_figures`); a file recognised as loaded already takes
# them from that load's row (`figures_of`).
FILE_FIGURES = ("source_size", "source_sha256", "rows_read", "rows_rejected", "rows_repeated")


def figures_of(load: dict[str, Any]) -> dict[str, Any]:
    """The file's figures of a ledger row (a dict of its columns)."""
    return {k: load[k] for k in FILE_FIGURES}


def file_figures(stats: FileStats, rejects: Rejects, repeated: int) -> dict[str, Any]:
    """What stage learnt of the file, as ledger values (`FILE_FIGURES`)."""
    return {
        "source_size": stats.size,
        "source_sha256": stats.sha256,
        "rows_read": stats.data_lines,
        "rows_rejected": len(rejects),
        "rows_repeated": repeated,
    }


@dataclass(frozen=True)
class LoadRecord:
    """The last finished load of one (taxi, month) as a sink's ledger tells it: what `status` shows and what
    `backfill` decides a skip by."""

    taxi: str
    month: str
    status: str
    rows: int | None  # rows of the month's file in the table after the load
    source_size: int | None
    source_sha256: str | None
    finished_at: str | None  # ISO 8601, seconds
    source: str | None = None  # the URL or path of the file

    @property
    def format(self) -> str | None:
        """'parquet' (the TLC's files) or 'csv' (the course's mirror), as the file's name says; None when the
        ledger does not know the file (BigQuery's loads of an earlier version recorded only their object)."""
        if not self.source or self.source.startswith("gs://"):
            return None
        return "parquet" if self.source.split("?")[0].endswith(".parquet") else "csv"

    def loaded_from(self, size: int | None, sha256: str | None) -> bool:
        """Whether this load succeeded from a file of this size (and checksum, when it is known)."""
        if self.status != SUCCEEDED or size is None or self.source_size != size:
            return False
        return not sha256 or self.source_sha256 == sha256
