"""The `taxi-loader` command line: thin commands over the library, errors mapped to exit codes in one place."""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from taxi_loader import __version__, pipeline
from taxi_loader import backfill as bf
from taxi_loader.errors import Interrupted, MonthsFailed, TaxiLoaderError, UsageError, exit_code
from taxi_loader.job import Cancellation, Job
from taxi_loader.logs import (
    backfill_month_lines,
    backfill_summary_lines,
    configure,
    get_logger,
    result_lines,
)
from taxi_loader.months import Month, select_month
from taxi_loader.progress import Meter, watched_by
from taxi_loader.reader import DEFAULT_MAX_REJECTS, allowed_rejects
from taxi_loader.sinks import SINKS, Sink, make_sink
from taxi_loader.source import MIRROR_MONTHS, MIRROR_URL, SOURCES, TLC_URL, RetryPolicy, Source
from taxi_loader.taxis import TAXI_TYPES, TaxiType, get_taxi
from taxi_loader.zones import MIRROR_ZONES_URL, TLC_ZONES_URL

if TYPE_CHECKING:
    from taxi_loader.console import Screen

ENV_PREFIX = "TAXI_LOADER_"


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper().replace("-", "_")


def option(*decls: str, **kwargs):
    """A click option that also reads TAXI_LOADER_<OPTION> from the environment (docs/architecture.md)."""
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
            option(
                "--trigger-date",
                help="The date a schedule fired (YYYY-MM-DD or an ISO date-time such as 2021-02-01T10:00:00Z); "
                "loads the month before it.",
            ),
        ]
    ):
        f = opt(f)
    return f


_MIRROR_SPAN = "{}..{}".format(*next(iter(MIRROR_MONTHS.values())))


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
                "--source",
                type=click.Choice(SOURCES, case_sensitive=False),
                default="auto",
                show_default=True,
                help=f"Where files come from: mirror (the course's CSV.gz, {_MIRROR_SPAN}), tlc (the TLC's "
                "Parquet, every month it has published), auto (the mirror where it has the month, else the TLC).",
            ),
            option(
                "--source-url",
                help="One URL template with {taxi}, {year}, {month} (or a local path / file:// template) for "
                "every month, CSV(.gz) or Parquet; overrides --source.",
            ),
            option("--mirror-url", default=MIRROR_URL, show_default=True, help="The course mirror's template."),
            option("--tlc-url", default=TLC_URL, show_default=True, help="The TLC's template."),
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
            option(
                "--download-timeout",
                type=click.FloatRange(1),
                default=1800.0,
                show_default=True,
                help="Seconds one download attempt may take in all (a server that sends a byte now and then "
                "never trips the per-read timeout); the next attempt resumes.",
            ),
        ]
    ):
        f = opt(f)
    return f


def sink_options(*names: str):
    """The options of the named sinks' settings (all sinks when none is named), from their fields' metadata."""
    seen: set[str] = set()

    def decorate(f):
        for name in reversed(names or tuple(SINKS)):
            for setting in reversed(fields(SINKS[name].Settings)):
                if setting.name in seen:
                    continue
                seen.add(setting.name)
                meta = dict(setting.metadata)  # --help shows them under their sink's heading (_Command)
                meta.setdefault("show_default", False)
                default = None if setting.default is MISSING else setting.default
                f = option(f"--{setting.name.replace('_', '-')}", default=default, **meta)(f)
        return f

    return decorate


def sink_choice(f):
    """--sink: which destination (the one place a sink is chosen by name is `_sink`)."""
    return option(
        "--sink",
        type=click.Choice(list(SINKS)),
        help="Which sink. Default: postgres when a PostgreSQL is configured (--db-url, TAXI_LOADER_DB_URL or a "
        "PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD... variable), else the DuckDB file of --duckdb-path.",
    )(f)


