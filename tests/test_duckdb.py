"""The DuckDB sink's own cases: the embedded default, and a database file that is busy, unwritable or not a
DuckDB database (the shared sink tests in test_sinks.py run on it too)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from taxi_loader.cli import main
from taxi_loader.months import Month
from taxi_loader.source import Source

from conftest import DATA

JULY = Month(2020, 7)
SAMPLE = "yellow_tripdata_2020-07.head266.rides.csv"


def load(mirror, tmp_path, *extra: str, env: dict | None = None):
    argv = ["--log-format", "console", "load", "--taxi", "yellow", "--month", "2020-07", *extra]
    argv += ["--source-url", mirror.template, "--data-dir", str(tmp_path / "data")]
    return CliRunner(env=env).invoke(main, argv, catch_exceptions=False)


def test_with_no_postgresql_configured_a_load_goes_into_taxi_duckdb_and_says_so(mirror, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mirror.put_sample("yellow", JULY, SAMPLE)
    first = load(mirror, tmp_path)
    assert first.exit_code == 0, first.output
    path = tmp_path / "taxi.duckdb"
    assert f"no PostgreSQL configured: using the DuckDB file {path} (--sink postgres and --db-url" in first.stderr
    assert f'look inside with: duckdb {path} "show tables"' in first.stderr
    assert "inserted=266" in first.stdout and (tmp_path / "taxi.duckdb").is_file()
    again = load(mirror, tmp_path)
    assert "inserted=0 present=266" in again.stdout


def test_with_postgresql_configured_nothing_changes(mirror, db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mirror.put_sample("yellow", JULY, SAMPLE)
    env = {"TAXI_LOADER_DB_URL": db.url, "TAXI_LOADER_SCHEMA": db.schema}
    result = load(mirror, tmp_path, env=env)
    assert result.exit_code == 0, result.output
    assert "DuckDB" not in result.stderr and not (tmp_path / "taxi.duckdb").exists()
    assert db.count("yellow_tripdata") == 266


def test_a_file_another_process_holds_is_exit_6_with_the_reason(duck, mirror):
    mirror.put_sample("yellow", JULY, SAMPLE)
    assert duck("load", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(duck.path)!r}); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = duck("load", "--taxi", "yellow", "--month", "2020-07")
        assert result.exit_code == 6, result.output
        assert f"the DuckDB file {duck.path} is in use by another process" in result.stderr
        assert "Conflicting lock is held" in result.stderr
    finally:
        holder.kill()
        holder.wait()
    assert duck.query("SELECT count(*) FROM yellow_tripdata") == [(266,)]


def test_an_option_of_another_sink_is_refused_not_ignored(mirror, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mirror.put_sample("yellow", JULY, SAMPLE)
    result = load(mirror, tmp_path, "--schema", "taxi")
    assert result.exit_code == 2
    assert (
        "--schema is an option of the postgres sink, but this command uses duckdb (no PostgreSQL is configured): "
        "pass --sink postgres, or leave the option out"
    ) in result.stderr
    assert not (tmp_path / "taxi.duckdb").exists()


def test_a_file_that_is_not_a_duckdb_database_is_exit_3_and_left_as_it_is(duck, mirror):
    mirror.put_sample("yellow", JULY, SAMPLE)
    duck.path.write_bytes(b"my notes, not a database\n" * 200)
    before = (duck.path.read_bytes(), duck.path.stat().st_mtime_ns)
    result = duck("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 3, result.output
    assert f"{duck.path} is not a DuckDB database (it was left as it is)" in result.stderr
    assert "cleanup failed" not in result.stderr  # the message once, not again from a cleanup that reopens it
    assert (duck.path.read_bytes(), duck.path.stat().st_mtime_ns) == before


def test_a_path_in_a_read_only_directory_is_exit_3(mirror, tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    # root writes anywhere a mode allows nothing: an immutable directory is read-only even for root
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system, so no directory is read-only for root")
    try:
        mirror.put_sample("yellow", JULY, SAMPLE)
        result = load(mirror, tmp_path, "--sink", "duckdb", "--duckdb-path", str(folder / "taxi.duckdb"))
        assert result.exit_code == 3, result.output
        assert f"cannot open the DuckDB file {folder / 'taxi.duckdb'}" in result.stderr
        assert "its directory must exist and be writable" in result.stderr
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert list(folder.iterdir()) == []


def test_status_on_a_missing_file_says_nothing_is_loaded_and_creates_nothing(duck):
    result = duck("status")
    assert result.exit_code == 0 and result.stdout == "nothing loaded yet\nzones: not loaded (taxi-loader zones)\n"
    assert not duck.path.exists()


def test_backfill_in_parallel_writes_one_month_at_a_time_and_loads_each_whole(duck, mirror, monkeypatch):
    from taxi_loader.sinks.duckdb import connect

    months = [Month(2021, m) for m in (1, 2, 3, 4)]
    for m in months:
        mirror.put_generated("yellow", m, 5_000, repeat_rate=0.01)
    writer, inside, most = connect.writer, [0], [0]

    @contextmanager
    def counting_writer(path):
        with writer(path):
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            try:
                time.sleep(0.01)  # long enough for another month to try to get in
                yield
            finally:
                inside[0] -= 1

    monkeypatch.setattr(connect, "writer", counting_writer)
    result = duck("backfill", "--taxi", "yellow", "--from", "2021-01", "--to", "2021-04", "--jobs", "3")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["loaded"] == 4
    assert most == [1]
    assert duck.query("SELECT count(*), count(DISTINCT unique_row_id) FROM yellow_tripdata") == [(20_000, 20_000)]
    assert duck.query("SELECT month, status, rows_after FROM taxi_loader_ledger ORDER BY month") == [
        (str(m), "succeeded", 5_000) for m in months
    ]


def _july_lines() -> list[str]:
    return (DATA / SAMPLE).read_text().splitlines(keepends=True)


def test_drop_duplicates_keeps_the_first_of_exact_repeats(duck, mirror):
    lines = _july_lines()
    mirror.put_csv("yellow", JULY, "".join(lines[:10] + [lines[3]] * 2 + lines[10:]))
    result = duck("load", "--taxi", "yellow", "--month", "2020-07", "--drop-duplicates")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout.splitlines()[-1])
    assert (counts["rows_read"], counts["rows_repeated"], counts["rows_dropped"], counts["rows_inserted"]) == (
        268,
        2,
        2,
        266,
    )
    assert counts["rows_staged"] == counts["rows_inserted"] + counts["rows_present"] + counts["rows_dropped"]
    assert duck.query("SELECT count(*), count(DISTINCT unique_row_id) FROM yellow_tripdata") == [(266, 266)]


def test_a_few_bad_values_under_the_limit_are_rejected_with_their_reasons(duck, mirror):
    lines = _july_lines()
    fields = lines[5].split(",")
    fields[3] = "3000000000"  # passenger_count beyond a 32-bit integer, as PostgreSQL's column refuses it
    lines[5] = ",".join(fields)
    mirror.put_csv("yellow", JULY, "".join(lines))
    result = duck("load", "--taxi", "yellow", "--month", "2020-07", "--max-rejects", "5")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout.splitlines()[-1])
    assert (counts["rows_read"], counts["rows_rejected"], counts["rows_inserted"]) == (266, 1, 265)
    assert duck.query("SELECT line, column_name, reason FROM yellow_tripdata_rejects") == [
        (6, "passenger_count", "integer out of range: '3000000000'")
    ]
    # The default limit, 0.1% of 266, is 0: the same file, held whole, is not skipped under a stricter limit
    refused = duck("load", "--taxi", "yellow", "--month", "2020-07")
    assert refused.exit_code == 5 and "1 of 266 rows rejected" in refused.stderr
    assert duck.query("SELECT count(*) FROM yellow_tripdata") == [(265,)]


def test_a_cancel_mid_stage_rolls_the_month_back_and_the_next_run_loads_it_whole(duck, mirror, tmp_path, monkeypatch):
    # The mechanism the CLI uses on Ctrl-C and SIGTERM: here the cancel comes after the third Arrow table.
    from taxi_loader import batches, pipeline
    from taxi_loader.errors import Interrupted
    from taxi_loader.job import Cancellation, Job
    from taxi_loader.sinks.duckdb import DuckDBSettings, DuckDBSink
    from taxi_loader.taxis import YELLOW

    mirror.put_sample("yellow", Month(2020, 12), "yellow_tripdata_2020-12.head1295.csv")
    assert duck("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    month = Month(2021, 1)
    mirror.put_generated("yellow", month, 60_000)
    monkeypatch.setattr(batches, "BLOCK_BYTES", 256 << 10)  # small blocks: many tables to cancel between
    cancel, tables = Cancellation(), batches.MonthTables.__iter__

    def cancelling(self):
        for n, table in enumerate(tables(self), start=1):
            if n == 3:
                cancel.cancel()
            yield table

    monkeypatch.setattr(batches.MonthTables, "__iter__", cancelling)
    sink = DuckDBSink(DuckDBSettings(str(duck.path)))
    job = Job(YELLOW, month, tmp_path / "data", Source(url=mirror.template))
    with pytest.raises(Interrupted):
        pipeline.load(job, sink, cancel=cancel)
    assert duck.query("SELECT count(*) FROM yellow_tripdata") == [(1295,)]
    assert not any("staging" in t for t in duck.tables())
    assert duck.query("SELECT status FROM taxi_loader_ledger WHERE month = '2021-01'") == [("interrupted",)]
    monkeypatch.setattr(batches.MonthTables, "__iter__", tables)
    pipeline.load(job, sink)
    assert duck.query("SELECT count(*), count(DISTINCT unique_row_id) FROM yellow_tripdata") == [(61_295, 61_295)]
