"""Opening the DuckDB file, one writer at a time, and DuckDB's errors as the project's own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb

from taxi_loader.errors import BadData, ConfigError, TransientError

T = TypeVar("T")

Connection = duckdb.DuckDBPyConnection

# DuckDB's buffer pool. Its default, 80% of the machine's memory, let a month's load grow to 570-900 MB for
# 1.37M rows; with 256 MB it stays at 380 MB at the same speed (DuckDB spills to <file>.tmp when it must).
MEMORY_LIMIT = "256MB"

_writers: dict[Path, threading.Lock] = {}
_writers_lock = threading.Lock()


def connect(path: Path) -> Connection:
    """Open (or create) the database file at `path`.

    Another process holding the file is TransientError (DuckDB allows one process to write a file); a file that
    is not a DuckDB database, or a place where none can be created, is ConfigError (the file is not changed).
    """
    try:
        return duckdb.connect(str(path), config={"memory_limit": MEMORY_LIMIT})
    except duckdb.IOException as exc:
        text = _first_line(exc)
        if "Could not set lock" in text or "Conflicting lock" in text:
            raise TransientError(
                f"the DuckDB file {path} is in use by another process ({text}); DuckDB lets one process write a "
                "file at a time: run the command again when it is done, or give another --duckdb-path"
            ) from None
        if "not a valid DuckDB database" in text:
            raise ConfigError(
                f"{path} is not a DuckDB database (it was left as it is): give another --duckdb-path"
            ) from None
        raise ConfigError(
            f"cannot open the DuckDB file {path} ({text}): its directory must exist and be writable; "
            "give another --duckdb-path"
        ) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]


@contextmanager
def mapped_errors(path: Path) -> Iterator[None]:
    """DuckDB's failures while a step runs, as the exception tree's: an interrupt stays what it is (the
    pipeline reports it), a full disk or memory is transient, tables that are not taxi-loader's are
    configuration, a value DuckDB cannot hold is bad data."""
    try:
        yield
    except duckdb.InterruptException:
        raise
    except (duckdb.IOException, duckdb.OutOfMemoryException, duckdb.TransactionException) as exc:
        raise TransientError(
            f"DuckDB failed writing {path} ({_first_line(exc)}); nothing of the month was kept: free disk or "
            "memory if that is what it says, and run the command again"
        ) from None
    except (duckdb.CatalogException, duckdb.BinderException, duckdb.ConstraintException) as exc:
        raise ConfigError(
            f"the DuckDB file {path} holds a table taxi-loader cannot use ({_first_line(exc)}): "
            "give another --duckdb-path, or drop that table"
        ) from None
    except duckdb.ConversionException as exc:
        raise BadData(f"a value DuckDB cannot store ({_first_line(exc)}); nothing of the month was kept") from None


def once_more_if_interrupted(action: Callable[[], T]) -> T:
    """Run a bookkeeping action; when a cancel meant for the statement before strikes it, run it again."""
    try:
        return action()
    except duckdb.InterruptException:
        return action()


@contextmanager
def writer(path: Path) -> Iterator[None]:
    """Hold the write slot of the file at `path` in this process. DuckDB lets one process open a file for
    writing; within it, taxi-loader writes one month at a time, because two transactions writing the same
    tables would conflict. A backfill's downloads still run side by side."""
    key = path.resolve()
    with _writers_lock:
        lock = _writers.setdefault(key, threading.Lock())
    with lock:
        yield


class Interruptible:
    """A connection as `Cancellation.watching` wants it: `cancel()` interrupts the running query."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def cancel(self) -> None:
        self.conn.interrupt()
