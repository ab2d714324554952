"""Golden tests: the exact text a user reads (the console output of load, backfill and status, as sqlite-utils
tests its CLI) and the exact SQL a load sends PostgreSQL, so a change to either shows in review.

The SQL is recorded from a real load by a cursor that notes each statement before running it, with the
test's schema replaced by {schema}; values are parameters, so they never appear. To accept a deliberate
change: `UPDATE_GOLDEN=1 make test`, then review the diff of tests/golden/.
"""

from __future__ import annotations

import io
import json
import os
import re
from datetime import date
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql
from rich.console import Console

from taxi_loader.months import Month

GOLDEN = Path(__file__).parent / "golden"
JULY = ("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
DECEMBER = ("yellow", Month(2020, 12), "yellow_tripdata_2020-12.head1295.csv")


def _timings(text: str) -> str:
    """Seconds vary from run to run: '0.1s' and a table's seconds column read as '9.9'."""
    return re.sub(r"\d+\.\d(?=s |s$|$)", "9.9", text, flags=re.MULTILINE)


def test_load_console_output(cli, db, mirror):
    mirror.put_sample(*JULY)
    first = cli("load", "--taxi", "yellow", "--month", "2020-07", log_format="console")
    again = cli("load", "--taxi", "yellow", "--month", "2020-07", log_format="console")
    assert (first.exit_code, again.exit_code) == (0, 0)
    where = f" -> postgres@127.0.0.1:5432/{db.url.rsplit('/', 1)[1]}, schema {db.schema}\n"
    assert first.stdout == (
        "load yellow 2020-07: staged=266 inserted=266 present=0 repeated=0 dropped=0 rejected=0 suspicious=6 read=266"
        + where
    )
    assert again.stdout == (
        "load yellow 2020-07: staged=266 inserted=0 present=266 repeated=0 dropped=0 rejected=0 suspicious=6 read=266"
        + where
    )


def test_backfill_console_output(cli, db, mirror):
    mirror.put_sample(*DECEMBER)
    args = ("backfill", "--taxi", "yellow", "--from", "2020-12", "--to", "2021-01")
    first, again = (cli(*args, log_format="console") for _ in range(2))
    assert (first.exit_code, again.exit_code) == (0, 0), first.output
    not_published = f"yellow 2021-01: not published: HTTP 404 for {mirror.url}/yellow/yellow_tripdata_2021-01.csv.gz"
    table = "\nmonth    taxi             rows  status         seconds\n"
    assert _timings(first.stdout) == (
        "yellow 2020-12: loaded 1,295 rows 9.9s\n"
        f"yellow 2021-01: not published  9.9s {not_published}\n"
        f"{table}"
        "2020-12  yellow          1,295  loaded             9.9\n"
        "2021-01  yellow              -  not published      9.9\n"
        "1 loaded, 1 not published\n"
    )
    assert _timings(again.stdout) == (
        "yellow 2020-12: skipped 1,295 rows 9.9s\n"
        f"yellow 2021-01: not published  9.9s {not_published}\n"
        f"{table}"
        "2020-12  yellow          1,295  skipped            9.9\n"
        "2021-01  yellow              -  not published      9.9\n"
        "1 skipped, 1 not published\n"
    )
    # A 404 before a loaded month is a gap, not the end of the published range: a failure, with its retry.
    gap = cli("backfill", "--taxi", "yellow", "--from", "2020-11", "--to", "2020-12", log_format="console")
    assert gap.exit_code == 4
    assert _timings(gap.stdout).splitlines()[-3:] == [
        "2020-11  yellow              -  failed             9.9",
        "2020-12  yellow          1,295  skipped            9.9",
        "1 skipped, 1 failed",
    ]
    assert gap.stderr.splitlines()[-1] == (
        "Error: 1 month(s) not loaded: yellow 2020-11. Retry just those with: taxi-loader backfill --sink postgres "
        f"--schema {db.schema} --only yellow:2020-11 (with this run's source and connection settings)"
    )


def test_status_against_postgresql_console_and_json(cli, db, mirror):
    assert cli("status", log_format="console").stdout == "nothing loaded yet\nzones: not loaded (taxi-loader zones)\n"
    mirror.put_sample(*JULY)
    mirror.put_sample(*DECEMBER)
    assert cli("load", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    assert cli("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    mirror.put_csv("green", Month(2019, 1), "not,a,green,header\n1,2,3,4\n")
    assert cli("load", "--taxi", "green", "--month", "2019-01").exit_code == 5
    today = date.today().isoformat()
    console = cli("status", log_format="console")
    assert console.exit_code == 0
    assert console.stdout == (
        "yellow  J F M A M J J A S O N D\n"
        "2020                ▂ · · · · █  1,561 rows   2 months\n"
        "        gaps: 2020-08..2020-11\n"
        "green   J F M A M J J A S O N D\n"
        "2019    ✗                            0 rows   0 months\n"
        "        gaps: none\n"
        "█ most rows  ▁ fewest  · not loaded  ✗ failed\n"
        "zones: not loaded (taxi-loader zones)\n"
    )
    report = json.loads(cli("status", "--format", "json", "--taxi", "yellow").stdout)
    assert [(m["month"], m["status"], m["rows"]) for m in report["months"]] == [
        ("2020-07", "succeeded", 266),
        ("2020-12", "succeeded", 1295),
    ]
    assert all(m["finished_at"].startswith(today) for m in report["months"])
    assert report["gaps"] == {"yellow": ["2020-08", "2020-09", "2020-10", "2020-11"]}
    assert report["totals"] == {"yellow": {"2020": 1561}}
    assert {m["format"] for m in report["months"]} == {"csv"} and report["zones"] is None


# ---------------------------------------------------------------- what a terminal shows


def _recorded(renderable, width: int = 100) -> str:
    """A rich renderable as a terminal of `width` columns shows it, colour off."""
    console = Console(record=True, width=width, color_system=None, force_terminal=False, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed: UPDATE_GOLDEN=1 to accept it, then review the diff"


def test_load_as_a_terminal_shows_it(cli, mirror):
    from taxi_loader.console import load_table

    mirror.put_sample(*JULY)
    result = json.loads(cli("load", "--taxi", "yellow", "--month", "2020-07").stdout.splitlines()[-1])
    again = json.loads(cli("load", "--taxi", "yellow", "--month", "2020-07").stdout.splitlines()[-1])
    _golden("terminal_load.txt", _recorded(load_table(result, 0.5)) + _recorded(load_table(again, 0.25)))


def test_backfill_as_a_terminal_shows_it(cli, db, mirror):
    """A loaded month, a failed one (bad data) and one not published yet, at 100 and 80 columns."""
    from taxi_loader import backfill as bf
    from taxi_loader.console import backfill_tables

    mirror.put_csv("yellow", Month(2020, 11), "not,a,taxi,header\n1,2,3,4\n")
    mirror.put_sample(*DECEMBER)
    args = ["--taxi", "yellow", "--from", "2020-11", "--to", "2021-01", "--continue-on-error"]
    result = cli("backfill", *args)
    assert result.exit_code == 5
    months = [json.loads(line) for line in result.stdout.splitlines() if '"backfill-month"' in line]
    for month in months:
        month["seconds"] = 1.0  # the one figure that varies
    counts = {bf.LOADED: 1, bf.UNPUBLISHED: 1, bf.FAILED: 1}
    retry = f"taxi-loader backfill --sink postgres --schema {db.schema} --only yellow:2020-11"
    text = _recorded(backfill_tables(months, counts, retry)).replace(db.schema, "{schema}")
    narrow = _recorded(backfill_tables(months, counts, retry), width=80).replace(db.schema, "{schema}")
    _golden("terminal_backfill.txt", text + "\n" + narrow)


def test_status_as_a_terminal_shows_it(cli, mirror):
    mirror.put_sample(*JULY)
    mirror.put_sample(*DECEMBER)
    for month in ("2020-07", "2020-12"):
        assert cli("load", "--taxi", "yellow", "--month", month).exit_code == 0
    mirror.put_csv("yellow", Month(2021, 2), "not,a,taxi,header\n1,2,3,4\n")
    assert cli("load", "--taxi", "yellow", "--month", "2021-02").exit_code == 5
    _golden("terminal_status.txt", cli("status", log_format="console").stdout)


# ---------------------------------------------------------------- the SQL of a load


class _Recording(psycopg2.extensions.cursor):
    """A cursor that notes each statement's text (without its values) before running it."""

    statements: list[str] = []

    def _note(self, query) -> None:
        text = query.as_string(self) if isinstance(query, sql.Composable) else query
        self.statements.append(" ".join(text.split()))

    def execute(self, query, vars=None):  # noqa: A002 - psycopg2's own name
        self._note(query)
        return super().execute(query, vars)

    def copy_expert(self, query, file, size=8192):
        self._note(query)
        return super().copy_expert(query, file, size)


class _Statements:
    """The statements each of taxi-loader's connections ran, in order: the first connection's, then each
    other's under a `-- connection N` line (a first load builds an index on a second connection, in a thread
    of its own: one list for all would interleave them differently from run to run)."""

    def __init__(self) -> None:
        self.connections: list[list[str]] = []

    def new_connection(self) -> list[str]:
        self.connections.append([])
        return self.connections[-1]

    def clear(self) -> None:
        self.connections.clear()

    def __iter__(self):
        for i, statements in enumerate(c for c in self.connections if c):
            if i:
                yield f"-- connection {i + 1}"
            yield from statements


@pytest.fixture
def recorded(monkeypatch):
    """The statements taxi-loader's connections run (`_Statements`)."""
    recording = _Statements()
    connect = psycopg2.connect

    def recording_connect(*args, **kwargs):
        conn = connect(*args, **kwargs)
        if kwargs.get("application_name") == "taxi-loader":
            statements = recording.new_connection()
            conn.cursor_factory = type("Recording", (_Recording,), {"statements": statements})
        return conn

    monkeypatch.setattr(psycopg2, "connect", recording_connect)
    return recording


def _check_golden(name: str, statements: _Statements, schema: str) -> None:
    text = "\n".join(s.replace(f'"{schema}"', '"{schema}"') for s in statements) + "\n"
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") or not path.exists():
        path.write_text(text)
        if not os.environ.get("UPDATE_GOLDEN"):
            pytest.fail(f"{path} was missing and has been written: review it and run again")
    assert text == path.read_text(), f"the SQL changed: diff it with {path} (UPDATE_GOLDEN=1 accepts it)"


def test_the_sql_of_a_first_load_and_of_its_rerun(cli, db, mirror, recorded):
    mirror.put_sample(*JULY)
    assert cli("load", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    _check_golden("postgres_first_load.sql", recorded, db.schema)
    recorded.clear()
    assert cli("load", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    _check_golden("postgres_rerun.sql", recorded, db.schema)


def test_the_sql_of_a_reload_into_an_existing_partition(cli, db, mirror, recorded):
    mirror.put_sample(*JULY)
    assert cli("load", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    db.run("DELETE FROM yellow_tripdata WHERE unique_row_id IN (SELECT unique_row_id FROM yellow_tripdata LIMIT 10)")
    recorded.clear()
    reload = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert json.loads(reload.stdout)["rows_inserted"] == 10
    _check_golden("postgres_reload.sql", recorded, db.schema)
