"""Reading one month's Parquet file as the TLC publishes it: streamed a record batch at a time, columns
matched by name, every value coerced to the one type taxi-loader keeps for its column.

The TLC's files drift by era (tlc-parquet.md): names change case (`airport_fee` / `Airport_fee`), columns
appear (`cbd_congestion_fee` from 2025) or are written all-null with Arrow's `null` type, and the types of
one column change between files (`passenger_count` int64, then double, then int64 again; ids int64, then
int32; string, then large_string). Each value becomes its column's type losslessly or its row is rejected
with the reason, by the CSV path's rules: a double 1.0 is the integer 1, 1.5 in an integer column is a
reject, a time outside the years 1-9999 is one too; text that is not UTF-8 is read as latin-1; a number or
time written as text is judged by `reader.parse_value` itself. Memory is bounded by one record batch,
whatever the month's size: reading stops as soon as the rejects pass --max-rejects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxi_loader.errors import BadData
from taxi_loader.progress import meter
from taxi_loader.reader import FileStats, Header, Reject, Rejects, check_rejects, fingerprint, match_names, parse_value
from taxi_loader.taxis import Column, Kind, TaxiType

# Rows per batch. Measured on a 2M-row High-Volume FHV month loaded into PostgreSQL: 8k rows with 64 KiB read
# buffers peak at 186 MB in 10.4 s; 16k rows at 218 MB; 64k rows with 1 MiB buffers at 307 MB in 15.8 s
# (smaller batches stay in the CPU's caches through coercion, ids and CSV writing). 6M rows: +8 MB.
BATCH_ROWS = 8 * 1024
# The types of the typed batches, whatever the format: integer codes (they become text after their key text
# is taken), 32-bit counts as PostgreSQL and DuckDB keep them, times without a zone. (The CSV reader parses
# times to the second: batches._CSV_IN.)
TYPED = {
    Kind.CODE: pa.int64(),
    Kind.INT: pa.int32(),
    Kind.TIMESTAMP: pa.timestamp("us"),
    Kind.FLOAT: pa.float64(),
    Kind.TEXT: pa.string(),
}
# The range of an integer column, as float bounds a double must lie in (2**63 itself is no int64).
_BOUNDS = {Kind.CODE: (-(2.0**63), 2.0**63), Kind.INT: (-(2.0**31), 2.0**31)}
# The years every sink keeps (the CSV path's four-digit years): 0001-01-01 up to 10000-01-01, in seconds.
_FIRST_SECOND, _END_SECOND = -62135596800, 253402300800
_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6}
_FROM_TEXT: dict[Kind, Any] = {
    Kind.CODE: int,
    Kind.INT: int,
    Kind.FLOAT: float,
    Kind.TIMESTAMP: datetime.fromisoformat,
}
Reasons = str | list[str | None]  # one reason for every bad row, or each row's own


class ParquetMonthFile:
    """An open Parquet month file: `header` (its columns matched by name), `batches()` of typed rows in spec
    order, and afterwards `stats` and the `rejects` with their reasons. With `max_rejects`, reading stops with
    BadData as soon as the rejects pass it (the file's row count is in its footer)."""

    def __init__(self, path: Path, taxi: TaxiType, max_rejects: str | None = None):
        self.path, self.taxi, self.max_rejects = path, taxi, max_rejects
        self.rejects = Rejects(max_rejects, path.name)
        self._meter = meter()
        try:
            # No pre-buffering: a column chunk is read page by page, so a month in a single row group (the
            # 2022-era files) is not held whole in memory either.
            self._file = pq.ParquetFile(path, pre_buffer=False, buffer_size=64 << 10)
        except (pa.ArrowException, OSError) as exc:
            raise BadData(f"{path.name}: not a readable Parquet file ({exc})") from None
        self.header: Header = match_names(self._file.schema_arrow.names, taxi, path.name)
        size, sha256 = fingerprint(path)
        self.stats = FileStats(size=size, sha256=sha256)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The file's rows as typed batches (`TYPED`, spec order; a column the file lacks is all null). Rows
        with a value that does not fit its column go to `rejects` instead."""
        by_name = {c.name: n for n, c in zip(self.header.names, self.header.columns, strict=True) if c}
        present = [c for c in self.taxi.columns if c.name in by_name]
        rows = self._file.metadata.num_rows
        first_row = 1
        try:
            for batch in self._file.iter_batches(batch_size=BATCH_ROWS, columns=[by_name[c.name] for c in present]):
                n = batch.num_rows
                columns, bad, reasons = {}, None, []
                for c in present:
                    try:
                        values, wrong, reason = coerce(batch.column(by_name[c.name]), c)
                    except BadData as exc:
                        raise BadData(f"{self.path.name}: {exc}") from None
                    columns[c.name] = values
                    if wrong is not None:
                        reasons.append((c, wrong, reason))
                        bad = wrong if bad is None else pc.or_(bad, wrong)
                arrays = [
                    columns[c.name] if c.name in columns else pa.nulls(n, TYPED[c.kind]) for c in self.taxi.columns
                ]
                typed = pa.RecordBatch.from_arrays(arrays, names=[c.name for c in self.taxi.columns])
                if bad is not None:
                    self._reject(batch, by_name, first_row, reasons)
                    typed = typed.filter(pc.invert(bad))
                    if self.max_rejects is not None:  # stop now: the rest could only add rejects
                        check_rejects(self.rejects, rows, self.max_rejects, self.path.name)
                first_row += n
                self.stats.data_lines += n
                self._meter.update(self.stats.data_lines)
                if typed.num_rows:
                    yield typed
        except (pa.ArrowException, OSError) as exc:
            raise BadData(f"{self.path.name}: corrupt Parquet data after row {first_row - 1} ({exc})") from None

    def _reject(
        self,
        batch: pa.RecordBatch,
        by_name: dict[str, str],
        first_row: int,
        found: list[tuple[Column, pa.Array, Reasons]],
    ) -> None:
        """Record the batch's bad rows, each once with its first bad column (as the CSV path reports a line),
        numbered from 1 like the file's rows, with the row itself as JSON."""
        rejects: dict[int, Reject] = {}
        for column, wrong, reasons in found:
            for i in pc.indices_nonzero(wrong).to_pylist():
                if i in rejects:
                    continue
                row = batch.slice(i, 1).to_pylist()[0]
                reason = reasons[i] if isinstance(reasons, list) else f"{reasons}: {row[by_name[column.name]]!r}"
                rejects[i] = Reject(first_row + i, column.name, str(reason), json.dumps(row, default=str))
        self.rejects.extend(rejects[i] for i in sorted(rejects))

    def __enter__(self) -> ParquetMonthFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()


def coerce(values: pa.Array, column: Column) -> tuple[pa.Array, pa.Array | None, Reasons]:
    """`values` as `column`'s type (`TYPED`), the rows that cannot be (a boolean mask, None when all can) set
    to null, and why. Raises BadData when the column's type cannot become it at all."""
    kind, source = column.kind, values.type
    target = TYPED[kind]
    if pa.types.is_null(source):  # an all-null column, as pyarrow writes one
        return pa.nulls(len(values), target), None, ""
    if pa.types.is_dictionary(source):
        values = values.dictionary_decode()
        source = values.type
    textual = pa.types.is_string(source) or pa.types.is_large_string(source) or pa.types.is_binary(source)
    if textual and kind is not Kind.TEXT:
        return _parsed(_texts(values), column)
    if kind in (Kind.CODE, Kind.INT):
        low, high = _BOUNDS[kind]
        if pa.types.is_integer(source):
            top = pa.scalar(int(high) - 1, pa.uint64() if pa.types.is_unsigned_integer(source) else pa.int64())
            wrong = pc.greater(values, top)
            if pa.types.is_signed_integer(source):
                wrong = pc.or_(wrong, pc.less(values, pa.scalar(int(low), pa.int64())))
            return _finish(values, wrong, target, "out of range")
        if pa.types.is_floating(source):
            whole = pc.and_(pc.is_finite(values), pc.equal(pc.floor(values), values))
            fits = pc.and_(pc.greater_equal(values, low), pc.less(values, high))
            return _finish(values, pc.invert(pc.and_(whole, fits)), target, "not an integer")
    elif kind is Kind.FLOAT:
        if pa.types.is_integer(source) or pa.types.is_decimal(source):
            return pc.cast(values, target, safe=False), None, ""  # beyond 2**53 as PostgreSQL's own cast rounds
        if pa.types.is_floating(source):
            return _finish(values, pc.invert(pc.is_finite(values)), target, "not a finite number")
    elif kind is Kind.TIMESTAMP:
        if pa.types.is_timestamp(source):
            if source.tz is not None:  # a zoned instant: the wall-clock time in its zone, as the files mean it
                values = pc.local_timestamp(values)
            ticks = pc.cast(values, pa.int64())
            if source.unit == "ns":  # always within the years; microseconds are kept, finer digits would be lost
                return _finish(values, pc.not_equal(pc.remainder(ticks, 1000), 0), target, "sub-microsecond time")
            per = _PER_SECOND[source.unit]
            outside = pc.or_(pc.less(ticks, _FIRST_SECOND * per), pc.greater_equal(ticks, _END_SECOND * per))
            return _finish(values, outside, target, "a time outside the years 1-9999")
        if pa.types.is_date(source):
            return pc.cast(pc.cast(values, pa.timestamp("s")), target), None, ""
    elif kind is Kind.TEXT:
        if textual:
            text = _texts(values)
            strings = pa.array(text, target) if isinstance(text, list) else pc.cast(text, target)
            if pc.any(pc.match_substring(strings, "\x00")).as_py():  # PostgreSQL's text cannot hold NUL
                strings = pc.replace_substring(strings, "\x00", "")
            return strings, None, ""
        if pa.types.is_integer(source) or pa.types.is_floating(source) or pa.types.is_boolean(source):
            return pc.cast(values, target), None, ""
    raise BadData(f"column {column.name} holds {source}, which cannot become {kind} ({target})")


def _texts(values: pa.Array) -> pa.Array | list[str | None]:
    """Text values as UTF-8 strings; when some are not valid UTF-8, the values as Python strings with each
    byte that is not read as latin-1 (the CSV path's rule)."""
    try:
        if not pa.types.is_binary(values.type):
            values.validate(full=True)
            return values
    except pa.ArrowInvalid:
        pass
    raw = pc.cast(values, pa.large_binary()).to_pylist()
    return [None if b is None else b.decode("utf-8", "taxi_loader_latin1") for b in raw]


def _parsed(texts: pa.Array | list[str | None], column: Column) -> tuple[pa.Array, pa.Array | None, Reasons]:
    """Numbers and times written as text, judged value by value by the CSV path's own `parse_value`."""
    kind = column.kind
    out: list[Any] = []
    reasons: list[str | None] = []
    for text in texts if isinstance(texts, list) else texts.to_pylist():
        try:
            value = None if text is None else parse_value(text, kind)
        except ValueError as exc:
            out.append(None)
            reasons.append(str(exc))
            continue
        out.append(None if value is None else _FROM_TEXT[kind](value))
        reasons.append(None)
    wrong = [r is not None for r in reasons]
    return pa.array(out, TYPED[kind]), (pa.array(wrong) if any(wrong) else None), reasons


def _finish(
    values: pa.Array, wrong: pa.Array, target: pa.DataType, reason: str
) -> tuple[pa.Array, pa.Array | None, str]:
    """`values` cast to `target` with the `wrong` rows nulled; `wrong` is None when no row is."""
    wrong = pc.fill_null(wrong, False)
    if not pc.any(wrong).as_py():
        return pc.cast(values, target), None, ""
    kept = pc.if_else(wrong, pa.scalar(None, values.type), values)
    return pc.cast(kept, target, safe=False), wrong, reason
