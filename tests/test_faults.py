"""Fault injection with a real PostgreSQL, real processes and a real HTTP server.

Connections are killed with pg_terminate_backend, loader processes with SIGKILL and SIGTERM. Every test
ends by checking the final row count against the source and that unique_row_id is unique.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg2
import pytest
from click.testing import CliRunner

from taxi_loader import pipeline
from taxi_loader.cli import main
from taxi_loader.job import Cancellation, Job
from taxi_loader.months import Month
from taxi_loader.sinks.postgres import PostgresSettings, PostgresSink
from taxi_loader.source import Source
from taxi_loader.taxis import TAXI_TYPES

MONTHS = [Month(2021, m) for m in (1, 2, 3, 4)]


def assert_exact(db, expected: int, taxi: str = "yellow") -> None:
    assert db.one(f"SELECT count(*), count(DISTINCT unique_row_id) FROM {taxi}_tripdata") == (expected, expected)


def loader(db, mirror, *args: str) -> subprocess.Popen:
    """The real command in its own process, as Kestra or a shell runs it."""
    cmd = [
        sys.executable,
        "-m",
        "taxi_loader",
        "--log-format",
        "json",
        *args,
        "--db-url",
        db.url,
        "--schema",
        db.schema,
        "--source-url",
        mirror.template,
        "--retry-wait",
        "0.01",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_query(db, pattern: str, timeout: float = 60) -> int:
    """The pid of the loader's backend once it runs a statement matching `pattern`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.one(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'taxi-loader' AND state = 'active' "
            "AND datname = current_database() AND query ILIKE %s LIMIT 1",
            (pattern,),
        )
        if row:
            return row[0]
        time.sleep(0.005)
    raise AssertionError(f"no loader query like {pattern!r} within {timeout}s")


@pytest.fixture
def big_month(mirror):
    """A month big enough that its COPY and merge take long enough to be hit."""
    mirror.put_generated("yellow", MONTHS[0], 300_000)
    return MONTHS[0], 300_000


def test_connection_killed_during_copy_then_rerun_gives_exactly_the_rows(cli, db, mirror, big_month):
    month, rows = big_month
    proc = loader(db, mirror, "load", "--taxi", "yellow", "--month", str(month), "--retries", "1")
    pid = wait_for_query(db, "COPY%")
    db.one("SELECT pg_terminate_backend(%s)", (pid,))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 6, err
    assert "lost the connection to PostgreSQL" in err
    assert db.count("yellow_tripdata") == 0
    assert cli("load", "--taxi", "yellow", "--month", str(month)).exit_code == 0
    assert_exact(db, rows)


def test_loader_killed_during_merge_then_rerun_gives_exactly_the_rows(cli, db, mirror, big_month):
    month, rows = big_month
    proc = loader(db, mirror, "load", "--taxi", "yellow", "--month", str(month))
    wait_for_query(db, "%_p2021_01_unique_row_id_key%")  # the merge is running
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    time.sleep(0.2)  # the server notices the dead client and rolls its transaction back
    assert db.count("yellow_tripdata") == 0
    assert "yellow_tripdata_staging_2021_01" in db.tables()  # orphaned by the kill ...
    result = cli("load", "--taxi", "yellow", "--month", str(month))  # ... and handled by the next run
    assert result.exit_code == 0, result.output
    assert_exact(db, rows)
    assert "yellow_tripdata_staging_2021_01" not in db.tables()


def test_sigterm_stops_cleanly_records_interrupted_and_a_rerun_completes(cli, db, mirror, big_month):
    month, rows = big_month
    proc = loader(db, mirror, "load", "--taxi", "yellow", "--month", str(month))
    wait_for_query(db, "%_p2021_01_unique_row_id_key%")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert db.count("yellow_tripdata") == 0
    assert db.one("SELECT status FROM taxi_loader_ledger ORDER BY load_id DESC LIMIT 1")[0] == "interrupted"
    assert not any("staging" in t for t in db.tables())  # cleanup ran
    assert cli("load", "--taxi", "yellow", "--month", str(month)).exit_code == 0
    assert_exact(db, rows)


