"""Opening the DuckDB file: one writer per file (DuckDB's rule), errors that say what to do."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from taxi_loader.errors import ConfigError, TransientError

Connection = duckdb.DuckDBPyConnection

_writers: dict[Path, threading.Lock] = {}
_writers_lock = threading.Lock()


def connect(path: Path, read_only: bool = False) -> Connection:
    """Open (or create) the database file at `path`.

    Another process holding the file is TransientError (DuckDB allows one process to write a file); a file that
    is not a DuckDB database, or a place where none can be created, is ConfigError (the file is not changed).
    """
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        text = str(exc).strip().splitlines()[0]
        if "lock" in text.lower():
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


@contextmanager
def writer(path: Path) -> Iterator[None]:
    """Hold the one write slot of the file at `path` in this process: a backfill's months take turns to write
    (their downloads still run side by side)."""
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
