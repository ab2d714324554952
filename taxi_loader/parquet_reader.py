"""Reading one month's Parquet file as the TLC publishes it: streamed a record batch at a time, columns
matched by name, every value coerced to the one type taxi-loader keeps for its column.

The TLC's files drift by era (tlc-parquet.md): names change case (`airport_fee` / `Airport_fee`), columns
appear (`cbd_congestion_fee` from 2025) or are written all-null with Arrow's `null` type, and the types of
one column change between files (`passenger_count` int64, then double, then int64 again; ids int64, then
int32; string, then large_string). Each value becomes its column's type losslessly or its row is rejected
with the reason, as the CSV path's validation does: a double 1.0 is the integer 1, 1.5 in an integer
column is a reject. Memory is bounded by one record batch, whatever the month's size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxi_loader.errors import BadData
from taxi_loader.reader import FileStats, Header, Reject, match_names
from taxi_loader.taxis import Column, Kind, TaxiType

# Rows per batch. Measured on a 2M-row High-Volume FHV month loaded into PostgreSQL: 8k rows with 64 KiB read
# buffers peak at 186 MB in 10.4 s; 16k rows at 218 MB; 64k rows with 1 MiB buffers at 307 MB in 15.8 s
# (smaller batches stay in the CPU's caches through coercion, ids and CSV writing). 6M rows: +8 MB.
BATCH_ROWS = 8 * 1024
# The types the typed batches carry, as the CSV path's fast reader gives them (batches._ARROW_IN): integer
# codes (they become text after their key text is taken), 32-bit counts as PostgreSQL and DuckDB keep them.
TYPED = {
    Kind.CODE: pa.int64(),
    Kind.INT: pa.int32(),
    Kind.TIMESTAMP: pa.timestamp("us"),
    Kind.FLOAT: pa.float64(),
    Kind.TEXT: pa.string(),
}
_BOUNDS = {Kind.CODE: (-(2**63), 2**63 - 1), Kind.INT: (-(2**31), 2**31 - 1)}
_INTEGER = r"^\s*[+-]?[0-9]+\s*$"
_NUMBER = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"


class ParquetMonthFile:
    """An open Parquet month file: `header` (its columns matched by name), `batches()` of typed rows in spec
    order, and afterwards `stats` and the `rejects` with their reasons."""

    def __init__(self, path: Path, taxi: TaxiType):
        self.path, self.taxi = path, taxi
        self.rejects: list[Reject] = []
        try:
            # No pre-buffering: a column chunk is read page by page, so a month in a single row group (the
            # 2022-era files) is not held whole in memory either.
            self._file = pq.ParquetFile(path, pre_buffer=False, buffer_size=64 << 10)
        except (pa.ArrowException, OSError) as exc:
            raise BadData(f"{path.name}: not a readable Parquet file ({exc})") from None
        schema = self._file.schema_arrow
        self.header: Header = match_names(schema.names, taxi, path.name)
        self.types = {c.name: schema.field(n).type for n, c in zip(schema.names, self.header.columns, strict=True) if c}
        self.stats = FileStats(size=path.stat().st_size, sha256=_sha256(path))

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The file's rows as typed batches (`TYPED`, spec order; a column the file lacks is all null). Rows
        with a value that does not fit its column go to `rejects` instead."""
        by_name = {c.name: n for n, c in zip(self.header.names, self.header.columns, strict=True) if c}
        present = [c for c in self.taxi.columns if c.name in by_name]
        first_row = 1
        try:
            for batch in self._file.iter_batches(batch_size=BATCH_ROWS, columns=[by_name[c.name] for c in present]):
                n = batch.num_rows
                columns, bad, reasons = {}, None, []
                for c in present:
                    values, wrong, reason = coerce(batch.column(by_name[c.name]), c)
                    columns[c.name] = values
                    if wrong is not None:
                        reasons.append((c, wrong, reason))
                        bad = wrong if bad is None else pc.or_(bad, wrong)
                arrays = [
                    columns[c.name] if c.name in columns else pa.nulls(n, TYPED[c.kind]) for c in self.taxi.columns
                ]
                typed = pa.RecordBatch.from_arrays(arrays, names=[c.name for c in self.taxi.columns])
                if bad is not None:
                    self._reject(batch, first_row, reasons)
                    typed = typed.filter(pc.invert(bad))
                first_row += n
                self.stats.data_lines += n
                if typed.num_rows:
                    yield typed
        except (pa.ArrowException, OSError) as exc:
            raise BadData(f"{self.path.name}: corrupt Parquet data after row {first_row - 1} ({exc})") from None

    def _reject(self, batch: pa.RecordBatch, first_row: int, reasons: list[tuple[Column, pa.Array, str]]) -> None:
        done: set[int] = set()
        for column, wrong, reason in reasons:
            for i in pc.indices_nonzero(wrong).to_pylist():
                if i in done:  # one reason per row: its first bad column, as the CSV path reports it
                    continue
                done.add(i)
                row = batch.slice(i, 1).to_pylist()[0]
                value = row[next(n for n, c in zip(self.header.names, self.header.columns, strict=True) if c is column)]
                self.rejects.append(
                    Reject(first_row + i, column.name, f"{reason}: {value!r}", json.dumps(row, default=str))
                )
        self.rejects.sort(key=lambda r: r.line)

    def __enter__(self) -> ParquetMonthFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()


