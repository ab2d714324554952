"""The `taxi-loader` command line: thin commands over the library, errors mapped to exit codes in one place."""

from __future__ import annotations

import functools
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click

from taxi_loader import __version__, pipeline
from taxi_loader import backfill as bf
from taxi_loader import postgres as pg
from taxi_loader.errors import Interrupted, MonthsFailed, TaxiLoaderError, UsageError, exit_code
from taxi_loader.logs import configure, get_logger, kestra_line, result_lines
from taxi_loader.months import Month, select_month
from taxi_loader.source import DEFAULT_SOURCE_URL, RetryPolicy
from taxi_loader.taxis import TAXI_TYPES, get_taxi

ENV_PREFIX = "TAXI_LOADER_"


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper().replace("-", "_")


def option(*decls: str, **kwargs):
    """A click option that also reads TAXI_LOADER_<OPTION> from the environment (DESIGN.md)."""
    long = next(d for d in decls if d.startswith("--")).lstrip("-")
    kwargs.setdefault("envvar", _env(long))
    kwargs.setdefault("show_envvar", True)
    return click.option(*decls, **kwargs)


def month_options(f):
    """--taxi and the three ways of selecting a month."""
    for opt in reversed(
        [
            option(
                "--taxi", required=True, type=click.Choice(list(TAXI_TYPES), case_sensitive=False), help="Taxi type."
            ),
            option("--month", help="YYYY-MM, or MM together with --year."),
            option("--year", help="YYYY, with --month MM."),
            option("--trigger-date", help="The date a schedule fired; loads the month before it."),
        ]
    ):
        f = opt(f)
    return f


def source_options(f):
    for opt in reversed(
        [
            option(
                "--data-dir",
                type=click.Path(path_type=Path),
                default=Path("data"),
                show_default=True,
                help="Where downloaded files are kept.",
            ),
            option(
                "--source-url",
                default=DEFAULT_SOURCE_URL,
                show_default=True,
                help="URL template with {taxi}, {year}, {month}; or a local path / file:// template.",
            ),
            option(
                "--retries",
                type=click.IntRange(1, 100),
                default=5,
                show_default=True,
                help="Attempts for a transient network or database failure.",
            ),
            option(
                "--retry-wait",
                type=click.FloatRange(0),
                default=1.0,
                show_default=True,
                help="First backoff in seconds (doubles each attempt, at most 30).",
            ),
        ]
    ):
        f = opt(f)
    return f


def pg_options(f):
    for opt in reversed(
        [
            option(
                "--db-url",
                help="postgresql://user:password@host:port/db; else the PG* variables apply.",
                show_default=False,
            ),
            option("--schema", default="public", show_default=True, help="Schema of the tables."),
        ]
    ):
        f = opt(f)
    return f


def gcp_options(f):
    """Google Cloud settings, read from the names Kestra users keep in the KV store."""
    for opt in reversed(
        [
            option("--project", envvar=["TAXI_LOADER_PROJECT", "GCP_PROJECT_ID"], help="GCP project id."),
            option("--location", envvar=["TAXI_LOADER_LOCATION", "GCP_LOCATION"], help="BigQuery location, e.g. EU."),
            option(
                "--bucket", envvar=["TAXI_LOADER_BUCKET", "GCP_BUCKET_NAME"], help="GCS bucket for the Parquet objects."
            ),
            option("--dataset", envvar=["TAXI_LOADER_DATASET", "GCP_DATASET"], help="BigQuery dataset."),
            option("--prefix", default="taxi", show_default=True, help="Object prefix in the bucket."),
            option(
                "--credentials-json",
                envvar=["TAXI_LOADER_CREDENTIALS_JSON", "GCP_CREDS"],
                help="The service-account JSON itself (else Application Default Credentials).",
            ),
            option(
                "--storage-endpoint",
                envvar=["TAXI_LOADER_STORAGE_ENDPOINT", "STORAGE_EMULATOR_HOST"],
                help="GCS API endpoint (an emulator or a private endpoint); anonymous credentials then.",
            ),
            option(
                "--bigquery-endpoint",
                envvar=["TAXI_LOADER_BIGQUERY_ENDPOINT", "BIGQUERY_EMULATOR_HOST"],
                help="BigQuery API endpoint (an emulator or a private endpoint); anonymous credentials then.",
            ),
        ]
    ):
        f = opt(f)
    return f


