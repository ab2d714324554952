"""A month's file as a typed Parquet file with unique_row_id and filename: the Google Cloud path's input.

One streaming pass with the same validation as the PostgreSQL path (`reader.validated_rows`) and the same
identity (`identity.py`, tested equal to PostgreSQL's), written in row groups so memory stays bounded.
Exact repeats get their k-th ids as on PostgreSQL: the pass keeps the 16-byte md5 of every row (16 bytes a
row, the only state that grows with the month), and when some repeat, a second pass over the Parquet file
renumbers just those rows.

Types: codes as STRING (as the course's tables keep them), counts as INT64, times as TIMESTAMP (UTC, the
files carry no zone), distances and money as FLOAT64: the same doubles PostgreSQL holds, so the id's text
forms agree on both sinks.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxi_loader.errors import BadData
from taxi_loader.identity import REPEAT_SEPARATOR, key_text
from taxi_loader.reader import MonthFile, Reject, validated_rows
from taxi_loader.taxis import Kind, TaxiType

BATCH = 50_000
ARROW_TYPE = {
    Kind.CODE: pa.string(),
    Kind.INT: pa.int64(),
    Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    Kind.FLOAT: pa.float64(),
    Kind.TEXT: pa.string(),
}
_CONVERT = {
    Kind.CODE: str,
    Kind.INT: int,
    Kind.FLOAT: float,
    Kind.TEXT: str,
    Kind.TIMESTAMP: lambda v: datetime.fromisoformat(v + "+00:00"),
}


def arrow_schema(taxi: TaxiType) -> pa.Schema:
    """unique_row_id, filename, then the source columns with their names as the files spell them."""
    fields = [pa.field("unique_row_id", pa.string(), nullable=False), pa.field("filename", pa.string())]
    return pa.schema(fields + [pa.field(c.name, ARROW_TYPE[c.kind]) for c in taxi.columns])


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
    max_rejects: int | float = 0.001,
    drop_duplicates: bool = False,
) -> ParquetResult:
    """Validate `source` and write it to `target` as typed Parquet with final ids; raise BadData over the limit."""
    filename = taxi.filename(month)
    schema = arrow_schema(taxi)
    names = [c.name for c in taxi.columns]
    kinds = [c.kind for c in taxi.columns]
    digests = bytearray()
    rejects: list[Reject] = []
    part = target.with_name(target.name + ".part")
    with MonthFile(source, taxi) as mf, pq.ParquetWriter(part, schema, compression="zstd") as writer:
        columns: list[list] = [[] for _ in names]
        ids: list[str] = []
        for item in validated_rows(mf):
            if isinstance(item, Reject):
                rejects.append(item)
                continue
            text = key_text(taxi, dict(zip(names, item, strict=True)))
            digest = hashlib.md5(text.encode("utf-8")).digest()
            digests += digest
            ids.append(digest.hex())
            for values, value, kind in zip(columns, item, kinds, strict=True):
                values.append(None if value is None else _CONVERT[kind](value))
            if len(ids) >= BATCH:
                writer.write_table(_table(schema, ids, filename, columns))
                ids, columns = [], [[] for _ in names]
        if ids:
            writer.write_table(_table(schema, ids, filename, columns))
        stats = mf.stats
    allowed = max_rejects if isinstance(max_rejects, int) else int(max_rejects * stats.data_lines)
    if len(rejects) > allowed:
        part.unlink(missing_ok=True)
        first = "; ".join(f"line {r.line} {r.column or ''}: {r.reason}" for r in rejects[:3])
        raise BadData(
            f"{filename}: {len(rejects)} of {stats.data_lines} rows rejected, more than allowed; "
            f"nothing was written. First: {first}"
        )
    written = len(digests) // 16
    repeated = dropped = 0
    repeats = _repeated_ids(digests)
    del digests
    if repeats:
        repeated, dropped = _renumber(part, taxi, repeats, drop_duplicates)
        written -= dropped
    os.replace(part, target)
    return ParquetResult(stats.data_lines, written, repeated, dropped, rejects, stats.size, stats.sha256)


def _table(schema: pa.Schema, ids: list[str], filename: str, columns: list[list]) -> pa.Table:
    arrays = [pa.array(ids, pa.string()), pa.array([filename] * len(ids), pa.string())]
    arrays += [pa.array(values, field.type) for values, field in zip(columns, list(schema)[2:], strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _repeated_ids(digests: bytearray) -> set[str]:
    """The ids (hex) that occur more than once, from the packed 16-byte digests (counted by Arrow, in C++)."""
    if not digests:
        return set()
    keys = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(digests) // 16, [None, pa.py_buffer(digests)])
    counts = pc.value_counts(keys)
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    return {value.hex() for value in repeated.to_pylist()}


def _renumber(path: Path, taxi: TaxiType, repeats: set[str], drop_duplicates: bool) -> tuple[int, int]:
    """Give the k-th occurrence of each repeated id (file order) md5(key_text || '|' || k), or drop it."""
    seen: dict[str, int] = {}
    repeated = dropped = 0
    out = path.with_name(path.name + ".renumbered")
    source = pq.ParquetFile(path)
    with pq.ParquetWriter(out, source.schema_arrow, compression="zstd") as writer:
        for batch in source.iter_batches(batch_size=BATCH):
            ids = batch.column(0).to_pylist()
            keep = [True] * len(ids)
            rows = None
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
                rows = rows or batch.to_pylist()
                text = key_text(taxi, rows[i]) + REPEAT_SEPARATOR + str(seen[rid])
                ids[i] = hashlib.md5(text.encode("utf-8")).hexdigest()
            table = pa.Table.from_batches([batch]).set_column(
                0, source.schema_arrow.field(0), pa.array(ids, pa.string())
            )
            writer.write_table(table.filter(pa.array(keep)))
    os.replace(out, path)
    return repeated, dropped