def fixed_sink(name: str):
    """--sink on a step that belongs to one sink: accepted (only as that sink), so that every command of a
    step-by-step load can say which sink it is, the same way. TAXI_LOADER_SINK does not apply to it."""
    return option(
        "--sink",
        type=click.Choice([name]),
        default=name,
        envvar=None,
        show_envvar=False,
        help=f"This step is the {name} sink's; --sink {name} may be given like on every other command.",
    )


# libpq's variables that say where a PostgreSQL is
_PG_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE")


def _sink(name: str | None, kw: dict) -> Sink:
    """The sink called `name` (None: the default, see sink_choice), configured from the command's options."""
    chosen = name
    if name is None:
        configured = kw.get("db_url") or any(os.environ.get(v) for v in _PG_VARIABLES)
        name = "postgres" if configured else "duckdb"
    _refuse_other_sinks_options(name, chosen is None)
    if chosen is None and name == "duckdb":
        path = Path(kw["duckdb_path"]).resolve()
        get_logger("taxi_loader").info(
            f"no PostgreSQL configured: using the DuckDB file {path} (--sink postgres and --db-url for PostgreSQL); "
            f'look inside with: duckdb {path} "show tables"'
        )
    sink = make_sink(name, kw)
    for setting in (f for kind in SINKS.values() for f in fields(kind.Settings)):
        kw.pop(setting.name, None)
    return sink


def _refuse_other_sinks_options(name: str, by_default: bool) -> None:
    """A sink's option typed on the command line for a command that loads into another sink is a mistake
    (`--schema taxi` when no PostgreSQL is configured would otherwise go unnoticed)."""
    ctx = click.get_current_context()
    for other, kind in SINKS.items():
        for setting in fields(kind.Settings) if other != name else ():
            if ctx.get_parameter_source(setting.name) is click.core.ParameterSource.COMMANDLINE:
                why = " (no PostgreSQL is configured)" if by_default else ""
                raise UsageError(
                    f"--{setting.name.replace('_', '-')} is an option of the {other} sink, but this command uses "
                    f"{name}{why}: pass --sink {other}, or leave the option out"
                )