def _gcp(kw: dict):
    from taxi_loader.gcp import GcpSettings

    return GcpSettings(
        project=kw.pop("project", None),
        location=kw.pop("location", None),
        bucket=kw.pop("bucket", None),
        dataset=kw.pop("dataset", None),
        prefix=kw.pop("prefix", "taxi"),
        credentials_json=kw.pop("credentials_json", None),
        storage_endpoint=kw.pop("storage_endpoint", None),
        bigquery_endpoint=kw.pop("bigquery_endpoint", None),
        max_rejects=kw.pop("max_rejects", "0.1%"),
        drop_duplicates=kw.pop("drop_duplicates", False),
    )


def merge_options(f):
    for opt in reversed(
        [
            option(
                "--max-rejects",
                default="0.1%",
                show_default=True,
                help="Rejected rows allowed before the load fails: a count (100) or a fraction (0.1%).",
            ),
            option("--drop-duplicates", is_flag=True, help="Keep only the first of exact repeats inside a file."),
        ]
    ):
        f = opt(f)
    return f


def _job(kw: dict) -> pipeline.Job:
    return pipeline.Job(
        taxi=get_taxi(kw.pop("taxi")),
        month=select_month(kw.pop("month"), kw.pop("year"), kw.pop("trigger_date")),
        data_dir=kw.pop("data_dir", Path("data")),
        source_url=kw.pop("source_url", DEFAULT_SOURCE_URL),
        retry=RetryPolicy(attempts=kw.pop("retries", 5), initial_wait=kw.pop("retry_wait", 1.0)),
    )


def _pg(kw: dict) -> pipeline.PgSettings:
    return pipeline.PgSettings(
        db_url=kw.pop("db_url", None),
        schema=kw.pop("schema", "public"),
        max_rejects=kw.pop("max_rejects", "0.1%"),
        drop_duplicates=kw.pop("drop_duplicates", False),
    )


def progress_bar(label: str) -> Callable[[int, int | None], None] | None:
    """A click progress bar for downloads when stderr is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    state: dict = {}

    def update(done: int, total: int | None) -> None:
        if "bar" not in state:
            state["bar"] = click.progressbar(length=total or 0, label=label, file=sys.stderr)
            state["bar"].__enter__()
            state["last"] = 0
        state["bar"].update(done - state["last"])
        state["last"] = done
        if total and done >= total:
            state["bar"].__exit__(None, None, None)

    return update


def report(step: str, result: dict, tags: dict) -> None:
    """Print a step's results on stdout in the chosen format."""
    ctx = click.get_current_context()
    for line in result_lines(ctx.obj["format"], step, result, tags):
        click.echo(line)


