"""Reading one month's file: one streaming pass, bounded memory.

`MonthFile` checks the file and its header and yields the data as normalised UTF-8 chunks of whole lines
(LF endings; a byte that is not UTF-8 read as latin-1), which PostgreSQL's COPY parses and types. When COPY
finds a bad value, `validated_rows` re-reads the file in Python, checks every value for its column, and yields
the good rows in canonical form and the rejected ones with their reasons.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
import os
import pickle
import queue
import re
import tempfile
import threading
from collections.abc import Generator, Iterable, Iterator
from dataclasses import astuple, dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from isal import igzip, isal_zlib

from taxi_loader.errors import BadData, UsageError
from taxi_loader.progress import meter
from taxi_loader.taxis import Column, Kind, TaxiType

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_MAX_REJECTS = "0.1%"  # --max-rejects when none is given: see check_rejects
INT_RANGE = range(-(2**31), 2**31)  # what a Kind.INT column holds (PostgreSQL's integer)
# What reading a damaged gzip stream raises: cut short (EOFError), a bad header or checksum (OSError),
# corrupt data (ISA-L's error).
# (isal's stubs declare its error class as an instance of Exception, hence the cast.)
GZIP_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, cast("type[Exception]", isal_zlib.error))


def gunzipped(compressed: IO[bytes]) -> io.BufferedIOBase:
    """The data of a gzip stream, decompressed as it is read.

    ISA-L's inflate (python-isal) reads the same format as zlib's in a quarter of the time (measured: 0.10 s
    against 0.36 s for a 36 MB month), and a load's reading thread shares the machine with PostgreSQL's COPY.
    """
    return igzip.IGzipFile(fileobj=compressed)


def _latin1_fallback(err: UnicodeError) -> tuple[str, int]:
    # Read the offending byte as latin-1 (0xA0 becomes U+00A0) instead of failing the load.
    assert isinstance(err, UnicodeDecodeError)  # registered for decoding only
    return err.object[err.start : err.start + 1].decode("latin-1"), err.start + 1


codecs.register_error("taxi_loader_latin1", _latin1_fallback)


@dataclass
class FileStats:
    """What one pass learnt about the source file: its size and checksum, lines and data rows."""

    size: int = 0
    sha256: str = ""
    data_lines: int = 0


class _HashingReader(io.RawIOBase):
    """Counts and hashes the raw (compressed) bytes as they are read, so the checksum costs no second pass."""

    def __init__(self, raw: io.BufferedReader):
        self._raw, self.hash, self.size = raw, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._raw.readinto(b)
        if n:
            self.hash.update(memoryview(b)[:n])
            self.size += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def fingerprint(path: Path) -> tuple[int, str]:
    """(size, sha256) of a file: what says a month's file is the one loaded before."""
    with open(path, "rb") as f:
        return os.fstat(f.fileno()).st_size, hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class Header:
    """The file's columns matched against the taxi type: the known columns in file order, the unknown ones."""

    names: list[str]  # as in the file
    columns: list[Column | None]  # the spec column at each position, None for an unknown one

    @property
    def extra(self) -> list[str]:
        return [n for n, c in zip(self.names, self.columns, strict=True) if c is None]

    def position(self, column: Column) -> int | None:
        """Where `column` is in the file; None for an optional column the file lacks."""
        return self.columns.index(column) if column in self.columns else None


# Names only the yellow files of 2009 and 2010 have: longitude and latitude instead of zone ids.
_LEGACY_YELLOW = {"trip_pickup_datetime", "pickup_longitude", "start_lon"}


def match_names(names: list[str], taxi: TaxiType, source: str) -> Header:
    """Match a file's column names against `taxi`: by name, never by position; order may differ and names
    match case-insensitively (the TLC spells `Airport_fee`, `dropOff_datetime`, `PUlocationID`).

    Raises BadData naming the missing columns (and, when the file looks like another taxi type, which one).
    """
    by_lower = {c.name.lower(): c for c in taxi.columns}
    columns = [by_lower.get(n.strip().lower()) for n in names]
    missing = [c.name for c in taxi.columns if c not in columns and not c.optional]
    if missing:
        from taxi_loader.taxis import TAXI_TYPES

        lower = {n.strip().lower() for n in names}
        if lower & _LEGACY_YELLOW:
            raise BadData(
                f"{source}: the yellow layout of 2009-2010 (longitude and latitude, no zone ids) is not supported; "
                "taxi-loader loads yellow from 2011-01"
            )
        looks_like = [
            t.name
            for t in TAXI_TYPES.values()
            if t is not taxi and {c.name.lower() for c in t.columns if not c.optional} <= lower
        ]
        hint = f"; the file looks like a {looks_like[0]} file" if looks_like else ""
        raise BadData(f"{source}: the file lacks {taxi.name} column(s) {', '.join(missing)}{hint}")
    return Header(list(names), columns)