def test_two_loaders_of_the_same_month_started_together_give_the_rows_once(db, mirror, big_month):
    month, rows = big_month
    procs = [loader(db, mirror, "load", "--taxi", "yellow", "--month", str(month)) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    inserted = sorted(json.loads(out.strip().splitlines()[-1])["rows_inserted"] for out, _ in results)
    assert inserted == [0, rows]
    assert_exact(db, rows)


def test_four_months_with_jobs_4_equal_four_sequential_loads(db, mirror, test_database):
    for m in MONTHS:
        mirror.put_generated("yellow", m, 20_000, repeat_rate=0.01)
    common = ["--source-url", mirror.template, "--retry-wait", "0.01", "--db-url", db.url]
    parallel = CliRunner().invoke(
        main,
        [
            "backfill",
            "--taxi",
            "yellow",
            "--from",
            "2021-01",
            "--to",
            "2021-04",
            "--jobs",
            "4",
            "--schema",
            db.schema,
            *common,
        ],
    )
    assert parallel.exit_code == 0, parallel.output
    sequential_schema = db.schema + "_seq"
    for m in MONTHS:
        result = CliRunner().invoke(
            main, ["load", "--taxi", "yellow", "--month", str(m), "--schema", sequential_schema, *common]
        )
        assert result.exit_code == 0, result.output
    assert_exact(db, 80_000)
    with psycopg2.connect(test_database) as conn, conn.cursor() as cur:
        query = "SELECT md5(string_agg(t::text, '|' ORDER BY unique_row_id)) FROM {}.yellow_tripdata t"
        cur.execute(query.format(f'"{db.schema}"'))
        a = cur.fetchone()[0]
        cur.execute(query.format(f'"{sequential_schema}"'))
        b = cur.fetchone()[0]
        cur.execute(f'DROP SCHEMA "{sequential_schema}" CASCADE')
    assert a == b


def test_a_backfill_with_one_bad_month_loads_the_others_and_names_it(cli, db, mirror):
    for m in MONTHS:
        mirror.put_generated("yellow", m, 5_000)
    mirror.put_bytes("yellow", MONTHS[1], b"<html>oops</html>")
    result = cli("backfill", "--taxi", "yellow", "--from", "2021-01", "--to", "2021-06", "--continue-on-error")
    assert result.exit_code == 5
    assert "1 month(s) not loaded: yellow 2021-02" in result.stderr
    assert "--only yellow:2021-02" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    statuses = {line["month"]: line["status"] for line in lines if line.get("step") == "backfill-month"}
    assert statuses == {
        "2021-01": "loaded",
        "2021-02": "failed",
        "2021-03": "loaded",
        "2021-04": "loaded",
        "2021-05": "not published",
        "2021-06": "not published",
    }
    assert lines[-1]["not_published"] == 2  # 2021-05 and -06 lie at the end: not published, not failed
    assert_exact(db, 15_000)


def test_a_404_inside_the_range_is_a_failure(cli, db, mirror):
    for m in (MONTHS[0], MONTHS[2]):
        mirror.put_generated("yellow", m, 1_000)
    result = cli("backfill", "--taxi", "yellow", "--from", "2021-01", "--to", "2021-03", "--continue-on-error")
    assert result.exit_code == 4 and "yellow 2021-02" in result.stderr
    assert_exact(db, 2_000)


def test_backfill_skips_months_loaded_from_the_same_file_unless_forced(cli, db, mirror):
    for m in MONTHS[:2]:
        mirror.put_generated("yellow", m, 2_000)
    args = ["backfill", "--taxi", "yellow", "--from", "2021-01", "--to", "2021-02"]

    def statuses(result) -> list[str]:
        return [json.loads(x)["status"] for x in result.stdout.splitlines() if "backfill-month" in x]

    assert statuses(cli(*args)) == ["loaded", "loaded"]
    mirror.put_generated("yellow", MONTHS[1], 2_500, seed=1)  # February republished: a different file
    assert statuses(cli(*args)) == ["skipped", "loaded"]
    assert statuses(cli(*args, "--force")) == ["loaded", "loaded"]
    assert db.one("SELECT count(DISTINCT unique_row_id) = count(*) FROM yellow_tripdata")[0]


def test_a_backfill_interrupted_halfway_and_run_again_ends_with_exactly_the_rows(db, mirror):
    months = [Month(2020, m) for m in range(1, 7)]
    for m in months:
        mirror.put_generated("yellow", m, 60_000)
    args = ["backfill", "--taxi", "yellow", "--from", "2020-01", "--to", "2020-06", "--jobs", "2"]
    proc = loader(db, mirror, *args)
    deadline = time.monotonic() + 60
    while (
        db.one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
            (db.schema, "yellow_tripdata_p2020_0%"),
        )[0]
        < 2
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    done = db.one("SELECT count(*) FROM taxi_loader_ledger WHERE status = 'succeeded'")[0]
    assert 0 < done < 6
    again = loader(db, mirror, *args)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    statuses = [json.loads(x)["status"] for x in out.splitlines() if "backfill-month" in x]
    assert statuses.count("skipped") == done and statuses.count("loaded") == 6 - done
    assert_exact(db, 6 * 60_000)
    assert not any("staging" in t for t in db.tables())


def test_cancellation_rolls_back_a_running_merge(db, mirror, tmp_path, big_month):
    # The same mechanism the CLI uses on SIGTERM, driven from a thread of this test. The merge is held inside
    # its transaction, after its first writes, by a lock this test takes, so the cancel always lands on a
    # running statement of the merge.
    month, rows = big_month
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    sink = PostgresSink(PostgresSettings(db.url, db.schema))
    pipeline.load(Job(TAXI_TYPES["yellow"], Month(2020, 7), tmp_path / "d", Source(url=mirror.template)), sink)
    cancel = Cancellation()
    job = Job(TAXI_TYPES["yellow"], month, tmp_path / "d", Source(url=mirror.template))
    errors = []

    def run():
        try:
            pipeline.load(job, sink, cancel=cancel)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    blocker = psycopg2.connect(db.url)  # SHARE mode: readers pass, the merge's INSERT into the table waits
    with blocker.cursor() as cur:
        cur.execute(f'LOCK TABLE "{db.schema}".yellow_tripdata IN SHARE MODE')
    t = threading.Thread(target=run)
    t.start()
    try:
        # The move of the out-of-month rows, whose INSERT into the main table waits (the statement's start:
        # PostgreSQL shows the first 1 kB of a query, and the places of the rows come before its INSERT).
        pid = wait_for_query(db, f'%WITH moved AS (DELETE FROM "{db.schema}"."yellow_tripdata_staging_2021_01" s %')
        assert db.one("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)) == ("Lock",)
        cancel.cancel()
    finally:
        cancel.cancel()  # also when an assert above failed: the thread must not outlive the test's schema
        blocker.close()
        t.join(60)
    assert not t.is_alive()
    assert [e.__class__.__name__ for e in errors] == ["Interrupted"]
    # Rolled back: the other month only, no partition for this one, the ledger says interrupted.
    assert db.count("yellow_tripdata") == 266 and "yellow_tripdata_p2021_01" not in db.tables()
    assert db.one("SELECT status FROM taxi_loader_ledger WHERE month = '2021-01' ORDER BY load_id DESC LIMIT 1") == (
        "interrupted",
    )
    assert not any("staging" in t for t in db.tables())
    # The next run loads it whole.
    pipeline.load(job, sink)
    assert_exact(db, rows + 266)


def test_a_staging_table_emptied_by_crash_recovery_is_not_passed_off_as_a_load(cli, db, mirror):
    # Crash recovery truncates unlogged tables; TRUNCATE does the same to the staging table here.
    mirror.put_generated("yellow", MONTHS[0], 3_000)
    assert cli("stage", "--taxi", "yellow", "--month", "2021-01").exit_code == 0
    db.run("TRUNCATE yellow_tripdata_staging_2021_01")
    merged = cli("dedup-merge", "--taxi", "yellow", "--month", "2021-01")
    assert merged.exit_code == 6 and "holds 0 rows but stage kept 3000" in merged.stderr
    assert db.count("yellow_tripdata") == 0
    assert cli("load", "--taxi", "yellow", "--month", "2021-01").exit_code == 0
    assert_exact(db, 3_000)


@pytest.mark.skipif(os.geteuid() != 0, reason="restarting the server needs pg_ctlcluster rights")
def test_postgresql_restarted_between_stage_and_merge(cli, db, mirror):
    mirror.put_generated("yellow", MONTHS[0], 10_000)
    assert cli("stage", "--taxi", "yellow", "--month", "2021-01").exit_code == 0
    cluster = subprocess.run(
        ["bash", "-c", "ls /etc/postgresql | head -n1"], capture_output=True, text=True
    ).stdout.strip()
    db.conn.close()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"], check=True)
    for _ in range(50):
        if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0:
            break
        time.sleep(0.2)
    db.conn = psycopg2.connect(db.url)
    db.conn.autocommit = True
    # A month's first stage writes a logged table (it becomes the partition), which a restart keeps whole:
    # the merge after it loads every row. (A staging table emptied by crash recovery, as an unlogged one is,
    # is the test above: the merge refuses it.)
    assert db.one("SELECT relpersistence FROM pg_class WHERE relname = 'yellow_tripdata_staging_2021_01'") == ("p",)
    merged = cli("dedup-merge", "--taxi", "yellow", "--month", "2021-01")
    assert merged.exit_code == 0, merged.output
    assert json.loads(merged.stdout.splitlines()[-1])["rows_inserted"] == 10_000
    assert_exact(db, 10_000)