def handled(f):
    """Run a command, turning the exception tree into a message and its exit code (the one place)."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except (TaxiLoaderError, KeyboardInterrupt) as exc:
            message = str(exc) or "interrupted"
            fmt = click.get_current_context().obj["format"]
            if fmt != "console":  # a terminal gets the plain line below; machines get a structured one
                get_logger("taxi_loader").error(message, exit_code=exit_code(exc))
            if fmt != "kestra":
                click.echo(f"Error: {message}", err=True)
            sys.exit(exit_code(exc))
        except Exception as exc:  # a bug or an unforeseen failure: exit 1 with the message, traceback in the log
            get_logger("taxi_loader").exception("unexpected failure")
            click.echo(f"Error: unexpected failure: {exc.__class__.__name__}: {exc}", err=True)
            sys.exit(1)

    return wrapper


def cancellable(work: Callable[[pipeline.Cancellation], dict]) -> dict:
    """Run `work` in a worker thread so that Ctrl-C and SIGTERM, which only the main thread receives, can
    cancel its running query at once instead of after it; then raise Interrupted."""
    cancel = pipeline.Cancellation()
    box: dict = {}
    # An Event, not Thread.join: a join cut short by the signal handler's exception can later return before
    # the thread has ended (CPython gh-90882), and the month would be left unrecorded.
    finished = threading.Event()

    def target() -> None:
        try:
            box["result"] = work(cancel)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            box["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=target, name="taxi-loader-work", daemon=True).start()
    try:
        while not finished.wait(0.2):
            pass
    except (KeyboardInterrupt, Interrupted) as exc:
        get_logger("taxi_loader").warning("stopping: cancelling the running step")
        cancel.cancel()
        finished.wait()
        if "error" in box:
            raise Interrupted(
                f"interrupted ({exc.__class__.__name__}); what was running was rolled back, run it again"
            ) from None
        # else the work ended on its own terms (a backfill reports its interrupted months itself)
    if "error" in box:
        raise box["error"]
    return box["result"]


def _on_sigterm(signum, frame):
    raise Interrupted("stopped by SIGTERM")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="taxi-loader")
@option(
    "--log-format",
    type=click.Choice(["auto", "console", "json", "kestra"]),
    default="auto",
    show_default=True,
    help="Logs: console on a terminal, JSON lines otherwise; kestra for Kestra tasks.",
)
@option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
@click.pass_context
def main(ctx: click.Context, log_format: str, log_level: str) -> None:
    """Load the NYC taxi trip files into PostgreSQL, once per row, safely re-runnable.

    MONTH-SELECTION: --month YYYY-MM | --year YYYY --month MM | --trigger-date DATE (loads the month before).
    """
    ctx.obj = {"format": configure(log_format, log_level)}
    signal.signal(signal.SIGTERM, _on_sigterm)


@main.command()
@month_options
@source_options
@handled
def download(**kw) -> None:
    """Download the month's file into the data dir (resumes, verifies, reuses a complete file)."""
    job = _job(kw)
    result = pipeline.download(job, progress_bar(f"{job.taxi.name} {job.month}"))
    report("download", result, job.tags)


@main.command()
@month_options
@source_options
@pg_options
@option(
    "--max-rejects",
    default="0.1%",
    show_default=True,
    help="Rejected rows allowed before the load fails: a count (100) or a fraction (0.1%).",
)
@handled
def stage(**kw) -> None:
    """Validate the month's file and COPY it into its own staging table (fetches it when needed)."""
    job, settings = _job(kw), _pg(kw)
    report("stage", cancellable(lambda c: pipeline.stage(job, settings, cancel=c)), job.tags)


@main.command("dedup-merge")
@month_options
@pg_options
@option("--drop-duplicates", is_flag=True, help="Keep only the first of exact repeats inside a file.")
@handled
def dedup_merge(**kw) -> None:
    """Insert the staged rows not yet in the main table, in one transaction; record the load in the ledger."""
    job, settings = _job(kw), _pg(kw)
    report("dedup-merge", cancellable(lambda c: pipeline.dedup_merge(job, settings, cancel=c)), job.tags)


@main.command()
@option("--sink", type=click.Choice(["postgres", "bigquery"]), default="postgres", show_default=True)
@month_options
@source_options
@pg_options
@gcp_options
@option("--remove-object", is_flag=True, help="bigquery: also delete the month's Parquet object in GCS.")
@handled
def cleanup(**kw) -> None:
    """Drop the month's staging table and delete its local files (bigquery: --remove-object for the object)."""
    sink, remove_object = kw.pop("sink"), kw.pop("remove_object")
    job = _job(kw)
    if sink == "bigquery":
        report("cleanup", pipeline.cleanup_bigquery(job, _gcp(kw), remove_object), job.tags)
    else:
        report("cleanup", pipeline.cleanup(job, _pg(kw)), job.tags)