def _max_rejects(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Check --max-rejects where it is typed, not after a whole month was read."""
    try:
        allowed_rejects(value, 1000)
    except UsageError as exc:
        raise click.BadParameter(str(exc).removeprefix(f"invalid --max-rejects {value!r}: ")) from None
    return value


max_rejects_option = option(
    "--max-rejects",
    default=DEFAULT_MAX_REJECTS,
    callback=_max_rejects,
    show_default=True,
    help="Rejected rows allowed before the load fails: a count (100) or a fraction (0.1%).",
)
force_option = option(
    "--force",
    is_flag=True,
    help="Load the file even when it is the one the month's last load was of and the table holds it whole "
    "(else that is recognised from its size and checksum, and nothing is staged).",
)
drop_duplicates_option = option(
    "--drop-duplicates", is_flag=True, help="Keep only the first of exact repeats inside a file."
)


def merge_options(f):
    """The rules a month's rows are loaded by: --max-rejects and --drop-duplicates."""
    return max_rejects_option(drop_duplicates_option(f))


def _job_options(kw: dict) -> dict:
    """Job fields from the command's options (the ones it has), taken out of `kw`."""
    return {
        "data_dir": kw.pop("data_dir", Path("data")),
        "source": Source(
            kw.pop("source", "auto").lower(),
            kw.pop("source_url", None) or None,
            kw.pop("mirror_url", MIRROR_URL),
            kw.pop("tlc_url", TLC_URL),
        ),
        "retry": RetryPolicy(
            attempts=kw.pop("retries", 5),
            initial_wait=kw.pop("retry_wait", 1.0),
            download_deadline=kw.pop("download_timeout", 1800.0),
        ),
        "max_rejects": kw.pop("max_rejects", DEFAULT_MAX_REJECTS),
        "drop_duplicates": kw.pop("drop_duplicates", False),
        "force": kw.pop("force", False),
    }


def _job(kw: dict) -> Job:
    return Job(
        taxi=get_taxi(kw.pop("taxi")),
        month=select_month(kw.pop("month"), kw.pop("year"), kw.pop("trigger_date")),
        **_job_options(kw),
    )


def screen() -> Screen | None:
    """The live progress display, when a person watches (console logs on a terminal); else None: nothing is
    drawn, the line-per-step output is all."""
    if click.get_current_context().obj["format"] != "console" or not sys.stderr.isatty():
        return None
    from taxi_loader.console import Screen

    return Screen()


def watched(screen: Screen | None, label: str, work: Callable[[Cancellation], dict]) -> dict:
    """Run `work` (cancellable), its month drawn on `screen` as `label` when there is one."""
    if screen is None:
        return cancellable(work)

    def drawn(cancel: Cancellation) -> dict:
        with screen.month(label) as line, watched_by(line):  # in the thread that does the work
            return work(cancel)

    with screen:
        return cancellable(drawn)


def show(build: Callable[[], Any]) -> bool:
    """Print the rich table `build` makes on stdout when stdout is a terminal and the logs are for a person;
    return whether it did (else the caller prints its plain lines)."""
    if click.get_current_context().obj["format"] != "console" or not sys.stdout.isatty():
        return False
    from rich.console import Console

    Console().print(build())
    return True


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


def cancellable(work: Callable[[Cancellation], dict]) -> dict:
    """Run `work` in a worker thread so that Ctrl-C and SIGTERM, which only the main thread receives, can
    cancel its running query at once instead of after it; then raise Interrupted."""
    cancel = Cancellation()
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


# The sections of a command's --help, in order: which options belong to what.
_MONTH_OPTIONS = ("taxi", "month", "year", "trigger_date")
_SOURCE_OPTIONS = (
    "source",
    "source_url",
    "mirror_url",
    "tlc_url",
    "zones_url",
    "data_dir",
    "retries",
    "retry_wait",
    "download_timeout",
)
_RULE_OPTIONS = ("max_rejects", "drop_duplicates", "force")


def _section(name: str) -> str:
    if name in _MONTH_OPTIONS:
        return "Month"
    if name in _SOURCE_OPTIONS:
        return "Source"
    if name in _RULE_OPTIONS:
        return "Load rules"
    for kind in SINKS.values():
        if name in {f.name for f in fields(kind.Settings)}:
            return f"{kind.title} sink"
    return "Options"


class _Command(click.Command):
    """A command whose --help groups its options: the month, where files come from, the load's rules, each
    sink's settings, the rest."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record:
                sections.setdefault(_section(param.name or ""), []).append(record)
        order = ["Month", "Source", "Load rules", *(f"{k.title} sink" for k in SINKS.values()), "Options"]
        for title in order:
            if title in sections:
                with formatter.section(title):
                    formatter.write_dl(sections[title])


class _Main(click.Group):
    """The command group, which also takes its own options (--log-format, --log-level) after the command:
    `taxi-loader status --log-format json` is `taxi-loader --log-format json status`."""

    GLOBAL = ("--log-format", "--log-level")
    command_class = _Command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        command = next((i for i, a in enumerate(args) if a in self.commands), None)
        if command is None:
            return super().parse_args(ctx, args)
        moved, rest, i = [], args[: command + 1], command + 1
        while i < len(args):
            arg = args[i]
            if arg == "--":  # everything after it is the command's
                rest += args[i:]
                break
            if arg in self.GLOBAL and i + 1 < len(args):
                moved += args[i : i + 2]
                i += 2
                continue
            if arg.startswith(tuple(f"{g}=" for g in self.GLOBAL)):
                moved.append(arg)
            else:
                rest.append(arg)
            i += 1
        return super().parse_args(ctx, moved + rest)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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
    """Load the NYC taxi trip files into PostgreSQL, BigQuery or a DuckDB file, once per row, safely re-runnable.

    Where (--sink): postgres when a PostgreSQL is configured (--db-url, TAXI_LOADER_DB_URL or PG* variables),
    else the DuckDB file ./taxi.duckdb. The single steps belong to one sink each: stage and dedup-merge to
    postgres, upload-gcs and bq-load to bigquery. From where (--source): the course's CSV mirror for the
    months it has, the TLC's Parquet for every other month.

    MONTH-SELECTION: --month YYYY-MM | --year YYYY --month MM | --trigger-date DATE (loads the month before).
    """
    ctx.obj = {"format": configure(log_format, log_level, color=not os.environ.get("NO_COLOR"))}
    signal.signal(signal.SIGTERM, _on_sigterm)


@main.command()
@month_options
@source_options
@handled
def download(**kw) -> None:
    """Download the month's file into the data dir (resumes, verifies, reuses a complete file).

    \b
    taxi-loader download --taxi green --month 2019-01 --data-dir data
    """
    job = _job(kw)
    result = watched(screen(), f"{job.taxi.name} {job.month}", lambda c: pipeline.download(job, cancel=c))
    report("download", result, job.tags)


@main.command()
@fixed_sink("postgres")
@month_options
@source_options
@sink_options("postgres")
@max_rejects_option
@force_option
@handled
def stage(**kw) -> None:
    """PostgreSQL: validate the month's file and COPY it into its own staging table (fetches it when needed).

    \b
    taxi-loader stage --taxi yellow --year 2021 --month 01 --db-url postgresql://root:root@localhost/ny_taxi
    """
    kw.pop("sink")
    job, sink = _job(kw), _sink("postgres", kw)
    report("stage", cancellable(lambda c: pipeline.stage(job, sink, cancel=c)), job.tags)


@main.command("dedup-merge")
@fixed_sink("postgres")
@month_options
@sink_options("postgres")
@drop_duplicates_option
@handled
def dedup_merge(**kw) -> None:
    """PostgreSQL: insert the staged rows not yet in the main table, in one transaction; record it in the ledger.

    \b
    taxi-loader dedup-merge --taxi yellow --year 2021 --month 01
    """
    kw.pop("sink")
    job, sink = _job(kw), _sink("postgres", kw)
    report("dedup-merge", cancellable(lambda c: pipeline.merge(job, sink, cancel=c)), job.tags)


@main.command()
@sink_choice
@month_options
@source_options
@sink_options()
@option("--remove-object", is_flag=True, help="bigquery: also delete the month's Parquet object in GCS.")
@handled
def cleanup(**kw) -> None:
    """Drop the month's staging table and delete its downloaded and temporary files.

    \b
    taxi-loader cleanup --sink postgres --taxi yellow --month 2021-01
    """
    sink_name, remove_object = kw.pop("sink"), kw.pop("remove_object")
    job = _job(kw)
    report("cleanup", pipeline.cleanup(job, _sink(sink_name, kw), remove_object), job.tags)


@main.command()
@sink_choice
@month_options
@source_options
@sink_options()
@merge_options
@force_option
@handled
def load(**kw) -> None:
    """All steps of one sink for one month, in one process (cleanup also runs when a step fails).

    \b
    taxi-loader load --taxi yellow --month 2021-01                  # PostgreSQL if configured, else ./taxi.duckdb
    taxi-loader load --sink bigquery --taxi fhvhv --month 2024-06   # a month only the TLC publishes
    """
    sink_name = kw.pop("sink")
    job = _job(kw)
    sink = _sink(sink_name, kw)
    started = time.monotonic()
    result = watched(screen(), f"{job.taxi.name} {job.month}", lambda c: pipeline.load(job, sink, cancel=c))
    if not show(lambda: _load_table(result, time.monotonic() - started)):
        report("load", result, job.tags)


@main.command("upload-gcs")
@fixed_sink("bigquery")
@month_options
@source_options
@sink_options("bigquery")
@merge_options
@handled
def upload_gcs(**kw) -> None:
    """BigQuery: validate the month's file, write it as typed Parquet with its ids, upload it to GCS.

    \b
    taxi-loader upload-gcs --taxi green --month 2019-01   # GCP_PROJECT_ID, GCP_BUCKET_NAME, GCP_DATASET set
    """
    kw.pop("sink")
    job, sink = _job(kw), _sink("bigquery", kw)
    report("upload-gcs", pipeline.stage(job, sink), job.tags)


@main.command("bq-load")
@fixed_sink("bigquery")
@month_options
@sink_options("bigquery")
@handled
def bq_load(**kw) -> None:
    """BigQuery: load the month's GCS object into a staging table, MERGE the new rows, record it, drop staging.

    \b
    taxi-loader bq-load --taxi green --month 2019-01
    """
    kw.pop("sink")
    job, sink = _job(kw), _sink("bigquery", kw)
    report("bq-load", pipeline.merge(job, sink), job.tags)


@main.command()
@sink_choice
@option("--taxi", default="yellow,green", show_default=True, help="Taxi types, comma-separated.")
@option("--from", "first", help="First month, YYYY-MM.")
@option("--to", "last", help="Last month, YYYY-MM.")
@option("--only", help="Just these months: TAXI:YYYY-MM,... (what a failed backfill prints to retry).")
@option(
    "--jobs",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Months loaded at once (duckdb: downloaded at once, written one after another).",
)
@option(
    "--force",
    is_flag=True,
    help="Load months the ledger says are loaded from the same file too (and stage them even when the table "
    "holds them whole).",
)
@option("--continue-on-error", is_flag=True, help="Go on after a month fails (default: start no new month).")
@source_options
@sink_options()
@merge_options
@handled
def backfill(**kw) -> None:
    """Load every month of a range for one or more taxi types, skipping what is already loaded.

    \b
    taxi-loader backfill --taxi yellow,green --from 2019-01 --to 2021-07 --jobs 2
    """
    sink = _sink(kw.pop("sink"), kw)
    if kw["only"]:
        pairs = bf.parse_pairs(kw["only"])
    elif kw["first"] and kw["last"]:
        pairs = bf.plan(
            [get_taxi(t) for t in kw["taxi"].split(",") if t], Month.parse(kw["first"]), Month.parse(kw["last"])
        )
    else:
        raise UsageError("give --from YYYY-MM and --to YYYY-MM (or --only TAXI:YYYY-MM,...)")
    if not pairs:  # `--only ,` or `--taxi ,`: nothing named
        raise UsageError("no month to load: name a taxi type with --taxi, or months with --only TAXI:YYYY-MM")
    template = Job(taxi=pairs[0][0], month=pairs[0][1], **_job_options(kw))
    bf.check_sources(pairs, template.source)
    fmt = click.get_current_context().obj["format"]
    display = screen()

    def on_done(o: bf.Outcome) -> None:
        if display is not None:
            display.month_done()
            return
        for line in backfill_month_lines(fmt, o.__dict__):
            click.echo(line)

    def watch(taxi: TaxiType, month: Month) -> AbstractContextManager[Meter]:
        return display.month(f"{taxi.name} {month}") if display is not None else nullcontext(Meter())

    def work(cancel: Cancellation) -> dict:
        outcomes = bf.backfill(
            pairs, template, sink, kw["jobs"], template.force, kw["continue_on_error"], on_done, cancel, watch
        )
        return {"outcomes": outcomes}

    if display is None:
        outcomes = cancellable(work)["outcomes"]
    else:
        with display:
            display.overall(len(pairs))
            outcomes = cancellable(work)["outcomes"]
    _backfill_summary(outcomes, fmt, sink)


def _backfill_summary(outcomes: list[bf.Outcome], fmt: str, sink: Sink) -> None:
    counts = {
        s: sum(o.status == s for o in outcomes)
        for s in (bf.LOADED, bf.SKIPPED, bf.UNPUBLISHED, bf.FAILED, bf.INTERRUPTED, bf.NOT_RUN)
    }
    bad = [o for o in outcomes if o.status in bf.RETRYABLE]
    retry = bf.retry_command(
        outcomes, shlex.join(["taxi-loader", "backfill", "--sink", sink.name, *sink.target_options()])
    )
    months = [o.__dict__ for o in outcomes]
    if not show(lambda: _backfill_tables(months, counts, retry if bad else None)):
        for line in backfill_summary_lines(fmt, months, counts, retry, [f"{o.taxi}:{o.month}" for o in bad]):
            click.echo(line)
    if bad:
        raise MonthsFailed(
            f"{len(bad)} month(s) not loaded: {', '.join(f'{o.taxi} {o.month}' for o in bad)}. "
            f"Retry just those with: {retry} (with this run's source and connection settings)",
            {o.exit_code for o in bad if o.exit_code},
        )


@main.command()
@sink_choice
@option(
    "--source",
    type=click.Choice(SOURCES, case_sensitive=False),
    default="auto",
    show_default=True,
    help="Whose copy: tlc (and auto) the TLC's, mirror the course's.",
)
@option("--zones-url", help="The lookup's URL or local path instead (a CSV: LocationID,Borough,Zone,service_zone).")
@option("--retries", type=click.IntRange(1, 100), default=5, show_default=True)
@sink_options()
@handled
def zones(**kw) -> None:
    """Load the taxi zone lookup (265 zones: LocationID, Borough, Zone, service_zone) into taxi_zone_lookup,
    replacing it in one step.

    \b
    taxi-loader zones --sink postgres
    """
    sink = _sink(kw.pop("sink"), kw)
    location = kw["zones_url"] or (MIRROR_ZONES_URL if kw["source"].lower() == "mirror" else TLC_ZONES_URL)
    retry = RetryPolicy(attempts=kw["retries"])
    report("zones", pipeline.zones(sink, location, retry), {})


@main.command()
@sink_choice
@option("--taxi", help="Taxi types, comma-separated (default: all).")
@option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people (a chart of rows per month, gaps and failures marked); json (months, gaps, totals, "
    "zones) for scripts and Kestra.",
)
@option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw rows per month as a PNG at this path (needs matplotlib: pip install 'taxi-loader[plot]').",
)
@sink_options()
@handled
def status(**kw) -> None:
    """What is loaded: rows per month of each taxi and year as a chart (gaps and failed months marked), the
    totals, the zone lookup.

    \b
    taxi-loader status --sink postgres --taxi yellow,green
    taxi-loader status --plot status.png
    taxi-loader status --format json
    """
    from rich.console import Console

    from taxi_loader.chart import plot_status, status_chart

    taxis = [get_taxi(t) for t in kw["taxi"].split(",")] if kw["taxi"] else None
    report_ = bf.status(_sink(kw.pop("sink"), kw), taxis)
    if kw["fmt"] == "json":
        click.echo(json.dumps(report_, indent=2))
    else:
        Console(soft_wrap=False).print(status_chart(report_))
    if kw["plot"]:
        get_logger("taxi_loader").info("plot written", path=str(plot_status(report_, kw["plot"])))


def _load_table(result: dict, seconds: float) -> Any:
    from taxi_loader.console import load_table

    return load_table(result, seconds)


def _backfill_tables(months: list[dict], counts: dict[str, int], retry: str | None) -> Any:
    from taxi_loader.console import backfill_tables

    return backfill_tables(months, counts, retry)


def run() -> None:
    """Console-script entry point."""
    # Arrow's allocator: the C library's, unless the user chose one. pyarrow reads the variable when it is
    # first imported, which this module does not do (the commands import it when they read a file). Arrow's
    # default, mimalloc, keeps the memory each batch frees for later ones, which here only raises the peak:
    # measured through this command (peak RSS, a 1.37M-row month, same minutes), a Parquet month into
    # PostgreSQL 129 MB against 165 MB, a CSV month 123 against 133 MB, DuckDB 367 against 416 MB, the cloud
    # pass 224 against 282 MB, and no slower (jemalloc held 5-20 MB less, but the cloud pass and DuckDB were
    # 10-15% slower).
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    main(prog_name="taxi-loader")


if __name__ == "__main__":  # pragma: no cover
    run()
