"""backfill and status: many months at once, skipping what is loaded, and the picture of what is.

`backfill` loads every (taxi, month) of a range with up to N loads at a time. A month whose last load
succeeded from the same source file (same size, and same sha256 where the file is at hand) is skipped
unless forced. A month its source does not have is "not published": before the source's first month and
after the last month that is there (the TLC's last two months: not published yet) that is no failure; a
404 between two months that are there is a gap in the source, a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

from taxi_loader import pipeline
from taxi_loader.contract import SUCCEEDED, LoadRecord
from taxi_loader.errors import (
    BadData,
    Interrupted,
    OutsideSource,
    SourceNotFound,
    TaxiLoaderError,
    UsageError,
    exit_code,
)
from taxi_loader.job import NEVER, Cancellation, Job
from taxi_loader.logs import get_logger
from taxi_loader.months import Month, month_range
from taxi_loader.progress import Meter, watched_by
from taxi_loader.reader import fingerprint
from taxi_loader.sinks import Sink
from taxi_loader.source import USER_AGENT, Source, local_name, local_path
from taxi_loader.taxis import TAXI_TYPES, TaxiType, get_taxi

log = get_logger("taxi_loader")

Watch = Callable[[TaxiType, Month], AbstractContextManager[Meter]]

LOADED, SKIPPED, UNPUBLISHED, FAILED, INTERRUPTED, NOT_RUN = (
    "loaded",
    "skipped",
    "not published",
    "failed",
    "interrupted",
    "not run",
)
RETRYABLE = (FAILED, INTERRUPTED, NOT_RUN)  # the months a failed backfill's retry command names


@dataclass
class Outcome:
    """How one (taxi, month) of a backfill ended."""

    taxi: str
    month: str
    status: str = NOT_RUN
    rows: int | None = None  # rows of the month's file in the table
    inserted: int | None = None
    read: int | None = None  # the file's data rows (a loaded month's)
    present: int | None = None  # of them, already in the table
    rejected: int | None = None
    repeated: int | None = None
    seconds: float = 0.0
    error: str = ""
    exit_code: int = 0


def parse_pairs(text: str) -> list[tuple[TaxiType, Month]]:
    """'yellow:2020-03,green:2020-07' (what a failed backfill prints to retry) into (taxi, month) pairs."""
    pairs = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        taxi, sep, month = item.partition(":")
        if not sep:
            raise UsageError(f"invalid --only item {item!r}: use TAXI:YYYY-MM, e.g. yellow:2020-03")
        pair = (get_taxi(taxi), Month.parse(month))
        if pair not in pairs:  # a month named twice is loaded once
            pairs.append(pair)
    return pairs


def plan(taxis: list[TaxiType], first: Month, last: Month) -> list[tuple[TaxiType, Month]]:
    """Every (taxi, month) of the range, month by month so that progress moves through time."""
    taxis = list(dict.fromkeys(taxis))  # a taxi named twice is loaded once
    return [(t, m) for m in month_range(first, last) for t in taxis]


def check_sources(pairs: Sequence[tuple[TaxiType, Month]], source: Source) -> None:
    """Refuse, before any work, a plan its source cannot serve at all (UsageError): no month of any of its taxi
    types is published by the source (fhvhv alone from the mirror), or months in a layout taxi-loader does not
    load (yellow before 2011). Months outside a source's range are otherwise fine: "not published"."""
    available: dict[str, bool] = {}
    why: dict[str, str] = {}
    for taxi, month in pairs:
        try:
            source.check_published(taxi, month)
            available[taxi.name] = True
        except OutsideSource as exc:
            available.setdefault(taxi.name, False)
            why[taxi.name] = str(exc)
        except BadData as exc:
            raise UsageError(f"{exc}: start the range later") from None
    if available and not any(available.values()):
        name = next(iter(available))
        raise UsageError(f"nothing of this range can be loaded: {why[name]}")


def source_fingerprint(job: Job) -> tuple[int | None, str | None]:
    """(size, sha256) of the month's source as far as it can be known without downloading it.

    A local file (mirror or earlier download) gives both; a remote one gives its size from a HEAD request.
    """
    location = job.location
    path = local_path(location)
    if path is None:
        downloaded = job.data_dir / local_name(location)
        path = downloaded if downloaded.is_file() else None
    if path is not None:
        if not path.is_file():
            return None, None
        return fingerprint(path)
    import urllib.request  # here: it brings ssl and email along, which a local file does not need

    try:
        request = urllib.request.Request(location, method="HEAD", headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=job.retry.timeout) as response:
            length = response.headers.get("Content-Length")
            return (int(length) if length else None), None
    except Exception:  # noqa: BLE001 - no fingerprint: the month is simply loaded
        return None, None


def backfill(
    pairs: list[tuple[TaxiType, Month]],
    template: Job,
    sink: Sink,
    jobs: int = 1,
    force: bool = False,
    continue_on_error: bool = False,
    on_done: Callable[[Outcome], None] = lambda o: None,
    cancel: Cancellation = NEVER,
    watch: Watch = lambda taxi, month: nullcontext(Meter()),
) -> list[Outcome]:
    """Load every pair into `sink` with up to `jobs` loads at once; return one Outcome per pair, in plan order.

    `template` gives every job but its taxi and month. Without `continue_on_error`, no new month starts
    after the first failure (running ones finish).
    `on_done` is called as each month ends (the CLI prints progress from it); `watch` gives the meter each
    month's load reports to while it runs (the CLI's line for it).
    """
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    outcomes = {(t.name, str(m)): Outcome(t.name, str(m)) for t, m in pairs}
    todo = list(pairs)
    stop = False
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="backfill") as pool:
        running: dict[Future, tuple[TaxiType, Month]] = {}
        while todo or running:
            while todo and len(running) < jobs and not stop and not cancel.cancelled:
                taxi, month = todo.pop(0)
                job = replace(template, taxi=taxi, month=month)
                running[pool.submit(_one, job, sink, force, cancel, watch)] = (taxi, month)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                taxi, month = running.pop(future)
                outcome = future.result()
                outcomes[(taxi.name, str(month))] = outcome
                if outcome.status == FAILED and not continue_on_error:
                    stop = True
                on_done(outcome)
    result = [outcomes[(t.name, str(m))] for t, m in pairs]
    _settle_unpublished(result)
    return result


