"""A month's file as a typed Parquet file with unique_row_id and filename: the Google Cloud path's input.

One streaming pass of `batches.MonthTables` (the same validation as the PostgreSQL path and the same
identity, tested equal to PostgreSQL's) into a temporary Arrow file, then one pass from it into the Parquet
file, in row groups, so memory stays bounded. Exact repeats get their k-th ids as on PostgreSQL: the first
pass keeps the 16-byte md5 of every row in a temporary file (`arrowids.Digests`); the second renumbers just
the repeats' later occurrences.

Types: codes as STRING (as the course's tables keep them), counts as INT64, times as TIMESTAMP (UTC, the
files carry no zone), distances and money as FLOAT64: the same doubles PostgreSQL holds, so the id's text
forms agree on every sink.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc  # noqa: F401 (pa.ipc)
import pyarrow.parquet as pq

from taxi_loader.arrowids import Digests
from taxi_loader.batches import MonthTables, arrow_schema
from taxi_loader.contract import REJECTS_COLUMNS, ROW_ID, reject_rows
from taxi_loader.identity import REPEAT_SEPARATOR, key_text
from taxi_loader.reader import DEFAULT_MAX_REJECTS, Rejects, check_rejects
from taxi_loader.taxis import TaxiType


def rejects_table(filename: str, rejects: Rejects) -> pa.Table:
    """A month's rejected rows as a table of the rejects contract."""
    columns = list(zip(*reject_rows(filename, rejects), strict=True)) or [() for _ in REJECTS_COLUMNS]
    values = {c.name: list(v) for c, v in zip(REJECTS_COLUMNS, columns, strict=True)}
    return pa.Table.from_pydict(values, schema=arrow_schema(REJECTS_COLUMNS))


@dataclass
class ParquetResult:
    rows_read: int
    rows_written: int
    rows_repeated: int
    rows_dropped: int
    rejects: Rejects
    source_size: int
    source_sha256: str


def write_month_parquet(
    source: Path,
    taxi: TaxiType,
    month: str,
    target: Path,
    max_rejects: str = DEFAULT_MAX_REJECTS,
    drop_duplicates: bool = False,
) -> ParquetResult:
    """Validate `source` and write it to `target` as typed Parquet with final ids; raise BadData over the limit.

    A CSV month: Arrow's CSV reader parses and types every value in C++ (like PostgreSQL's COPY on the other
    sink); when it meets a bad value, the pass is redone with the shared Python validation, which sets the bad
    rows aside with their reasons. A Parquet month is coerced column by column (`parquet_reader`).

    The pass writes its rows to a temporary Arrow file (LZ4, cheap to write and read back); once the repeats
    are known, one more pass gives them their ids and writes the Parquet file: the rows are compressed once.
    """
    part = target.with_name(target.name + ".part")
    rows = target.with_name(target.name + ".arrow.part")  # the pass's rows, before the repeats' final ids
    try:
        with Digests() as digests:
            try:
                result = _read(source, taxi, month, rows, digests, max_rejects, fast=True)
            except pa.ArrowInvalid:
                digests.clear()
                result = _read(source, taxi, month, rows, digests, max_rejects, fast=False)
            check_rejects(result.rejects, result.rows_read, max_rejects, taxi.filename(month))
            repeats = digests.repeated()
        result.rows_repeated, result.rows_dropped = _write(rows, part, taxi, repeats, drop_duplicates)
        result.rows_written -= result.rows_dropped
    except BaseException:  # a month over --max-rejects, or any failure: no half file stays
        part.unlink(missing_ok=True)
        raise
    finally:
        rows.unlink(missing_ok=True)
    os.replace(part, target)
    return result


# Rows per row group of the Parquet file: the reader's batches are ~10,000 rows, which as row groups cost
# twice the writing time (per-group work, worse compression) and make BigQuery read 150 groups for a month.
# 65,536 rows are ~15 MB of typed columns held at a time.
ROW_GROUP_ROWS = 1 << 16


