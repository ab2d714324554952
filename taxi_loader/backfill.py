"""backfill and status: many months at once, skipping what is loaded, and the picture of what is.

`backfill` loads every (taxi, month) of a range with up to N loads at a time. A month whose last load
succeeded from the same source file (same size, and same sha256 where the file is at hand) is skipped
unless forced. Months not published (404) at the end of a taxi's range are reported as such, not as
failures: the course's mirror simply stops there.
"""

from __future__ import annotations

import hashlib
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

from psycopg2 import sql

from taxi_loader import pipeline
from taxi_loader import postgres as pg
from taxi_loader.errors import Interrupted, SourceNotFound, TaxiLoaderError, UsageError, exit_code
from taxi_loader.logs import get_logger
from taxi_loader.months import Month, month_range
from taxi_loader.source import USER_AGENT, local_name, local_path
from taxi_loader.taxis import TAXI_TYPES, TaxiType, get_taxi

log = get_logger("taxi_loader")

LOADED, SKIPPED, UNPUBLISHED, FAILED, INTERRUPTED, NOT_RUN = (
    "loaded",
    "skipped",
    "not published",
    "failed",
    "interrupted",
    "not run",
)
NOT_FOUND = "not found"  # a 404, until the whole range is known: UNPUBLISHED at the end, FAILED in a gap


@dataclass
class Outcome:
    """How one (taxi, month) of a backfill ended."""

    taxi: str
    month: str
    status: str = NOT_RUN
    rows: int | None = None  # rows of the month's file in the table
    inserted: int | None = None
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
        pairs.append((get_taxi(taxi), Month.parse(month)))
    return pairs


def plan(taxis: list[TaxiType], first: Month, last: Month) -> list[tuple[TaxiType, Month]]:
    """Every (taxi, month) of the range, month by month so that progress moves through time."""
    return [(t, m) for m in month_range(first, last) for t in taxis]


def source_fingerprint(job: pipeline.Job) -> tuple[int | None, str | None]:
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
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return path.stat().st_size, digest.hexdigest()
    try:
        request = urllib.request.Request(location, method="HEAD", headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=job.retry.timeout) as response:
            length = response.headers.get("Content-Length")
            return (int(length) if length else None), None
    except Exception:  # noqa: BLE001 - no fingerprint: the month is simply loaded
        return None, None


def already_loaded(conn, tables: pg.Tables, month: Month, size: int | None, sha256: str | None) -> dict | None:
    """The month's last load, when it succeeded from a file of this size (and checksum, when known)."""
    if size is None:
        return None
    pg.ensure_support_tables(conn, tables)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("""
            SELECT status, source_size, source_sha256, rows_after, rows_inserted FROM {}
            WHERE sink = 'postgres' AND taxi = %s AND month = %s AND status <> 'staged'
            ORDER BY load_id DESC LIMIT 1""").format(tables.ledger),
            (tables.taxi.name, str(month)),
        )
        row = cur.fetchone()
    conn.commit()
    if not row or row[0] != "succeeded" or row[1] != size or (sha256 and row[2] != sha256):
        return None
    return {"rows_after": row[3]}


def _loaded_in_postgres(job: pipeline.Job, settings: pipeline.PgSettings, size, sha256) -> dict | None:
    with pg.session(settings.db_url, job.retry) as conn:
        found = already_loaded(conn, pg.Tables(settings.schema, job.taxi), job.month, size, sha256)
    return {"rows": found["rows_after"]} if found else None


def _loaded_in_bigquery(job: pipeline.Job, settings, size, sha256) -> dict | None:
    from taxi_loader import gcp

    last = next((r for r in gcp.ledger_rows(settings, [job.taxi]) if r["month"] == str(job.month)), None)
    if not last or last["status"] != "succeeded" or size is None or last["source_size"] != size:
        return None
    if sha256 and last["source_sha256"] != sha256:
        return None
    return {"rows": last["rows"]}