@main.command()
@option("--sink", type=click.Choice(["postgres", "bigquery"]), default="postgres", show_default=True)
@month_options
@source_options
@pg_options
@gcp_options
@merge_options
@handled
def load(**kw) -> None:
    """All steps of one sink for one month, in one process (cleanup also runs when a step fails)."""
    sink = kw.pop("sink")
    job = _job(kw)
    progress = progress_bar(f"{job.taxi.name} {job.month}")
    if sink == "bigquery":
        settings = _gcp(kw)
        report("load", cancellable(lambda c: pipeline.load_bigquery(job, settings, progress, cancel=c)), job.tags)
    else:
        settings = _pg(kw)
        report("load", cancellable(lambda c: pipeline.load(job, settings, progress, cancel=c)), job.tags)


@main.command("upload-gcs")
@month_options
@source_options
@gcp_options
@merge_options
@handled
def upload_gcs(**kw) -> None:
    """Validate the month's file, write it as typed Parquet with its ids, upload it to GCS (fetches it if needed)."""
    job = _job(kw)
    report("upload-gcs", pipeline.upload_gcs(job, _gcp(kw)), job.tags)


@main.command("bq-load")
@month_options
@gcp_options
@handled
def bq_load(**kw) -> None:
    """Load the month's GCS object into BigQuery: staging table, MERGE of new rows, ledger, drop staging."""
    job = _job(kw)
    report("bq-load", pipeline.bq_load(job, _gcp(kw)), job.tags)


@main.command()
@option("--sink", type=click.Choice(["postgres", "bigquery"]), default="postgres", show_default=True)
@option("--taxi", default="yellow,green", show_default=True, help="Taxi types, comma-separated.")
@option("--from", "first", help="First month, YYYY-MM.")
@option("--to", "last", help="Last month, YYYY-MM.")
@option("--only", help="Just these months: TAXI:YYYY-MM,... (what a failed backfill prints to retry).")
@option("--jobs", type=click.IntRange(1, 16), default=1, show_default=True, help="Months loaded at once.")
@option("--force", is_flag=True, help="Load months the ledger says are loaded from the same file too.")
@option("--continue-on-error", is_flag=True, help="Go on after a month fails (default: start no new month).")
@source_options
@pg_options
@gcp_options
@merge_options
@handled
def backfill(**kw) -> None:
    """Load every month of a range for one or more taxi types, skipping what is already loaded.

    \b
    taxi-loader backfill --taxi yellow,green --from 2019-01 --to 2021-07 --jobs 2
    """
    sink = kw.pop("sink")
    if kw["only"]:
        pairs = bf.parse_pairs(kw["only"])
    elif kw["first"] and kw["last"]:
        pairs = bf.plan(
            [get_taxi(t) for t in kw["taxi"].split(",") if t], Month.parse(kw["first"]), Month.parse(kw["last"])
        )
    else:
        raise UsageError("give --from YYYY-MM and --to YYYY-MM (or --only TAXI:YYYY-MM,...)")
    template = pipeline.Job(
        taxi=pairs[0][0],
        month=pairs[0][1],
        data_dir=kw["data_dir"],
        source_url=kw["source_url"],
        retry=RetryPolicy(attempts=kw["retries"], initial_wait=kw["retry_wait"]),
    )
    pg_settings = _pg({**kw})  # both read --max-rejects and --drop-duplicates
    settings = _gcp(kw) if sink == "bigquery" else pg_settings
    fmt = click.get_current_context().obj["format"]
    bar = click.progressbar(length=len(pairs), label="backfill", file=sys.stderr) if sys.stderr.isatty() else None

    def on_done(o: bf.Outcome) -> None:
        if bar is not None:
            bar.update(1, f"{o.taxi} {o.month}")
        elif fmt == "kestra":
            tags = {"taxi": o.taxi, "month": o.month, "status": o.status}
            click.echo(
                kestra_line(
                    {
                        "metrics": [
                            {"name": "rows", "type": "counter", "value": o.rows or 0, "tags": tags},
                            {"name": "seconds", "type": "timer", "value": o.seconds, "tags": tags},
                        ]
                    }
                )
            )
        elif fmt == "json":
            click.echo(json.dumps({"step": "backfill-month", **o.__dict__}))
        else:
            rows = f"{o.rows:,} rows" if o.rows is not None else ""
            click.echo(f"{o.taxi} {o.month}: {o.status} {rows} {o.seconds:.1f}s {o.error}".rstrip())

    def work(cancel: pipeline.Cancellation) -> dict:
        outcomes = bf.backfill(
            pairs, template, settings, kw["jobs"], kw["force"], kw["continue_on_error"], on_done, cancel
        )
        return {"outcomes": outcomes}

    try:
        outcomes = cancellable(work)["outcomes"]
    finally:
        if bar is not None:
            bar.render_finish()
    _backfill_summary(outcomes, fmt, sink, pg_settings)


