"""One unit of work, and the way to stop it: a `Job` is one (taxi, month) with where its file comes from and
how it is checked; a `Cancellation` lets another thread stop the steps that run it.

Both are shared by the pipeline and every sink, so they live below them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taxi_loader.errors import Interrupted
from taxi_loader.logs import get_logger
from taxi_loader.months import Month
from taxi_loader.reader import DEFAULT_MAX_REJECTS
from taxi_loader.source import RetryPolicy, Source, redact, source_location
from taxi_loader.taxis import TaxiType

log = get_logger("taxi_loader")


@dataclass(frozen=True)
class Job:
    """One (taxi, month), where its file comes from, and the rules its rows are loaded by."""

    taxi: TaxiType
    month: Month
    data_dir: Path = Path("data")
    source: Source = field(default_factory=Source)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_rejects: str = DEFAULT_MAX_REJECTS  # rejected rows allowed before the month fails (reader.check_rejects)
    drop_duplicates: bool = False  # keep only the first of exact repeats inside the file
    force: bool = False  # stage even a file identical to the month's last load, held whole (see contract.held_whole)

    @property
    def template(self) -> str:
        """The template the month's file is found by (the mirror's, the TLC's, or the user's --source-url)."""
        return self.source.template(self.taxi, self.month)

    @property
    def location(self) -> str:
        """The URL or path of the month's file."""
        return source_location(self.template, self.taxi, self.month)

    @property
    def source_label(self) -> str:
        """The month's file as the ledger records it and messages show it: a URL's password and query masked."""
        return redact(self.location)

    @property
    def filename(self) -> str:
        """The name the tables record in `filename` (the uncompressed CSV's)."""
        return self.taxi.filename(str(self.month))

    @property
    def tags(self) -> dict[str, str]:
        """The fields that name this job in logs, results and Kestra metrics."""
        return {"taxi": self.taxi.name, "month": str(self.month)}


class Cancellation:
    """Lets another thread stop running steps: a flag, and the connections whose running query to cancel.

    The CLI sets it on Ctrl-C or SIGTERM; the running statement is cancelled, its transaction rolls back,
    the ledger records the month as interrupted and cleanup still drops the staging table.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[Any, int] = {}  # connection -> how many steps use it (load lends its own to each)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        """Set the flag and cancel the running statement of every watched connection."""
        self._event.set()
        with self._lock:
            for conn in list(self._connections):  # noqa: SIM118 - a snapshot, the dict may change
                try:
                    conn.cancel()
                except Exception as exc:  # noqa: BLE001 - best effort: the connection may be closing
                    log.debug("cancel failed", error=str(exc))

    def check(self) -> None:
        """Raise Interrupted when cancelled (called between blocks of work)."""
        if self.cancelled:
            raise Interrupted("interrupted")

    @contextmanager
    def watching(self, conn: Any) -> Iterator[None]:
        """While inside, `cancel()` also cancels what `conn` (anything with a `cancel()` method) is running."""
        with self._lock:
            self._connections[conn] = self._connections.get(conn, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._connections[conn] -= 1
                if not self._connections[conn]:
                    del self._connections[conn]


NEVER = Cancellation()  # for callers that never cancel
