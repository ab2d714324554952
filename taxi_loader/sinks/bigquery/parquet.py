"""A month's file as a typed Parquet file with unique_row_id and filename: the Google Cloud path's input.

One streaming pass of `batches.MonthTables` (the same validation as the PostgreSQL path and the same
identity, tested equal to PostgreSQL's) into the Parquet file, in row groups, so memory stays bounded. Exact
repeats get their k-th ids as on PostgreSQL: the pass keeps the 16-byte md5 of every row in a temporary file
(`arrowids.Digests`), and holds back the rows that may repeat an earlier one (`seen.MaybeSeen`) until the end
of the file, when the counts are known; they are written last.

Types: codes as STRING (as the course's tables keep them), counts as INT64, times as TIMESTAMP (UTC, the
files carry no zone), distances and money as FLOAT64: the same doubles PostgreSQL holds, so the id's text
forms agree on every sink.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
from taxi_loader.seen import MaybeSeen
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

    One pass: the rows go to the Parquet file as they stream (a thread of its own encodes and compresses
    them), but for the few that may repeat an earlier row (`seen.MaybeSeen`), which are held until the end of
    the file says which of them are repeats and which occurrence each is; they are the file's last rows.
    """
    part = target.with_name(target.name + ".part")
    try:
        with Digests() as digests:
            try:
                result = _write(source, taxi, month, part, digests, max_rejects, drop_duplicates, fast=True)
            except pa.ArrowInvalid:
                digests.clear()
                result = _write(source, taxi, month, part, digests, max_rejects, drop_duplicates, fast=False)
    except BaseException:  # a month over --max-rejects, or any failure: no half file stays
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return result


# Rows per row group of the Parquet file: the reader's batches are ~10,000 rows, which as row groups cost
# twice the writing time (per-group work, worse compression) and make BigQuery read 150 groups for a month.
# 65,536 rows are ~15 MB of typed columns; two groups are held at a time (one gathered, one being written).
ROW_GROUP_ROWS = 1 << 16


def _write(
    source: Path,
    taxi: TaxiType,
    month: str,
    target: Path,
    digests: Digests,
    max_rejects: str,
    drop_duplicates: bool,
    fast: bool,
) -> ParquetResult:
    """One pass over the file into the Parquet file `target`; its rows' 16-byte digests go to `digests`."""
    tables = MonthTables(source, taxi, taxi.filename(month), digests, fast, max_rejects)
    maybe_seen = MaybeSeen()
    with _RowGroups(target, tables.schema, taxi) as out, _HeldRows(tables.schema) as held:
        for table in tables:
            maybe = maybe_seen.add(tables.last_digests)
            if maybe.any():
                held.add(table.filter(pa.array(maybe)))
                table = table.filter(pa.array(~maybe))
            out.add(table)
        stats = tables.stats
        check_rejects(tables.rejects, stats.data_lines, max_rejects, taxi.filename(month))
        repeated, dropped = _write_held(held, digests.repeated(), out, taxi, drop_duplicates)
    return ParquetResult(
        stats.data_lines, tables.rows - dropped, repeated, dropped, tables.rejects, stats.size, stats.sha256
    )


def _write_held(
    held: _HeldRows, counts: dict[str, int], out: _RowGroups, taxi: TaxiType, drop_duplicates: bool
) -> tuple[int, int]:
    """Write the held rows with final ids: the k-th occurrence (file order) of a repeated row gets
    md5(key_text || '|' || k), or is dropped. `counts` holds each repeated id's occurrences in the whole file.
    Returns (repeated, dropped)."""
    wanted = pa.array(list(counts), pa.string())
    in_held: Counter[str] = Counter()
    for rows in held.tables():
        ids = rows.column(0)
        in_held.update(ids.filter(pc.is_in(ids, value_set=wanted)).to_pylist())
    # A row written as the file streamed was the first of its kind (the filter vouched for it): of a repeated
    # id's occurrences, those not held are that first one or none.
    occurrences = {rid: counts[rid] - n for rid, n in in_held.items()}
    assert all(n in (0, 1) for n in occurrences.values()), "a repeat was written as the file streamed"
    tally = [0, 0]
    for rows in held.tables():
        out.add(_renumbered(rows, taxi, wanted, occurrences, drop_duplicates, tally))
    return tally[0], tally[1]