def _read(
    source: Path, taxi: TaxiType, month: str, rows: Path, digests: Digests, max_rejects: str, fast: bool
) -> ParquetResult:
    """One pass over the file: its rows with plain md5 ids into the Arrow file `rows`, their 16-byte digests
    into `digests`."""
    tables = MonthTables(source, taxi, taxi.filename(month), digests, fast, max_rejects)
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_file(str(rows), tables.schema, options=options) as writer:
        for table in tables:
            writer.write_table(table)
    stats = tables.stats
    return ParquetResult(stats.data_lines, tables.rows, 0, 0, tables.rejects, stats.size, stats.sha256)


def _write(rows: Path, target: Path, taxi: TaxiType, repeats: set[str], drop_duplicates: bool) -> tuple[int, int]:
    """The Parquet file of the Arrow file `rows`, in row groups of ROW_GROUP_ROWS, the k-th occurrence of each
    repeated id (file order) given md5(key_text || '|' || k), or dropped. Returns (repeated, dropped)."""
    seen: dict[str, int] = {}
    counts = [0, 0]
    wanted = pa.array(sorted(repeats), pa.string())
    with pa.OSFile(str(rows)) as file, pa.ipc.open_file(file) as reader:  # read, not mapped: RSS stays low
        schema = reader.schema
        # Statistics only for the pickup, the column BigQuery partitions by: computing them for every column
        # costs a tenth of the write and serves no reader of this file. No dictionary for the ids, each of which
        # is unique: Parquet would build one per row group only to give it up (measured: the write 5% faster,
        # the file 2% smaller).
        dictionary = [name for name in schema.names if name != ROW_ID.name]
        with pq.ParquetWriter(
            target, schema, compression="zstd", write_statistics=[taxi.pickup], use_dictionary=dictionary
        ) as writer:
            group: list[pa.RecordBatch] = []
            size = 0
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                group.append(batch)
                size += batch.num_rows
                if size >= ROW_GROUP_ROWS or i == reader.num_record_batches - 1:
                    table = pa.Table.from_batches(group, schema)
                    if repeats:
                        table = _renumbered(table, taxi, wanted, seen, drop_duplicates, counts)
                    writer.write_table(table)
                    group, size = [], 0
    return counts[0], counts[1]


def _renumbered(
    table: pa.Table, taxi: TaxiType, wanted: pa.Array, seen: dict[str, int], drop_duplicates: bool, counts: list[int]
) -> pa.Table:
    """`table` with the ids of repeats after their first occurrence renumbered (or those rows dropped);
    `seen` counts each repeated id so far, `counts` adds (repeated, dropped)."""
    ids = table.column(0).combine_chunks()
    hit = pc.is_in(ids, value_set=wanted)  # a few rows in thousands: first occurrences and repeats
    hits = pc.indices_nonzero(hit).to_pylist()
    new: list[str | None] = []  # per hit: its new id, None for a first occurrence
    for i in hits:
        rid = ids[i].as_py()
        seen[rid] = seen.get(rid, 0) + 1
        if seen[rid] == 1:
            new.append(None)
            continue
        row = table.slice(i, 1).to_pylist()[0]
        new.append(hashlib.md5((key_text(taxi, row) + REPEAT_SEPARATOR + str(seen[rid])).encode()).hexdigest())
    changed = sum(n is not None for n in new)
    counts[0] += changed
    if not changed:
        return table
    if drop_duplicates:
        counts[1] += changed
        keep = pc.replace_with_mask(pc.invert(hit), hit, pa.array([n is None for n in new]))
        return table.filter(keep)
    renumbered = [n if n is not None else ids[i].as_py() for i, n in zip(hits, new, strict=True)]
    return table.set_column(0, table.schema.field(0), pc.replace_with_mask(ids, hit, pa.array(renumbered)))
