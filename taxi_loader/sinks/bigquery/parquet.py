"""A month's file as a typed Parquet file with unique_row_id and filename: the Google Cloud path's input.

One streaming pass of `batches.MonthTables` (the same validation as the PostgreSQL path and the same
identity, tested equal to PostgreSQL's), written in row groups so memory stays bounded.
Exact repeats get their k-th ids as on PostgreSQL: the pass keeps the 16-byte md5 of every row in temporary
files (`arrowids.Digests`), and when some repeat, a second pass over the Parquet file renumbers just those
rows.

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
import pyarrow.parquet as pq

from taxi_loader.arrowids import Digests
from taxi_loader.batches import BATCH, MonthTables, arrow_schema
from taxi_loader.contract import REJECTS_COLUMNS, reject_rows
from taxi_loader.errors import BadData
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
    """
    part = target.with_name(target.name + ".part")
    with Digests() as digests:
        try:
            try:
                result = _write(source, taxi, month, part, digests, max_rejects, fast=True)
            except pa.ArrowInvalid:
                digests.clear()
                result = _write(source, taxi, month, part, digests, max_rejects, fast=False)
        except BaseException:  # a Parquet month over --max-rejects stops mid-write: no half file stays
            part.unlink(missing_ok=True)
            raise
        try:
            check_rejects(result.rejects, result.rows_read, max_rejects, taxi.filename(month))
        except BadData:
            part.unlink(missing_ok=True)
            raise
        repeats = digests.repeated()
    if repeats:
        result.rows_repeated, result.rows_dropped = _renumber(part, taxi, repeats, drop_duplicates)
        result.rows_written -= result.rows_dropped
    os.replace(part, target)
    return result


def _write(
    source: Path, taxi: TaxiType, month: str, part: Path, digests: Digests, max_rejects: str, fast: bool
) -> ParquetResult:
    """One pass: Parquet rows with plain md5 ids into `part`, their 16-byte digests into `digests`."""
    tables = MonthTables(source, taxi, taxi.filename(month), digests, fast, max_rejects)
    with pq.ParquetWriter(part, tables.schema, compression="zstd") as writer:
        for table in tables:
            writer.write_table(table)
    stats = tables.stats
    return ParquetResult(stats.data_lines, tables.rows, 0, 0, tables.rejects, stats.size, stats.sha256)


def _renumber(path: Path, taxi: TaxiType, repeats: set[str], drop_duplicates: bool) -> tuple[int, int]:
    """Give the k-th occurrence of each repeated id (file order) md5(key_text || '|' || k), or drop it."""
    seen: dict[str, int] = {}
    repeated = dropped = 0
    out = path.with_name(path.name + ".renumbered")
    source = pq.ParquetFile(path, pre_buffer=False)
    with pq.ParquetWriter(out, source.schema_arrow, compression="zstd") as writer:
        for batch in source.iter_batches(batch_size=BATCH, use_threads=False):
            ids = batch.column(0).to_pylist()
            keep = [True] * len(ids)
            for i, rid in enumerate(ids):
                if rid not in repeats:
                    continue
                seen[rid] = seen.get(rid, 0) + 1
                if seen[rid] == 1:
                    continue
                repeated += 1
                if drop_duplicates:
                    keep[i] = False
                    dropped += 1
                    continue
                row = batch.slice(i, 1).to_pylist()[0]
                text = key_text(taxi, row) + REPEAT_SEPARATOR + str(seen[rid])
                ids[i] = hashlib.md5(text.encode("utf-8")).hexdigest()
            table = pa.Table.from_batches([batch]).set_column(
                0, source.schema_arrow.field(0), pa.array(ids, pa.string())
            )
            writer.write_table(table.filter(pa.array(keep)))
    os.replace(out, path)
    return repeated, dropped