def _backfill_summary(outcomes: list, fmt: str, sink: str, settings: pipeline.PgSettings) -> None:
    counts = {
        s: sum(o.status == s for o in outcomes)
        for s in (bf.LOADED, bf.SKIPPED, bf.UNPUBLISHED, bf.FAILED, bf.INTERRUPTED, bf.NOT_RUN)
    }
    bad = [o for o in outcomes if o.status in (bf.FAILED, bf.INTERRUPTED, bf.NOT_RUN)]
    prefix = f"taxi-loader backfill --sink {sink}" + (
        f" --schema {settings.schema}" if sink == "postgres" and settings.schema != "public" else ""
    )
    retry = bf.retry_command(outcomes, prefix)
    summary = {k.replace(" ", "_"): v for k, v in counts.items()}
    if fmt == "kestra":
        click.echo(kestra_line({"outputs": {**summary, "failed_months": [f"{o.taxi}:{o.month}" for o in bad]}}))
    elif fmt == "json":
        click.echo(json.dumps({"step": "backfill", **summary, "retry": retry}))
    else:
        click.echo(f"\n{'month':<9}{'taxi':<8}{'rows':>13}  {'status':<14}{'seconds':>8}")
        for o in outcomes:
            rows = f"{o.rows:,}" if o.rows is not None else "-"
            click.echo(f"{o.month:<9}{o.taxi:<8}{rows:>13}  {o.status:<14}{o.seconds:>8.1f}")
        click.echo(", ".join(f"{v} {k}" for k, v in counts.items() if v))
    if bad:
        raise MonthsFailed(
            f"{len(bad)} month(s) not loaded: {', '.join(f'{o.taxi} {o.month}' for o in bad)}. "
            f"Retry just those with: {retry} (plus your --db-url / --source-url options)",
            {o.exit_code for o in bad if o.exit_code},
        )


@main.command()
@option("--sink", type=click.Choice(["postgres", "bigquery"]), default="postgres", show_default=True)
@option("--taxi", help="Taxi types, comma-separated (default: all).")
@option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pg_options
@gcp_options
@handled
def status(**kw) -> None:
    """What is loaded: months x taxis from the ledger (rows, when, status), the gaps, rows per taxi and year."""
    taxis = [get_taxi(t) for t in kw["taxi"].split(",")] if kw["taxi"] else None
    if kw["sink"] == "bigquery":
        report_ = bf.status_bigquery(_gcp(kw), taxis)
    else:
        with pg.session(kw["db_url"]) as conn:
            report_ = bf.status(conn, kw["schema"], taxis)
    click.echo(json.dumps(report_, indent=2) if kw["fmt"] == "json" else bf.status_table(report_))


def run() -> None:
    """Console-script entry point."""
    main(prog_name="taxi-loader")


if __name__ == "__main__":  # pragma: no cover
    run()