def backfill(
    pairs: list[tuple[TaxiType, Month]],
    template: pipeline.Job,
    settings,
    jobs: int = 1,
    force: bool = False,
    continue_on_error: bool = False,
    on_done: Callable[[Outcome], None] = lambda o: None,
    cancel: pipeline.Cancellation = pipeline.NEVER,
) -> list[Outcome]:
    """Load every pair with up to `jobs` loads at once; return one Outcome per pair, in plan order.

    `settings` picks the sink: pipeline.PgSettings for PostgreSQL, gcp.GcpSettings for GCS + BigQuery.

    Without `continue_on_error`, no new month starts after the first failure (running ones finish).
    `on_done` is called as each month ends (the CLI prints progress from it).
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
                running[pool.submit(_one, job, settings, force, cancel)] = (taxi, month)
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
    _unpublished_at_the_end(result)
    return result


def _one(job: pipeline.Job, settings, force: bool, cancel: pipeline.Cancellation) -> Outcome:
    outcome = Outcome(job.taxi.name, str(job.month))
    start = time.monotonic()
    bigquery = not isinstance(settings, pipeline.PgSettings)
    try:
        cancel.check()
        if not force:
            size, sha256 = source_fingerprint(job)
            loaded = (_loaded_in_bigquery if bigquery else _loaded_in_postgres)(job, settings, size, sha256)
            if loaded:
                outcome.status, outcome.rows = SKIPPED, loaded["rows"]
                return outcome
        if bigquery:
            result = pipeline.load_bigquery(job, settings, cancel=cancel)
        else:
            result = pipeline.load(job, settings, cancel=cancel)
        outcome.status, outcome.inserted = LOADED, result["rows_inserted"]
        outcome.rows = result["rows_inserted"] + result["rows_present"]
    except (Interrupted, KeyboardInterrupt) as exc:
        outcome.status, outcome.error, outcome.exit_code = INTERRUPTED, str(exc) or "interrupted", exit_code(exc)
    except SourceNotFound as exc:
        outcome.status, outcome.error, outcome.exit_code = NOT_FOUND, str(exc), exc.exit_code
    except TaxiLoaderError as exc:
        outcome.status, outcome.error, outcome.exit_code = FAILED, str(exc), exc.exit_code
    except Exception as exc:  # noqa: BLE001 - one month's bug must not stop the report of the others
        log.exception("unexpected failure", taxi=job.taxi.name, month=str(job.month))
        outcome.status, outcome.error, outcome.exit_code = FAILED, f"{exc.__class__.__name__}: {exc}", 1
    finally:
        outcome.seconds = round(time.monotonic() - start, 2)
    return outcome


def _unpublished_at_the_end(outcomes: list[Outcome]) -> None:
    """A 404 is 'not published' when every later month of that taxi in the range is a 404 too."""
    by_taxi: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_taxi.setdefault(o.taxi, []).append(o)
    for items in by_taxi.values():
        for o in reversed(items):
            if o.status == NOT_FOUND:
                o.status, o.exit_code = UNPUBLISHED, 0
            elif o.status != NOT_RUN:
                break
    for o in outcomes:
        if o.status == NOT_FOUND:
            o.status = FAILED


def retry_command(outcomes: list[Outcome], argv_prefix: str) -> str | None:
    """The command that retries just the failed and interrupted months, or None when there are none."""
    bad = [f"{o.taxi}:{o.month}" for o in outcomes if o.status in (FAILED, INTERRUPTED, NOT_RUN)]
    return f"{argv_prefix} --only {','.join(bad)}" if bad else None


# ---------------------------------------------------------------- status


@dataclass
class MonthStatus:
    taxi: str
    month: str
    status: str
    rows: int | None
    finished_at: str | None


def status(conn, schema: str, taxis: list[TaxiType] | None = None) -> dict:
    """What the PostgreSQL ledger says is loaded: the last load of every (taxi, month), gaps, totals."""
    taxis = taxis or list(TAXI_TYPES.values())
    tables = pg.Tables(schema, taxis[0])
    if not _exists(conn, tables.ledger):
        return summarize([])
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("""
            SELECT DISTINCT ON (taxi, month) taxi, month, status, rows_after, finished_at
            FROM {} WHERE sink = 'postgres' AND taxi = ANY(%s) AND status <> 'staged'
            ORDER BY taxi, month, load_id DESC""").format(tables.ledger),
            ([t.name for t in taxis],),
        )
        rows = [MonthStatus(t, m, s, r, f.isoformat(timespec="seconds") if f else None) for t, m, s, r, f in cur]
    conn.commit()
    return summarize(rows)


def status_bigquery(settings, taxis: list[TaxiType] | None = None) -> dict:
    """The same picture from the BigQuery dataset's ledger."""
    from taxi_loader import gcp

    rows = gcp.ledger_rows(settings, taxis or list(TAXI_TYPES.values()))
    return summarize([MonthStatus(r["taxi"], r["month"], r["status"], r["rows"], r["finished_at"]) for r in rows])


def summarize(rows: list[MonthStatus]) -> dict:
    """The months, the gaps between the first and last loaded month of each taxi, the rows per taxi and year."""
    gaps: dict[str, list[str]] = {}
    totals: dict[str, dict[str, int]] = {}
    for taxi in sorted({r.taxi for r in rows}):
        mine = [r for r in rows if r.taxi == taxi]
        loaded = {r.month for r in mine if r.status == "succeeded"}
        if loaded:
            span = month_range(Month.parse(min(loaded)), Month.parse(max(loaded)))
            gaps[taxi] = [str(m) for m in span if str(m) not in loaded]
        for r in mine:
            if r.status == "succeeded" and r.rows is not None:
                year = r.month[:4]
                totals.setdefault(taxi, {})[year] = totals.get(taxi, {}).get(year, 0) + r.rows
    return {
        "months": [r.__dict__ for r in sorted(rows, key=lambda r: (r.month, r.taxi))],
        "gaps": gaps,
        "totals": totals,
    }


def _exists(conn, ident: sql.Identifier) -> bool:
    with conn.cursor() as cur:
        found = pg.relation_exists(cur, ident)
    conn.commit()
    return found


def status_table(report: dict) -> str:
    """The months x taxis matrix, the gaps and the totals, as text for a terminal."""
    months = sorted({r["month"] for r in report["months"]})
    taxis = sorted({r["taxi"] for r in report["months"]})
    if not months:
        return "nothing loaded yet"
    cell = {(r["taxi"], r["month"]): r for r in report["months"]}
    lines = ["month    " + "".join(f"{t:>24}" for t in taxis)]
    for m in months:
        parts = []
        for t in taxis:
            r = cell.get((t, m))
            if not r:
                parts.append(f"{'-':>24}")
            elif r["status"] == "succeeded":
                parts.append(f"{r['rows']:>14,} {r['finished_at'][:10]:>9}" if r["rows"] is not None else f"{'ok':>24}")
            else:
                parts.append(f"{r['status'].upper():>24}")
        lines.append(f"{m:<9}" + "".join(parts))
    lines.append("")
    for t in taxis:
        gaps = report["gaps"].get(t) or []
        lines.append(f"{t}: gaps {', '.join(gaps) if gaps else 'none'}")
        for year, n in sorted(report["totals"].get(t, {}).items()):
            lines.append(f"{t} {year}: {n:,} rows")
    return "\n".join(lines)