def coerce(values: pa.Array, column: Column) -> tuple[pa.Array, pa.Array | None, str]:
    """`values` as `column`'s type (`TYPED`), the rows that cannot be (a boolean mask, None when all can) set
    to null, and the reason. Raises BadData when the column's type cannot become it at all."""
    kind, source = column.kind, values.type
    target = TYPED[kind]
    if pa.types.is_null(source):  # an all-null column, as pyarrow writes one
        return pa.nulls(len(values), target), None, ""
    if pa.types.is_dictionary(source):
        values = values.dictionary_decode()
        source = values.type
    if kind in (Kind.CODE, Kind.INT):
        low, high = _BOUNDS[kind]
        if pa.types.is_integer(source):
            wrong = pc.or_(pc.less(values, low), pc.greater(values, high))
            return _finish(values, wrong, target, "integer out of range")
        if pa.types.is_floating(source):
            whole = pc.and_(pc.is_finite(values), pc.equal(pc.floor(values), values))
            fits = pc.and_(pc.greater_equal(values, float(low)), pc.less_equal(values, float(high)))
            return _finish(values, pc.invert(pc.and_(whole, fits)), target, "not an integer")
        if pa.types.is_string(source) or pa.types.is_large_string(source):
            text = pc.utf8_trim_whitespace(values)
            blank = pc.equal(text, "")
            wrong = pc.invert(pc.match_substring_regex(text, _INTEGER))
            wrong = pc.and_(wrong, pc.invert(blank))
            ints = pc.cast(pc.if_else(pc.or_(wrong, blank), pa.scalar(None, text.type), text), pa.int64())
            out_of_range = pc.or_(pc.less(ints, low), pc.greater(ints, high))
            return _finish(ints, pc.or_(pc.fill_null(wrong, False), out_of_range), target, "not an integer")
    elif kind is Kind.FLOAT:
        if pa.types.is_integer(source) or pa.types.is_decimal(source):
            return pc.cast(values, target), None, ""
        if pa.types.is_floating(source):
            return _finish(values, pc.invert(pc.is_finite(values)), target, "not a finite number")
        if pa.types.is_string(source) or pa.types.is_large_string(source):
            text = pc.utf8_trim_whitespace(values)
            blank = pc.equal(text, "")
            wrong = pc.and_(pc.invert(pc.match_substring_regex(text, _NUMBER)), pc.invert(blank))
            floats = pc.cast(pc.if_else(pc.or_(wrong, blank), pa.scalar(None, text.type), text), target)
            return _finish(floats, pc.fill_null(wrong, False), target, "not a number")
    elif kind is Kind.TIMESTAMP:
        if pa.types.is_timestamp(source):
            if source.tz is not None:  # a zoned instant: the trip files' wall-clock time is New York's
                values = pc.local_timestamp(values)
            if source.unit == "ns":  # microseconds are kept; finer digits would be lost: rejected
                ns = pc.cast(values, pa.int64())
                return _finish(values, pc.not_equal(pc.remainder(ns, 1000), 0), target, "sub-microsecond time")
            return pc.cast(values, target), None, ""
        if pa.types.is_date(source):
            return pc.cast(pc.cast(values, pa.timestamp("s")), target), None, ""
        if pa.types.is_string(source) or pa.types.is_large_string(source):
            parsed = pc.strptime(values, format="%Y-%m-%d %H:%M:%S", unit="us", error_is_null=True)
            wrong = pc.and_(pc.is_null(parsed), pc.is_valid(values))
            return _finish(parsed, wrong, target, "not a timestamp YYYY-MM-DD HH:MM:SS")
    elif kind is Kind.TEXT:
        if pa.types.is_string(source) or pa.types.is_large_string(source):
            text = pc.cast(values, target)
            if pc.any(pc.match_substring(text, "\x00")).as_py():  # PostgreSQL's text cannot hold NUL
                text = pc.replace_substring(text, "\x00", "")
            return text, None, ""
        if pa.types.is_integer(source) or pa.types.is_floating(source) or pa.types.is_boolean(source):
            return pc.cast(values, target), None, ""
    raise BadData(f"column {column.name} holds {source}, which cannot become {kind} ({target})")


def _finish(
    values: pa.Array, wrong: pa.Array, target: pa.DataType, reason: str
) -> tuple[pa.Array, pa.Array | None, str]:
    """`values` cast to `target` with the `wrong` rows nulled; `wrong` is None when no row is."""
    wrong = pc.fill_null(wrong, False)
    if not pc.any(wrong).as_py():
        return pc.cast(values, target), None, ""
    kept = pc.if_else(wrong, pa.scalar(None, values.type), values)
    return pc.cast(kept, target, safe=False), wrong, reason


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