def _one(job: Job, sink: Sink, force: bool, cancel: Cancellation, watch: Watch) -> Outcome:
    outcome = Outcome(job.taxi.name, str(job.month))
    start = time.monotonic()
    try:
        cancel.check()
        if not force:
            size, sha256 = source_fingerprint(job)
            last = next(iter(sink.last_loads([job.taxi], job.month, job.retry)), None)
            if last and last.loaded_from(size, sha256):
                outcome.status, outcome.rows = SKIPPED, last.rows
                return outcome
        with watch(job.taxi, job.month) as watcher, watched_by(watcher):
            result = pipeline.load(job, sink, cancel=cancel)
        # stage may find the file loaded whole when the ledger check above could not tell (a remote file)
        outcome.status, outcome.inserted = SKIPPED if result.get("unchanged") else LOADED, result["rows_inserted"]
        outcome.rows = result["rows_inserted"] + result["rows_present"]
        outcome.read, outcome.present = result.get("rows_read"), result["rows_present"]
        outcome.rejected, outcome.repeated = result.get("rows_rejected"), result.get("rows_repeated")
    except (Interrupted, KeyboardInterrupt) as exc:
        outcome.status, outcome.error, outcome.exit_code = INTERRUPTED, str(exc) or "interrupted", exit_code(exc)
    except SourceNotFound as exc:
        # Outside the source's months: settled now. A 404: settled once the whole range is known.
        outcome.status, outcome.error = UNPUBLISHED, str(exc)
        outcome.exit_code = 0 if isinstance(exc, OutsideSource) else exc.exit_code
    except TaxiLoaderError as exc:
        outcome.status, outcome.error, outcome.exit_code = FAILED, str(exc), exc.exit_code
    except Exception as exc:  # noqa: BLE001 - one month's bug must not stop the report of the others
        log.exception("unexpected failure", taxi=job.taxi.name, month=str(job.month))
        outcome.status, outcome.error, outcome.exit_code = FAILED, f"{exc.__class__.__name__}: {exc}", 1
    finally:
        outcome.seconds = round(time.monotonic() - start, 2)
    return outcome


def _settle_unpublished(outcomes: list[Outcome]) -> None:
    """A month its source does not have is "not published". Outside the source's months (before its first
    one) that is known and no failure; a 404 after a taxi's last month that is there is "not published yet",
    no failure either; a 404 before a month that is there is a gap in the source: a failure, which the retry
    command names."""
    by_taxi: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_taxi.setdefault(o.taxi, []).append(o)
    for items in by_taxi.values():
        there = [i for i, o in enumerate(items) if o.status not in (UNPUBLISHED, NOT_RUN)]
        last = there[-1] if there else -1
        for i, o in enumerate(items):
            if o.status == UNPUBLISHED and o.exit_code:
                if i < last:
                    o.status = FAILED
                else:
                    o.exit_code = 0


def retry_command(outcomes: list[Outcome], argv_prefix: str) -> str | None:
    """The command that retries just the failed and interrupted months, or None when there are none."""
    bad = [f"{o.taxi}:{o.month}" for o in outcomes if o.status in RETRYABLE]
    return f"{argv_prefix} --only {','.join(bad)}" if bad else None


# ---------------------------------------------------------------- status


def status(sink: Sink, taxis: Sequence[TaxiType] | None = None) -> dict[str, Any]:
    """What the sink's ledger says is loaded: the last load of every (taxi, month), gaps, totals; and the
    rows of the zone lookup (None: not loaded)."""
    return {**summarize(sink.last_loads(list(taxis or TAXI_TYPES.values()))), "zones": sink.zone_count()}


def summarize(records: list[LoadRecord]) -> dict[str, Any]:
    """The months, the gaps between the first and last loaded month of each taxi, the rows per taxi and year."""
    gaps: dict[str, list[str]] = {}
    totals: dict[str, dict[str, int]] = {}
    for taxi in sorted({r.taxi for r in records}):
        mine = [r for r in records if r.taxi == taxi]
        loaded = {r.month for r in mine if r.status == SUCCEEDED}
        if loaded:
            span = month_range(Month.parse(min(loaded)), Month.parse(max(loaded)))
            gaps[taxi] = [str(m) for m in span if str(m) not in loaded]
        for r in mine:
            if r.status == SUCCEEDED and r.rows is not None:
                year = r.month[:4]
                totals.setdefault(taxi, {})[year] = totals.get(taxi, {}).get(year, 0) + r.rows
    months = [
        {
            "taxi": r.taxi,
            "month": r.month,
            "status": r.status,
            "rows": r.rows,
            "finished_at": r.finished_at,
            "format": r.format,
        }
        for r in sorted(records, key=lambda r: (r.month, r.taxi))
    ]
    return {"months": months, "gaps": gaps, "totals": totals}
