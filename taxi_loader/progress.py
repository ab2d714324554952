"""How far a month's running step has come, for whoever watches: the CLI's live display on a terminal.

Library code reports to the meter of its context (`meter()`); with nobody watching that is the do-nothing
base class, so reporting costs a method call. The watcher sets its meter for the work it starts
(`watched_by`), in the thread that does the work: a reader takes the meter when it is opened, so the threads
it feeds report to the same one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Meter:
    """Receives one month's progress. This base class ignores it: nobody is watching."""

    def step(self, name: str, total: int | None = None, unit: str = "") -> None:
        """A step starts: `name` (downloading, staging, merging...), its size in `unit` (bytes, rows) if known."""

    def update(self, done: int) -> None:
        """How much of the running step is done, in its unit (a running total, not an increment)."""


_NOBODY = Meter()
_current: ContextVar[Meter] = ContextVar("taxi_loader_meter", default=_NOBODY)


def meter() -> Meter:
    """The meter watching the work of this context."""
    return _current.get()


@contextmanager
def watched_by(watcher: Meter) -> Iterator[Meter]:
    """Report the progress of the work done inside the block to `watcher`."""
    token = _current.set(watcher)
    try:
        yield watcher
    finally:
        _current.reset(token)
