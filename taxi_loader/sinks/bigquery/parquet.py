"""A month's file as a typed Parquet file with unique_row_id and filename: the Google Cloud path's input.

One streaming pass with the same validation as the PostgreSQL path (`reader.validated_rows`) and the same
identity (`identity.py`, tested equal to PostgreSQL's), written in row groups so memory stays bounded.
Exact repeats get their k-th ids as on PostgreSQL: the pass keeps the 16-byte md5 of every row in temporary
files (`arrowids.Digests`), and when some repeat, a second pass over the Parquet file renumbers just those
rows.

Types: codes as STRING (as the course's tables keep them), counts as INT64, times as TIMESTAMP (UTC, the
files carry no zone), distances and money as FLOAT64: the same doubles PostgreSQL holds, so the id's text
forms agree on both sinks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from taxi_loader.arrowids import Digests, hex_ids, key_texts, md5_digests
from taxi_loader.contract import REJECTS_COLUMNS, main_columns
from taxi_loader.errors import BadData
from taxi_loader.identity import REPEAT_SEPARATOR, key_text
from taxi_loader.reader import DEFAULT_MAX_REJECTS, ChunkStream, MonthFile, Reject, check_rejects, validated_rows
from taxi_loader.taxis import Column, Kind, TaxiType

BATCH = 50_000
ARROW_TYPE = {
    Kind.CODE: pa.string(),
    Kind.INT: pa.int64(),
    Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    Kind.FLOAT: pa.float64(),
    Kind.TEXT: pa.string(),
    Kind.COUNT: pa.int64(),
    Kind.INSTANT: pa.timestamp("us", tz="UTC"),
}
_CONVERT: dict[Kind, Callable[[str], Any]] = {
    Kind.CODE: int,
    Kind.INT: int,
    Kind.FLOAT: float,
    Kind.TEXT: str,
    Kind.TIMESTAMP: lambda v: datetime.fromisoformat(v + "+00:00"),
}


def arrow_schema(columns: tuple[Column, ...]) -> pa.Schema:
    """The Arrow schema of a table of the contract (names as the files spell them)."""
    return pa.schema([pa.field(c.name, ARROW_TYPE[c.kind], nullable=not c.required) for c in columns])


def rejects_table(filename: str, rejects: list[Reject]) -> pa.Table:
    """A month's rejected rows as a table of the rejects contract."""
    values = {
        "filename": [filename] * len(rejects),
        "line": [r.line for r in rejects],
        "column_name": [r.column for r in rejects],
        "reason": [r.reason for r in rejects],
        "raw_line": [r.raw for r in rejects],
    }
    return pa.Table.from_pydict(values, schema=arrow_schema(REJECTS_COLUMNS))


@dataclass
class ParquetResult:
    rows_read: int
    rows_written: int
    rows_repeated: int
    rows_dropped: int
    rejects: list[Reject]
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

    Fast path: Arrow's CSV reader parses and types every value in C++ (like PostgreSQL's COPY on the other
    sink). When it meets a bad value, the pass is redone with the shared Python validation, which sets the
    bad rows aside with their reasons.
    """
    part = target.with_name(target.name + ".part")
    with Digests() as digests:
        try:
            result = _write(source, taxi, month, part, digests, fast=True)
        except pa.ArrowInvalid:
            digests.clear()
            result = _write(source, taxi, month, part, digests, fast=False)
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


def _write(source: Path, taxi: TaxiType, month: str, part: Path, digests: Digests, fast: bool) -> ParquetResult:
    """One pass: Parquet rows with plain md5 ids into `part`, their 16-byte digests into `digests`."""
    schema = arrow_schema(main_columns(taxi))
    rejects: list[Reject] = []
    written = 0
    with (
        MonthFile(source, taxi) as mf,
        pq.ParquetWriter(part, schema, compression="zstd") as writer,
    ):
        batches = _arrow_batches(mf, taxi) if fast else _validated_batches(mf, taxi, rejects)
        for batch in batches:
            key = [taxi.column(f) for f in taxi.key_fields]
            raw = md5_digests(key_texts([batch.column(c.name) for c in key], [c.kind for c in key]))
            digests.add(raw)
            writer.write_table(_output_table(schema, hex_ids(raw), taxi.filename(month), batch, taxi))
            written += len(raw) // 16
        stats = mf.stats
    return ParquetResult(stats.data_lines, written, 0, 0, rejects, stats.size, stats.sha256)


def _arrow_batches(mf: MonthFile, taxi: TaxiType):
    """The file's data rows as typed Arrow batches in spec order; ArrowInvalid on a value that does not parse."""
    arrow_in = {
        Kind.CODE: pa.int64(),
        Kind.INT: pa.int64(),
        Kind.TIMESTAMP: pa.timestamp("s"),
        Kind.FLOAT: pa.float64(),
        Kind.TEXT: pa.string(),
    }
    names = list(mf.header.names)
    wanted = {c.name: n for n, c in zip(names, mf.header.columns, strict=True) if c is not None}
    reader = pacsv.open_csv(
        ChunkStream(mf.chunks()),
        read_options=pacsv.ReadOptions(column_names=names, block_size=2 << 20),
        parse_options=pacsv.ParseOptions(newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            column_types={wanted[c.name]: arrow_in[c.kind] for c in taxi.columns},
            include_columns=[wanted[c.name] for c in taxi.columns],
            timestamp_parsers=["%Y-%m-%d %H:%M:%S"],
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    for batch in reader:
        if batch.num_rows:
            yield pa.RecordBatch.from_arrays(
                [batch.column(wanted[c.name]) for c in taxi.columns], names=[c.name for c in taxi.columns]
            )


def _validated_batches(mf: MonthFile, taxi: TaxiType, rejects: list[Reject]):
    """The same batches from the shared Python validation; rejected rows go to `rejects`."""
    kinds = [c.kind for c in taxi.columns]
    types = [pa.int64() if k is Kind.CODE else ARROW_TYPE[k] for k in kinds]
    columns: list[list] = [[] for _ in kinds]
    for item in validated_rows(mf):
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        for values, value, kind in zip(columns, item, kinds, strict=True):
            values.append(None if value is None else _CONVERT[kind](value))
        if len(columns[0]) >= BATCH:
            yield pa.RecordBatch.from_arrays(
                [pa.array(v, t) for v, t in zip(columns, types, strict=True)], names=[c.name for c in taxi.columns]
            )
            columns = [[] for _ in kinds]
    if columns[0]:
        yield pa.RecordBatch.from_arrays(
            [pa.array(v, t) for v, t in zip(columns, types, strict=True)], names=[c.name for c in taxi.columns]
        )


def _output_table(schema: pa.Schema, ids: pa.Array, filename: str, batch: pa.RecordBatch, taxi: TaxiType) -> pa.Table:
    arrays = [ids, pa.array([filename] * len(ids), pa.string())]
    arrays += [batch.column(c.name).cast(ARROW_TYPE[c.kind]) for c in taxi.columns]
    return pa.Table.from_arrays(arrays, schema=schema)


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
