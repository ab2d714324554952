"""Row ids for whole batches of rows, with Arrow: `identity.py`'s rule, vectorised.

Every sink computes a month's ids while its file streams: the key texts column by column in C++, then one
md5 per row (Arrow has none; CPython's own costs 0.26 us for a key text). `RowIds` prefixes the lines of
a segment of the CSV file with their ids for PostgreSQL's COPY; `key_texts` serves typed batches
(`batches.MonthTables`: DuckDB, the cloud path's Parquet, and PostgreSQL's Parquet months).
"""

from __future__ import annotations

import array
import binascii
import bisect
import hashlib
import os
import tempfile
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from taxi_loader.identity import pg_float_text, value_text
from taxi_loader.reader import Header
from taxi_loader.taxis import Kind, TaxiType

try:
    # CPython's own md5 costs half of OpenSSL's per call (no EVP context to set up), which is what counts
    # for a 60-byte key text: measured 0.26 us against 0.50 us.
    from _md5 import md5 as _md5  # type: ignore[import-not-found]
except ImportError:  # a Python built without its own hashes
    _md5 = hashlib.md5

# The raw text forms that are already what PostgreSQL prints for the stored value: such values are their
# own key text. (Anything else, `01`, `1.0`, `24:00:00`, goes through the validating pass.)
_CANONICAL_CODE = r"^(0|-?[1-9][0-9]{0,17})$"
_CANONICAL_TIMESTAMP = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]) ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$"


class NotCanonical(ValueError):
    """A value the fast path cannot vouch for: the validating pass decides about it."""


def float_texts(column: pa.Array) -> pa.Array:
    """float64 values as PostgreSQL prints them (shortest round-trip digits), nulls kept."""
    text = pc.cast(column, pa.string())
    # Arrow prints the same shortest digits as PostgreSQL but picks exponent notation by other rules, and
    # spells NaN `nan`: rows where either would use an exponent, and NaNs, are formatted in Python.
    magnitude = pc.abs(column)
    odd = pc.or_(
        pc.or_(pc.match_substring(text, "e"), pc.is_nan(column)),
        pc.and_(pc.not_equal(column, 0.0), pc.or_(pc.less(magnitude, 1e-4), pc.greater_equal(magnitude, 1e15))),
    )
    if not pc.any(odd).as_py():
        return text
    values, flags = column.to_pylist(), odd.to_pylist()
    return pa.array(
        [pg_float_text(v) if f else t for v, t, f in zip(values, text.to_pylist(), flags, strict=True)], pa.string()
    )


def key_texts(columns: Sequence[pa.Array], kinds: Sequence[Kind]) -> pa.Array:
    """The key text of every row from typed key columns (in key order), as a string array without nulls.

    Codes are int64, times timestamps, distances and money float64, text strings.
    """
    parts = []
    for column, kind in zip(columns, kinds, strict=True):
        if kind is Kind.TIMESTAMP:
            naive = column.cast(pa.timestamp("us"))
            seconds = pc.cast(naive, pa.timestamp("s"), safe=False)
            if pc.any(pc.not_equal(seconds.cast(pa.timestamp("us")), naive)).as_py():  # fractions: Python
                text = pa.array([None if v is None else value_text(v, kind) for v in naive.to_pylist()], pa.string())
            else:
                # Arrow prints whole seconds as 'YYYY-MM-DD HH:MM:SS', PostgreSQL's ISO form (and far faster
                # than strftime).
                text = pc.cast(seconds, pa.string())
        elif kind is Kind.FLOAT:
            text = float_texts(column)
        else:
            text = pc.cast(column, pa.string())
        parts.append(text)
    return _joined(parts)


def _joined(parts: list[pa.Array]) -> pa.Array:
    joined = pc.binary_join_element_wise(*[pc.fill_null(p, "") for p in parts], "")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def md5_digests(texts: pa.Array) -> bytes:
    """The 16-byte md5 of every string of `texts`, concatenated."""
    if len(texts) == 0:
        return b""
    _, offsets, data = texts.buffers()
    bounds = memoryview(offsets).cast("i")[texts.offset : texts.offset + len(texts) + 1].tolist()
    view = memoryview(data) if data is not None else memoryview(b"")
    return b"".join([_md5(view[a:b]).digest() for a, b in pairwise(bounds)])


def hex_ids(digests: bytes) -> pa.Array:
    """The ids (lower-case hex) of concatenated 16-byte digests as a string array."""
    n = len(digests) // 16
    offsets = array.array("i", range(0, 32 * n + 1, 32))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(binascii.hexlify(digests)))


