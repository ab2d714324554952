"""The one exception tree of taxi-loader, and the exit code of each branch.

Library code raises these; only the CLI turns them into exit codes and messages (see `exit_code`).
"""

from __future__ import annotations


class TaxiLoaderError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1


class UsageError(TaxiLoaderError):
    """Invalid options or arguments (a month 2021-13, an unknown taxi type)."""

    exit_code = 2


class NotStaged(UsageError):
    """A merge asked for before anything was staged: no load was attempted, the ledger is left alone."""


class ConfigError(TaxiLoaderError):
    """Missing or wrong settings or credentials (a wrong password, a missing bucket setting)."""

    exit_code = 3


class SourceNotFound(TaxiLoaderError):
    """The month's file is not published (HTTP 404/403, a missing local file)."""

    exit_code = 4


class OutsideSource(SourceNotFound):
    """The month lies outside what the source publishes at all (before its first month, a taxi type it does not
    have): known before asking it."""


class BadData(TaxiLoaderError):
    """The file is unusable: wrong header, corrupt or truncated, too many rejected rows."""

    exit_code = 5


class TransientError(TaxiLoaderError):
    """A network, database or cloud failure that outlived its retries."""

    exit_code = 6


class Interrupted(TaxiLoaderError):
    """The run was stopped by SIGINT or SIGTERM."""

    exit_code = 130


class MonthsFailed(TaxiLoaderError):
    """Some months of a backfill were not loaded. The exit code is theirs when they agree; when they differ,
    1 if one of them met a bug, else 130 if the run was interrupted, else 6 if one failed transiently (running
    the backfill again loads at least that month), else the lowest (the most basic cause: usage before
    configuration before data). Months that never started have no code: alone, they were interrupted."""

    def __init__(self, message: str, codes: set[int]):
        super().__init__(message)
        for first in (1, Interrupted.exit_code, TransientError.exit_code):
            if first in codes:
                self.exit_code = first
                break
        else:
            self.exit_code = min(codes, default=Interrupted.exit_code)


def exit_code(exc: BaseException) -> int:
    """The process exit code for `exc`: the mapping docs/architecture.md lists, in one place."""
    if isinstance(exc, TaxiLoaderError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted.exit_code
    return 1