def match_header(line: str, taxi: TaxiType, source: str) -> Header:
    """Match a CSV header line against `taxi` (see `match_names`)."""
    return match_names(next(csv.reader([line.strip().lstrip("\ufeff")]), []), taxi, source)


class MonthFile:
    """An open month file: its header and a stream of normalised chunks; closes the file when done."""

    def __init__(self, path: Path, taxi: TaxiType):
        self.path, self.taxi, self.stats = path, taxi, FileStats()
        self._meter = meter()  # taken here: the chunks may be read in another thread
        raw = open(path, "rb")  # noqa: SIM115 (closed in close())
        head = raw.peek(64)[:64] if hasattr(raw, "peek") else b""
        self._hashing = _HashingReader(raw)
        buffered = io.BufferedReader(self._hashing, CHUNK)
        if head.startswith(GZIP_MAGIC):
            self._stream: io.BufferedIOBase = gunzipped(buffered)
        elif path.suffix == ".gz":
            self.close()
            kind = "an HTML page" if head.lstrip().lower().startswith((b"<!doctype", b"<html")) else "not gzip data"
            # The full path: it may be a file of the user's own mirror, which is theirs to fix (a download that
            # fails its checks never gets this far: source.verify removes it).
            raise BadData(f"{path}: not a gzipped file (it holds {kind})")
        else:
            self._stream = buffered
        try:
            first = self._stream.readline(1 << 16)
            self.first_data_line = 2  # the line number of the first data row, as an editor counts
            while first and not first.strip():  # blank lines before the header carry nothing
                first = self._stream.readline(1 << 16)
                self.first_data_line += 1
        except GZIP_ERRORS as exc:
            self.close()
            raise BadData(f"{path.name}: corrupt or truncated file ({exc})") from None
        if not first.strip():
            self.close()
            raise BadData(f"{path.name}: the file is empty (no header line)")
        text = first.decode("utf-8", "taxi_loader_latin1")
        if text.lstrip().lower().startswith(("<!doctype", "<html")):
            self.close()
            raise BadData(f"{path.name}: the file holds an HTML page, not CSV; check the source URL")
        self.header = match_header(text, taxi, path.name)

    def chunks(self) -> Iterator[bytes]:
        """The data lines after the header as UTF-8 chunks of whole lines with LF endings."""
        rest = b""
        try:
            while True:
                block = self._stream.read(CHUNK)
                if not block:
                    break
                block = rest + block
                cut = block.rfind(b"\n") + 1
                if cut == 0:
                    rest = block
                    continue
                rest = block[cut:]
                yield self._normalise(block[:cut])
        except GZIP_ERRORS as exc:
            raise BadData(f"{self.path}: corrupt or truncated file ({exc})") from None
        if rest.strip():
            yield self._normalise(rest + b"\n")
        self._finish()

    def _normalise(self, block: bytes) -> bytes:
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        if not block.isascii():  # (taxi files are ASCII: this test is ten times cheaper than decoding)
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                block = block.decode("utf-8", "taxi_loader_latin1").encode("utf-8")
        if b"\n\n" in block:  # blank lines carry no row
            block = re.sub(rb"\n\n+", b"\n", block)
        self.stats.data_lines += block.count(b"\n") - block.startswith(b"\n")
        self._meter.update(self.stats.data_lines)
        return block.lstrip(b"\n")

    def _finish(self) -> None:
        # Drain what the decompressor did not need, so size and checksum cover the whole file.
        while self._hashing.readinto(bytearray(CHUNK)):
            pass
        self.stats.size = self._hashing.size
        self.stats.sha256 = self._hashing.hash.hexdigest()

    def close(self) -> None:
        self._hashing.close()

    def __enter__(self) -> MonthFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ChunkStream(io.RawIOBase):
    """A file-like view of an iterator of byte chunks, for psycopg2's copy_expert."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._buf, self._pos = chunks, b"", 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self._pos >= len(self._buf):
            try:
                self._buf, self._pos = next(self._chunks), 0
            except StopIteration:
                return b""
        # Hand out pieces of the current chunk without copying the rest of it each time.
        end = len(self._buf) if size < 0 else min(len(self._buf), self._pos + size)
        out = self._buf[self._pos : end] if self._pos or end < len(self._buf) else self._buf
        self._pos = end
        return out


# ---- the validating pass (used when COPY finds a bad value) ----

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?$")


T = TypeVar("T")


def prefetched(items: Iterator[T], depth: int = 2) -> Generator[T, None, None]:
    """`items`, produced by a thread of their own up to `depth` ahead: work that lets go of the GIL (Arrow's
    parsing, inflating) runs beside the consumer's. The producer's exception is raised here, as itself."""
    queue_: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[bool, Any]) -> bool:
        """Queue `entry` unless the consumer has stopped; return whether it was queued."""
        while not stop.is_set():
            try:
                queue_.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((True, item)):
                    return
            offer((False, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            offer((False, exc))

    thread = threading.Thread(target=produce, name="taxi-loader-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            more, item = queue_.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it end
            with contextlib.suppress(queue.Empty):
                queue_.get_nowait()
            thread.join(0.05)


def parse_value(value: str, kind: Kind) -> str | None:
    """The canonical text of `value` for a column of `kind` (None for an empty field).

    Raises ValueError with the reason when the value is not valid for its column. Integers written as
    integral floats (`1.0`) are accepted as the integer.
    """
    if value == "":
        return None
    if kind is Kind.TEXT:
        return value.replace("\x00", "")
    v = value.strip(" \t")
    if kind in (Kind.INT, Kind.CODE):
        if v.lstrip("+-").isdigit():
            n = int(v)
        elif _NUMBER.match(v) and float(v).is_integer():
            n = int(float(v))
        else:
            raise ValueError(f"not an integer: {value!r}")
        if kind is Kind.INT and n not in INT_RANGE:
            raise ValueError(f"integer out of range: {value!r}")
        if not -(2**63) <= n < 2**63:
            raise ValueError(f"integer out of range: {value!r}")
        return str(n)
    if kind is Kind.FLOAT:
        if not _NUMBER.match(v):
            raise ValueError(f"not a number: {value!r}")
        number = float(v)
        if abs(number) == float("inf"):
            raise ValueError(f"number out of range: {value!r}")
        # So small that it rounds to 0 (1e-400): PostgreSQL refuses the text, Arrow and Python read 0, which
        # is what the other sinks load. PostgreSQL gets the 0 too.
        if number == 0.0 and v.lower().partition("e")[0].strip("+-.0"):
            return "-0" if v.startswith("-") else "0"
        return v
    if kind is Kind.TIMESTAMP:
        if not _TIMESTAMP.match(v):
            raise ValueError(f"not a timestamp YYYY-MM-DD HH:MM:SS: {value!r}")
        try:
            return datetime.fromisoformat(v).isoformat(" ")
        except ValueError as exc:
            raise ValueError(f"invalid timestamp {value!r}: {exc}") from None
    raise AssertionError(f"unknown kind {kind}")


@dataclass
class Reject:
    """A row that could not be loaded: where it was, which column, why, and the raw line."""

    line: int
    column: str | None
    reason: str
    raw: str


# Rejects kept in memory before the rest go to a temporary file: a month whose every row is rejected (a
# changed timestamp format, say) reads in flat memory; a month within --max-rejects still stores every one.
REJECTS_IN_MEMORY = 10_000


class Rejects:
    """A month's rejected rows in the order found, held in flat memory (see REJECTS_IN_MEMORY).

    With a --max-rejects that is a count, `append` raises BadData as soon as it is passed: the rest of the file
    could only add rejects. A fraction needs the file's row count, so `check_rejects` decides at the end.
    """

    def __init__(self, max_rejects: str | None = None, filename: str = ""):
        self._head: list[Reject] = []
        self._spill: IO[bytes] | None = None
        self._count = 0
        self._limit = fixed_limit(max_rejects) if max_rejects is not None else None
        self._max_rejects, self._filename = max_rejects, filename

    def append(self, reject: Reject) -> None:
        self._count += 1
        if self._limit is not None and self._count > self._limit:
            raise BadData(
                f"{self._filename}: more than {self._limit} rows rejected (--max-rejects {self._max_rejects}), "
                f"the last at line {reject.line}; nothing was loaded. First: {_first(self._head)}"
            )
        if len(self._head) < REJECTS_IN_MEMORY:
            self._head.append(reject)
            return
        if self._spill is None:
            self._spill = tempfile.TemporaryFile()  # noqa: SIM115 (removed when garbage-collected)
        pickle.dump(astuple(reject), self._spill)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Reject]:
        yield from self._head
        if self._spill is not None:
            self._spill.seek(0)
            try:
                while True:
                    yield Reject(*pickle.load(self._spill))
            except EOFError:
                pass

    def extend(self, rejects: Iterable[Reject]) -> None:
        for reject in rejects:
            self.append(reject)

    def first(self, n: int = 3) -> list[Reject]:
        return self._head[:n]


def _first(rejects: list[Reject]) -> str:
    return "; ".join(f"line {r.line}" + (f" {r.column}" if r.column else "") + f": {r.reason}" for r in rejects[:3])


def validated_rows(month_file: MonthFile) -> Iterator[list[str | None] | Reject]:
    """Every data row of the file, checked: a list of canonical values in spec order, or a Reject.

    Line numbers count the header as line 1, like an editor shows them.
    """
    taxi, header = month_file.taxi, month_file.header
    width = len(header.names)
    positions = [header.position(c) for c in taxi.columns]
    lines = (line for chunk in month_file.chunks() for line in chunk.decode("utf-8").split("\n")[:-1])
    for lineno, (raw, fields) in enumerate(_with_fields(lines), start=month_file.first_data_line):
        if isinstance(fields, csv.Error):
            yield Reject(lineno, None, f"not a CSV line: {fields}", raw)
            continue
        if len(fields) != width:
            yield Reject(lineno, None, f"{len(fields)} fields, the header has {width}", raw)
            continue
        row: list[str | None] = []
        for col, pos in zip(taxi.columns, positions, strict=True):
            try:
                row.append(None if pos is None else parse_value(fields[pos], col.kind))
            except ValueError as exc:
                yield Reject(lineno, col.name, str(exc), raw)
                break
        else:
            yield row


def _with_fields(lines: Iterator[str]) -> Iterator[tuple[str, list[str] | csv.Error]]:
    for line in lines:
        try:
            yield line, next(csv.reader([line]), [])
        except csv.Error as exc:  # a field beyond the csv module's limit, say: the line is the file's fault
            yield line, exc


def allowed_rejects(max_rejects: str, rows: int) -> int:
    """How many rejected rows `--max-rejects` allows in a file of `rows` data rows: '100' is a count, '0.5%' or
    '0.005' a fraction. Raises UsageError for anything else (the CLI checks it where it is typed)."""
    text = str(max_rejects).strip()
    try:
        if text.endswith("%"):
            value = float(text[:-1]) / 100
        elif "." in text:
            value = float(text)
        else:
            return _non_negative(int(text))
        if not 0 <= value <= 1:  # also refuses nan and inf
            raise ValueError
        return int(value * rows)
    except ValueError:
        raise UsageError(
            f"invalid --max-rejects {max_rejects!r}: give a count (100) or a fraction (0.1% or 0.001)"
        ) from None


def _non_negative(n: int) -> int:
    if n < 0:
        raise ValueError
    return n


def fixed_limit(max_rejects: str) -> int | None:
    """The rejects --max-rejects allows whatever the file's size: a count; None for a fraction."""
    text = str(max_rejects).strip()
    if text.endswith("%") or "." in text:
        return None
    return allowed_rejects(text, 0)


def check_rejects(rejects: Rejects, rows: int, max_rejects: str, filename: str) -> None:
    """Raise BadData when `rejects` exceed `--max-rejects` for a file of `rows` data rows.

    '100' is a count, '0.5%' or '0.005' a fraction of the data rows. Every sink applies this one rule, and
    refuses a file with no rows at all.
    """
    if rows == 0:  # a header alone: a published month is never empty, and recording it as loaded would lie
        raise BadData(f"{filename}: the file has no rows after its header; nothing was loaded")
    allowed = allowed_rejects(max_rejects, rows)
    if len(rejects) > allowed:
        raise BadData(
            f"{filename}: {len(rejects)} of {rows} rows rejected, more than --max-rejects {max_rejects} allows; "
            f"nothing was loaded. First: {_first(rejects.first())}"
        )