class Digests:
    """The 16-byte md5 digests of a month's rows, to find the repeated ones in bounded memory.

    Digests are gathered into runs of RUN_DIGESTS; each run is written, sorted, to a single temporary file,
    with where each of 256 buckets (the digest's first byte) starts in it; the repeats are then counted a
    group of consecutive buckets at a time, gathered from every run: about a run's worth of digests (one
    bucket at least: 78,000 digests for a 20M-row High-Volume FHV month, a few MB for numpy's sort), with one
    file open whatever the month's size.
    """

    BUCKETS = 256
    # Runs of one COPY segment each (about 3,500 rows) made the count 100,000 small reads for 1.37M rows, 0.1 s
    # between the COPY and the merge; runs of 1 MiB make it about 440 (21 runs, 21 groups of buckets); runs of
    # 4 MiB raised the peak by 14 MB.
    RUN_DIGESTS = 1 << 16

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._runs: list[tuple[int, array.array]] = []  # (offset of the run, where each bucket starts in it)
        self._end = 0
        self._filling: list[bytes] = []
        self._filled = 0

    def add(self, raw: bytes) -> None:
        """Add concatenated digests."""
        self._filling.append(raw)
        self._filled += len(raw) // 16
        if self._filled >= self.RUN_DIGESTS:
            self._write_run()

    def _write_run(self) -> None:
        raw, n = b"".join(self._filling), self._filled
        self._filling, self._filled = [], 0
        if not n:
            return
        keys = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(raw)])
        ordered = keys.take(pc.sort_indices(keys))  # in byte order: each bucket's share is one slice
        data = memoryview(ordered.buffers()[1]).cast("B")[ordered.offset * 16 : (ordered.offset + n) * 16]
        first = data[::16].tobytes()  # each record's first byte, in order: where each bucket starts, by bisection
        starts = array.array("I", [bisect.bisect_left(first, bucket) for bucket in range(self.BUCKETS + 1)])
        self._file.write(data)
        self._runs.append((self._end, starts))
        self._end += len(data)

    def repeated(self) -> dict[str, int]:
        """The ids (hex) of the digests added more than once, each with how many times it was added."""
        self._write_run()
        self._file.flush()
        fd = self._file.fileno()
        found: dict[str, int] = {}
        for first, end in self._groups():
            data = b"".join(
                os.pread(fd, (starts[end] - starts[first]) * 16, offset + starts[first] * 16)
                for offset, starts in self._runs
                if starts[end] > starts[first]
            )
            found.update(_repeats(data))
        return found

    def _groups(self) -> list[tuple[int, int]]:
        """Consecutive buckets [first, end) holding about RUN_DIGESTS digests in all (one bucket at least), to
        be counted a group at a time: for 1.37M rows 21 groups, each as small as one run."""
        sizes = [sum(starts[b + 1] - starts[b] for _, starts in self._runs) for b in range(self.BUCKETS)]
        groups, first, held = [], 0, 0
        for bucket, size in enumerate(sizes):
            if held and held + size > self.RUN_DIGESTS:
                groups.append((first, bucket))
                first, held = bucket, 0
            held += size
        return [*groups, (first, self.BUCKETS)]

    def clear(self) -> None:
        """Forget every digest (a pass that starts again)."""
        self._file.seek(0)
        self._file.truncate()
        self._runs, self._end = [], 0
        self._filling, self._filled = [], 0

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Digests:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _repeats(data: bytes) -> dict[str, int]:
    """The digests found more than once in `data` (concatenated 16-byte digests), in hex, with how many times.

    The candidates are found by their first 8 bytes, sorted as integers by numpy (1 ms for 65,536 digests,
    against 6 ms for Arrow's hash count of the whole digests); the candidates' whole digests, as two integers
    each, are then sorted and counted by runs of equal ones, so that two digests sharing 8 bytes are told apart.
    """
    halves = np.frombuffer(data, dtype=">u8").reshape(-1, 2)
    prefixes = halves[:, 0].astype(np.uint64)
    ordered = np.sort(prefixes)
    twice = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if not twice.size:
        return {}
    candidates = halves[twice[np.minimum(np.searchsorted(twice, prefixes), twice.size - 1)] == prefixes]
    candidates = candidates[np.lexsort((candidates[:, 1], candidates[:, 0]))]
    starts = np.flatnonzero(np.concatenate(([True], (candidates[1:] != candidates[:-1]).any(axis=1))))
    times = np.diff(np.append(starts, len(candidates)))
    repeated = candidates[starts[times > 1]].astype(">u8").tobytes()
    return dict(zip(binascii.hexlify(repeated, " ", 16).decode().split(), times[times > 1].tolist(), strict=True))


