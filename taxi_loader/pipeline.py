"""The steps of one month's load on any sink, as the CLI and Kestra run them: download, stage, merge, cleanup,
and load (all four in one process); and zones, the lookup the trips' LocationIDs refer to.

Each function takes what it needs as arguments (no environment, no printing) and returns a plain dict of
results that the CLI reports. Which destination it is, is the `Sink`'s business (sinks/base.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taxi_loader import source
from taxi_loader.contract import FAILED, INTERRUPTED
from taxi_loader.errors import Interrupted, NotStaged, SourceNotFound
from taxi_loader.job import NEVER, Cancellation, Job
from taxi_loader.logs import get_logger
from taxi_loader.progress import meter
from taxi_loader.sinks import MonthTarget, Sink
from taxi_loader.source import RetryPolicy
from taxi_loader.zones import read_zones

log = get_logger("taxi_loader")


# What `load` reports beside the merge's counts: the file's own figures, from stage.
_FROM_STAGE = ("rows_read", "rows_repeated", "rows_rejected", "source_sha256", "unchanged")


def download(job: Job, cancel: Cancellation = NEVER) -> dict[str, Any]:
    """Make the month's file available locally (see source.fetch); its bytes go to the watching meter."""

    watcher, started = meter(), list[bool]()

    def report(done: int, total: int | None) -> None:
        cancel.check()
        if not started:
            watcher.step("downloading", total, "bytes")
            started.append(True)
        watcher.update(done)

    job.source.check_published(job.taxi, job.month)
    path = source.fetch(job.taxi, job.month, job.data_dir, job.template, job.retry, report)
    result = {**job.tags, "path": str(path), "bytes": path.stat().st_size}
    log.info("file ready", **result)
    return result


def stage(job: Job, sink: Sink, cancel: Cancellation = NEVER) -> dict[str, Any]:
    """Fetch the file when needed, then write it with its ids into the month's staging area."""
    with _opened(sink, job, cancel) as target:
        return _stage(job, target, cancel)


def merge(job: Job, sink: Sink, cancel: Cancellation = NEVER) -> dict[str, Any]:
    """Insert the month's staged rows that are not in the table yet, all or nothing."""
    with _opened(sink, job, cancel) as target:
        return _merge(job, target, cancel)


def cleanup(job: Job, sink: Sink, remove_object: bool = False) -> dict[str, Any]:
    """Drop the month's staging area and delete its downloaded file (never a local mirror)."""
    with _opened(sink, job, NEVER) as target:
        return _cleanup(job, target, remove_object)


def load(job: Job, sink: Sink, cancel: Cancellation = NEVER) -> dict[str, Any]:
    """download, stage, merge and cleanup in one process; cleanup runs even when a step fails."""
    with _opened(sink, job, cancel, whole_load=True) as target:
        try:
            download(job, cancel)
            staged = _stage(job, target, cancel)
            cancel.check()  # a cancel that fell between two statements must not let the merge start
            merged = _merge(job, target, cancel)
        finally:
            try:
                _cleanup(job, target)
            except Exception as exc:  # noqa: BLE001 - never hide the original error behind a cleanup failure
                log.warning("cleanup failed", error=str(exc), **job.tags)
    return {**merged, **{k: staged[k] for k in _FROM_STAGE if k in staged}}


def zones(sink: Sink, location: str, retry: RetryPolicy = RetryPolicy()) -> dict[str, Any]:
    """Load the taxi zone lookup at `location` (URL or path) into the sink's taxi_zone_lookup, replacing it.

    A download goes to a directory of its own, removed afterwards: the TLC's and the mirror's lookups share a
    file name, and a kept copy would never be refreshed."""
    with tempfile.TemporaryDirectory(prefix="taxi-loader-zones-") as scratch:
        rows = read_zones(source.fetch_file(location, Path(scratch), "the zone lookup", retry))
    table = sink.replace_zones(rows, retry)
    result = {"table": table, "source": source.redact(location), "rows_zones": len(rows)}
    log.info("zones loaded", **result)
    return result


def _stage(job: Job, target: MonthTarget, cancel: Cancellation) -> dict[str, Any]:
    with _noting_failure(target, cancel):
        job.source.check_published(job.taxi, job.month)
        path = source.fetch(job.taxi, job.month, job.data_dir, job.template, job.retry)
        meter().step("staging", None, "rows")
        result = {**target.stage(path), "target": target.target}
    if result.get("extra_columns"):
        log.warning("unknown columns ignored", columns=result["extra_columns"], **job.tags)
    if result.get("unchanged"):
        log.info(
            "the file is the one the month's last load was of, and the table holds it whole: nothing to stage "
            "(--force loads it again)",
            **job.tags,
        )
    elif result.get("rows_rejected"):
        log.warning("rows rejected", rows=result["rows_rejected"], table=job.taxi.rejects_table, **job.tags)
    log.info("staged", **_details(job, result))
    return result


def _merge(job: Job, target: MonthTarget, cancel: Cancellation) -> dict[str, Any]:
    meter().step("merging")
    with _noting_failure(target, cancel):
        result = {**target.merge(), "target": target.target}
    log.info("merged", **{"table": job.taxi.table, **_details(job, result)})
    return result


def _cleanup(job: Job, target: MonthTarget, remove_object: bool = False) -> dict[str, Any]:
    removed = [str(p) for p in source.remove_downloads(job.taxi, job.month, job.data_dir, job.template)]
    result = {**job.tags, **target.cleanup(remove_object), "target": target.target}
    result["files_removed"] = [*result.get("files_removed", []), *removed]
    log.info("cleaned up", **_details(job, result))
    return result


def _details(job: Job, result: dict[str, Any]) -> dict[str, Any]:
    """A step's result as log fields: the job's tags once, the counts and names without their prefixes."""
    return {**{k.removeprefix("rows_"): v for k, v in result.items() if k not in job.tags}, **job.tags}


@contextmanager
def _opened(sink: Sink, job: Job, cancel: Cancellation, whole_load: bool = False) -> Iterator[MonthTarget]:
    """The sink opened for `job`; once cancelled, whatever fails is reported as the interrupt it is."""
    cancel.check()
    try:
        with sink.open(job, cancel, whole_load) as target:
            log.info(f"writing to {sink.title}", target=target.target, **job.tags)
            yield target
    except Interrupted:
        raise
    except BaseException as exc:
        if cancel.cancelled:  # a cancelled query surfaces as a database error: report the interrupt
            raise Interrupted(f"{job.taxi.name} {job.month}: interrupted") from exc
        raise


@contextmanager
def _noting_failure(target: MonthTarget, cancel: Cancellation) -> Iterator[None]:
    """Record in the sink's ledger how a step ended when it fails, then let the failure go on. A merge before
    any stage, or a month its source has not published, is no load at all: the ledger is left alone (status
    would show the month as failed)."""
    try:
        yield
    except (NotStaged, SourceNotFound):
        raise
    except BaseException as exc:
        interrupted = isinstance(exc, (KeyboardInterrupt, Interrupted)) or cancel.cancelled
        message = "interrupted" if interrupted else str(exc) or exc.__class__.__name__
        target.record_failure(INTERRUPTED if interrupted else FAILED, message)
        raise
