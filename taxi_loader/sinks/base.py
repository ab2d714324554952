"""The shape every sink has: what `pipeline`, `backfill` and the CLI call without knowing the destination.

A load of one month on one sink is: `Sink.open` (a connection, a lock: whatever the sink needs for the month),
then on the `MonthTarget` it yields `stage` (the file into the sink's staging area, each row with its id),
`merge` (staging into the table, each row once, the ledger updated) and `cleanup` (staging and temporary
files gone). `Sink.last_loads` reads the sink's ledger for `status` and for backfill's skip decisions;
`Sink.replace_zones` and `Sink.zone_count` keep the taxi zone lookup.

Results are plain dicts of JSON-able values (what the CLI reports); counts are named `rows_*`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, Protocol

from taxi_loader.contract import LoadRecord
from taxi_loader.job import Cancellation, Job
from taxi_loader.months import Month
from taxi_loader.source import RetryPolicy
from taxi_loader.taxis import TaxiType
from taxi_loader.zones import Zone


class MonthTarget(Protocol):
    """One month's load on one sink, as `Sink.open` yields it."""

    target: str  # where the month is written, for messages and results (never a password)

    def stage(self, path: Path) -> dict[str, Any]:
        """Validate the file at `path` and write it, each row with its id, into the month's staging area.

        Too many rejected rows raise BadData with nothing staged."""
        ...

    def merge(self) -> dict[str, Any]:
        """Insert the staged rows whose id the table does not hold yet, all or nothing; record the load."""
        ...

    def cleanup(self, remove_object: bool = False) -> dict[str, Any]:
        """Drop the month's staging area and temporary files (and the kept object, where the sink keeps one
        and `remove_object` asks)."""
        ...

    def record_failure(self, status: str, message: str) -> None:
        """Note in the ledger that the load ended `status` ('failed' or 'interrupted'); best effort, never
        raises."""
        ...


class Sink(Protocol):
    """A destination: where the tables are, and how to open a month's load there."""

    name: ClassVar[str]  # the value of --sink
    title: ClassVar[str]  # its name in messages (PostgreSQL)

    def open(self, job: Job, cancel: Cancellation, whole_load: bool = False) -> AbstractContextManager[MonthTarget]:
        """Ready the sink for `job` (connect, create what is missing). `whole_load`: the target serves every step
        of one load, so it holds whatever keeps a second load of the month out (PostgreSQL: the month's lock).
        Running work registers with `cancel` where the sink can stop it mid-statement."""
        ...

    def last_loads(
        self, taxis: Sequence[TaxiType], month: Month | None = None, retry: RetryPolicy = RetryPolicy()
    ) -> list[LoadRecord]:
        """The last finished load of every (taxi, month) of `taxis`, of just `month` when given."""
        ...

    def target_options(self) -> list[str]:
        """The command-line options that name where this sink writes, beyond its defaults (for the command a
        failed backfill prints to retry)."""
        ...

    def replace_zones(self, zones: Sequence[Zone], retry: RetryPolicy = RetryPolicy()) -> str:
        """Make `zones` the whole of the zone lookup table (zones.py), in one step: a reader sees the old table
        or the new one. Returns where the table is, for messages."""
        ...

    def zone_count(self, retry: RetryPolicy = RetryPolicy()) -> int | None:
        """The rows of the zone lookup table; None when there is none."""
        ...


class SinkClass(Protocol):
    """What `SINKS` holds: a sink's class, with its name and settings type, that makes a Sink from settings."""

    name: str
    title: str
    Settings: type[Any]  # a frozen dataclass; each field's metadata is the help of its command-line option

    def __call__(self, settings: Any) -> Sink: ...