class RowIds:
    """Prefixes each line of a segment of a month's CSV file with its row's id, for COPY.

    The id is the plain md5 of the key text, a first occurrence's id: stage numbers the repeats once the
    whole file is in, in file order. Arrow splits out the key, code and number fields, as text: codes and
    times in canonical form are their own key text (COPY then checks that they are valid), distances and
    money in the key are re-printed (`1e-400` as 0, which COPY refuses: the validating pass then takes it).
    Codes are checked here because the table keeps them as text, where COPY would not; numbers for NaN and
    infinities, which COPY would take and every other path rejects.
    """

    def __init__(self, header: Header, taxi: TaxiType):
        self._names = [f"c{i}" for i in range(len(header.columns))]  # a file's own names may clash
        position = {c.name: f"c{i}" for i, c in enumerate(header.columns) if c is not None}
        self._key = [(position[taxi.column(f).name], taxi.column(f).kind) for f in taxi.key_fields]
        self._codes = [position[c.name] for c in taxi.columns if c.kind is Kind.CODE and c.name in position]
        # Every number column, in the key or not: COPY takes NaN and infinities, which no other path loads.
        self._numbers = [position[c.name] for c in taxi.columns if c.kind is Kind.FLOAT and c.name in position]
        self._read = sorted({name for name, _ in self._key} | set(self._codes) | set(self._numbers))

    def prefixed(self, segment: bytes) -> tuple[bytes, bytes]:
        """`segment` (whole lines, LF endings) with `<id>,` before each line, and the 16-byte digests.

        Raises NotCanonical when a code or key value is not in the form the fast path vouches for, or a line
        does not split into the header's number of fields.
        """
        try:
            table = pacsv.read_csv(
                pa.py_buffer(segment),
                read_options=pacsv.ReadOptions(
                    column_names=self._names, block_size=len(segment) + 1, use_threads=False
                ),
                parse_options=pacsv.ParseOptions(newlines_in_values=False),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(self._read, pa.string()),
                    include_columns=self._read,
                    null_values=[""],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                ),
            )
            lines = _lines(segment)
        except pa.ArrowInvalid as exc:
            raise NotCanonical(str(exc)) from None
        if b"\r" in segment:  # a line end to Arrow's reader, not to `_lines`: rows and lines would not pair
            raise NotCanonical("a carriage return inside a line")
        if table.num_rows != len(lines):
            raise NotCanonical(f"{table.num_rows} rows in {len(lines)} lines")
        for name in self._codes:
            _require(table.column(name), _CANONICAL_CODE)
        for name in self._numbers:
            _require_finite(table.column(name))
        parts = []
        for name, kind in self._key:
            column = table.column(name).combine_chunks()
            if kind is Kind.TIMESTAMP:
                _require(column, _CANONICAL_TIMESTAMP)
            elif kind is Kind.FLOAT:
                try:
                    column = float_texts(pc.cast(column, pa.float64()))
                except pa.ArrowInvalid as exc:
                    raise NotCanonical(str(exc)) from None
            parts.append(column)
        # Each line keeps its newline: "<id>,<line>\n" joined is the segment with ids.
        digests = md5_digests(_joined(parts))
        out = pc.binary_join_element_wise(hex_ids(digests).cast(pa.binary()), lines, b",")
        _, offsets, data = out.buffers()
        bounds = memoryview(offsets).cast("i")
        return memoryview(data)[bounds[out.offset] : bounds[out.offset + len(out)]].tobytes(), digests


def _lines(segment: bytes) -> pa.Array:
    """The lines of `segment` (whole lines, LF endings), each with its newline, as a binary array over the
    segment's own bytes: the offsets are where numpy finds the newlines (0.04 s for a 1.37M-row month, against
    0.25 s for Arrow's CSV reader splitting it). Empty lines, which the CSV reader skips too, are left out."""
    if len(segment) > np.iinfo(np.int32).max:  # Arrow's binary offsets are 32-bit
        raise NotCanonical("a segment of over 2 GiB")
    ends = np.flatnonzero(np.frombuffer(segment, np.uint8) == ord("\n"))
    offsets = np.empty(len(ends) + 1, np.int32)
    offsets[0] = 0
    offsets[1:] = ends + 1
    lines = pa.BinaryArray.from_buffers(pa.binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(segment)])
    empty = np.diff(offsets) == 1
    return lines.filter(pa.array(~empty)) if empty.any() else lines


def _require_finite(column: pa.ChunkedArray) -> None:
    """Numbers as text must not be `NaN`, `inf` or `Infinity` (any case; each holds an n), which COPY would take:
    one byte search over each chunk's values, not a search per value."""
    for chunk in column.chunks:
        data = chunk.buffers()[2]
        if data is not None and (b"n" in (raw := data.to_pybytes()) or b"N" in raw):
            raise NotCanonical("a number that is not finite")


def _require(column: pa.ChunkedArray | pa.Array, pattern: str) -> None:
    if pc.all(pc.match_substring_regex(column, pattern)).as_py() is False:  # nulls (empty fields) pass
        raise NotCanonical(f"a value that is not in canonical form (pattern {pattern})")
