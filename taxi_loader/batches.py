"""A month's file as typed Arrow tables of the contract, each row with its id: what the sinks that take Arrow
(BigQuery's Parquet, DuckDB) write, and what PostgreSQL's COPY reads of a Parquet month.

A Parquet month (the TLC's) is already typed: `parquet_reader` streams it and coerces each column. A CSV
month is read in one streaming pass, a block at a time. Fast path: Arrow's CSV reader parses and types every
value in C++ (like PostgreSQL's COPY on the other sink); it raises ArrowInvalid on a value that does not
parse, and the caller redoes the pass with `fast=False`: the shared Python validation
(`reader.validated_rows`), which sets bad rows aside with their reasons. The ids are the plain md5 of each
row's key text (`arrowids`); repeats are numbered by the caller once the whole file is in, from the 16-byte
digests this pass hands to `arrowids.Digests`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from taxi_loader.arrowids import Digests, hex_ids, key_texts, md5_digests
from taxi_loader.contract import main_columns
from taxi_loader.parquet_reader import TYPED, ParquetMonthFile
from taxi_loader.reader import ChunkStream, FileStats, MonthFile, Reject, Rejects, prefetched, validated_rows
from taxi_loader.source import is_parquet
from taxi_loader.taxis import Column, Kind, TaxiType

BATCH = 50_000  # rows per batch of the validating pass
BLOCK_BYTES = 2 << 20  # of CSV per batch of the fast path
ARROW_TYPE = {
    Kind.CODE: pa.string(),  # as the course's tables keep codes
    Kind.INT: pa.int64(),
    Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),  # the files carry no zone: read as UTC
    Kind.FLOAT: pa.float64(),
    Kind.TEXT: pa.string(),
    Kind.COUNT: pa.int64(),
    Kind.INSTANT: pa.timestamp("us", tz="UTC"),
}
# How the CSV reader parses each kind: the typed batches' types (`parquet_reader.TYPED`: codes as integers,
# which checks them, text after; counts as the 32-bit integers PostgreSQL and DuckDB keep, a bigger one
# sends the file to the validating pass), times to the second as the files write them.
_CSV_IN = {**TYPED, Kind.TIMESTAMP: pa.timestamp("s")}
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


class MonthTables:
    """One pass over a month's file: iterate it for contract tables (unique_row_id, filename, the taxi type's
    columns); afterwards `rows`, `rejects` and `stats` tell what it read.

    Every row's 16-byte digest goes to `digests`, in file order. Iterating raises ArrowInvalid (fast path
    only) on a value that does not parse: start a new pass with `fast=False`.
    """

    def __init__(
        self,
        path: Path,
        taxi: TaxiType,
        filename: str,
        digests: Digests,
        fast: bool = True,
        max_rejects: str | None = None,
    ):
        self.path, self.taxi, self.filename, self.digests, self.fast = path, taxi, filename, digests, fast
        self.max_rejects = max_rejects  # a Parquet month stops reading once its rejects pass it
        self.schema = arrow_schema(main_columns(taxi))
        self.rows = 0
        self.extra: list[str] = []  # the file's columns the taxi type does not know (not read)
        self.rejects = Rejects(max_rejects, path.name)
        self.stats = FileStats()
        self.last_digests = b""  # the 16-byte digests of the last table yielded, concatenated

    def __iter__(self) -> Iterator[pa.Table]:
        if is_parquet(self.path):
            with ParquetMonthFile(self.path, self.taxi, self.max_rejects) as pf:
                self.extra = pf.header.extra
                yield from self._tables(pf.batches())
                self.rejects, self.stats = pf.rejects, pf.stats
            return
        with MonthFile(self.path, self.taxi) as mf:
            self.extra = mf.header.extra
            if self.fast:  # Arrow parses the next batch in a thread of its own while this one takes the ids
                # closed here, inside the file's block: the thread ends before the file closes
                with contextlib.closing(prefetched(_typed_batches(mf, self.taxi))) as batches:
                    yield from self._tables(batches)
            else:
                yield from self._tables(_validated_batches(mf, self.taxi, self.rejects))
            self.stats = mf.stats

    def _tables(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.Table]:
        key = [self.taxi.column(f) for f in self.taxi.key_fields]
        for batch in batches:
            raw = md5_digests(key_texts([batch.column(c.name) for c in key], [c.kind for c in key]))
            self.digests.add(raw)
            self.last_digests = raw
            self.rows += batch.num_rows
            yield self._table(hex_ids(raw), batch)

    def _table(self, ids: pa.Array, batch: pa.RecordBatch) -> pa.Table:
        filenames = pc.fill_null(pa.nulls(len(ids), pa.string()), self.filename)
        columns = [batch.column(c.name) for c in self.taxi.columns]
        arrays = [ids, filenames]
        arrays += [
            a if a.type == ARROW_TYPE[c.kind] else a.cast(ARROW_TYPE[c.kind])
            for a, c in zip(columns, self.taxi.columns, strict=True)
        ]
        return pa.Table.from_arrays(arrays, schema=self.schema)


def _typed_batches(mf: MonthFile, taxi: TaxiType) -> Iterator[pa.RecordBatch]:
    """The file's data rows as typed Arrow batches in spec order; ArrowInvalid on a value that does not parse."""
    names = list(mf.header.names)
    wanted = {c.name: n for n, c in zip(names, mf.header.columns, strict=True) if c is not None}
    present = [c for c in taxi.columns if c.name in wanted]
    reader = pacsv.open_csv(
        ChunkStream(mf.chunks()),
        read_options=pacsv.ReadOptions(column_names=names, block_size=BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            column_types={wanted[c.name]: _CSV_IN[c.kind] for c in present},
            include_columns=[wanted[c.name] for c in present],
            timestamp_parsers=["%Y-%m-%d %H:%M:%S"],
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    floats = [wanted[c.name] for c in present if c.kind is Kind.FLOAT]
    for batch in reader:
        # Arrow reads `NaN`, `inf` and `1e400` (as inf), which the validating pass rejects, as the Parquet
        # reader does: that pass takes the file (nulls pass here).
        for name in floats:
            if pc.all(pc.is_finite(batch.column(name))).as_py() is False:
                raise pa.ArrowInvalid(f"a value of {name} that is not a finite number")
        if batch.num_rows:
            yield pa.RecordBatch.from_arrays(
                [
                    batch.column(wanted[c.name]) if c.name in wanted else pa.nulls(batch.num_rows, ARROW_TYPE[c.kind])
                    for c in taxi.columns
                ],
                names=[c.name for c in taxi.columns],
            )


def _validated_batches(mf: MonthFile, taxi: TaxiType, rejects: Rejects) -> Iterator[pa.RecordBatch]:
    """The same batches from the shared Python validation; rejected rows go to `rejects`."""
    kinds = [c.kind for c in taxi.columns]
    types = [_CSV_IN[k] if k is Kind.CODE else ARROW_TYPE[k] for k in kinds]
    names = [c.name for c in taxi.columns]
    columns: list[list[Any]] = [[] for _ in kinds]
    for item in validated_rows(mf):
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        for values, value, kind in zip(columns, item, kinds, strict=True):
            values.append(None if value is None else _CONVERT[kind](value))
        if len(columns[0]) >= BATCH:
            yield pa.RecordBatch.from_arrays([pa.array(v, t) for v, t in zip(columns, types, strict=True)], names=names)
            columns = [[] for _ in kinds]
    if columns[0]:
        yield pa.RecordBatch.from_arrays([pa.array(v, t) for v, t in zip(columns, types, strict=True)], names=names)