def _renumbered(
    table: pa.Table,
    taxi: TaxiType,
    wanted: pa.Array,
    occurrences: dict[str, int],
    drop_duplicates: bool,
    tally: list[int],
) -> pa.Table:
    """`table` with the ids of repeats after their first occurrence renumbered (or those rows dropped);
    `occurrences` counts each repeated id's occurrences so far, `tally` adds (repeated, dropped)."""
    ids = table.column(0).combine_chunks()
    hit = pc.is_in(ids, value_set=wanted)
    hits = pc.indices_nonzero(hit).to_pylist()
    new: list[str | None] = []  # per hit: its new id, None for a first occurrence
    for i in hits:
        rid = ids[i].as_py()
        occurrences[rid] += 1
        if occurrences[rid] == 1:
            new.append(None)
            continue
        row = table.slice(i, 1).to_pylist()[0]
        new.append(hashlib.md5((key_text(taxi, row) + REPEAT_SEPARATOR + str(occurrences[rid])).encode()).hexdigest())
    changed = sum(n is not None for n in new)
    tally[0] += changed
    if not changed:
        return table
    if drop_duplicates:
        tally[1] += changed
        keep = pc.replace_with_mask(pc.invert(hit), hit, pa.array([n is None for n in new]))
        return table.filter(keep)
    renumbered = [n if n is not None else ids[i].as_py() for i, n in zip(hits, new, strict=True)]
    return table.set_column(0, table.schema.field(0), pc.replace_with_mask(ids, hit, pa.array(renumbered)))


class _HeldRows:
    """The rows that may repeat an earlier one, in file order: few (the repeats and about 0.2% more), but a
    20M-row month still holds back some 100,000. Each batch's share goes straight to a temporary Arrow stream,
    uncompressed, and comes back a group at a time, copied whole: kept in memory, or read back compressed, the
    small pieces of every batch would stay between the large buffers of the rows streamed past, and keep the
    heap from shrinking (measured, 20M rows: 494 MB in memory, 1.3 GB read back compressed)."""

    def __init__(self, schema: pa.Schema):
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by __exit__
        self._writer: pa.ipc.RecordBatchStreamWriter | None = pa.ipc.new_stream(self._file, schema)

    def add(self, table: pa.Table) -> None:
        assert self._writer is not None
        self._writer.write_table(table)

    def tables(self) -> Iterator[pa.Table]:
        """The held rows, about ROW_GROUP_ROWS at a time (no more can be added); each call reads them from the
        start."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._file.seek(0)
        group: list[pa.RecordBatch] = []
        rows = 0
        for batch in pa.ipc.open_stream(self._file):
            group.append(batch)
            rows += batch.num_rows
            if rows >= ROW_GROUP_ROWS:
                yield pa.Table.from_batches(group).combine_chunks()
                group, rows = [], 0
        if group:
            yield pa.Table.from_batches(group).combine_chunks()

    def __enter__(self) -> _HeldRows:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:  # a pass that failed: the rows are not wanted
            with _quiet_if(True):
                self._writer.close()
        self._file.close()


class _RowGroups:
    """A Parquet file written in row groups of about ROW_GROUP_ROWS by a thread of its own: Parquet's encoding
    and compression (C++, without the GIL) run beside the next rows' ids (measured on a 1.37M-row month: the
    pass 2.5 s against 3.2 s when it wrote an Arrow file first and the Parquet file after). One group is
    written while the next is gathered, so memory stays bounded, and a failure surfaces by the next group."""

    def __init__(self, target: Path, schema: pa.Schema, taxi: TaxiType):
        # Statistics only for the pickup, the column BigQuery partitions by: computing them for every column
        # costs a tenth of the write and serves no reader of this file. No dictionary for the ids, each of which
        # is unique: Parquet would build one per row group only to give it up (measured: the write 5% faster,
        # the file 2% smaller).
        dictionary = [name for name in schema.names if name != ROW_ID.name]
        self._writer = pq.ParquetWriter(
            target, schema, compression="zstd", write_statistics=[taxi.pickup], use_dictionary=dictionary
        )
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="taxi-loader-parquet")
        self._pending: Future[None] | None = None
        self._group: list[pa.Table] = []
        self._rows = 0

    def add(self, table: pa.Table) -> None:
        """Write the rows of `table` after those added before."""
        self._group.append(table)
        self._rows += table.num_rows
        if self._rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        self._wait()
        group, self._group, self._rows = self._group, [], 0
        if group:
            self._pending = self._pool.submit(self._write, group)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _write(self, group: list[pa.Table]) -> None:
        self._writer.write_table(pa.concat_tables(group))

    def __enter__(self) -> _RowGroups:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        quiet = _quiet_if(exc_type is not None)
        try:
            if exc_type is None:
                self._flush()
            with quiet:
                self._wait()
        finally:
            self._pool.shutdown()
            with quiet:
                self._writer.close()


def _quiet_if(failing: bool) -> contextlib.AbstractContextManager[None]:
    """While a failure is on its way out, a second one (a write in flight, closing a file) must not replace
    it: suppressed then, raised otherwise."""
    return contextlib.suppress(Exception) if failing else contextlib.nullcontext()
