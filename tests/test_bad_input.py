"""Bad input and dead services: each ends with its exit code, a clear message, and no table half-written."""

from __future__ import annotations

import gzip
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner

from taxi_loader import reader
from taxi_loader.cli import main
from taxi_loader.contract import main_columns
from taxi_loader.months import Month
from taxi_loader.sinks.postgres import stage as pg_stage
from taxi_loader.sinks.postgres.ddl import PG_TYPE
from taxi_loader.taxis import GREEN, TAXI_TYPES

from conftest import DATA, corrupt_block, wrong_checksum

JULY = Month(2020, 7)
SAMPLE = "yellow_tripdata_2020-07.head266.rides.csv"


@pytest.fixture
def loaded(cli, db, mirror):
    """A schema that already holds one month, so 'left as it was' means something."""
    mirror.put_sample("yellow", Month(2020, 12), "yellow_tripdata_2020-12.head1295.csv")
    assert cli("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    return db


def assert_untouched(db) -> None:
    assert db.count("yellow_tripdata") == 1295
    assert db.count("yellow_tripdata_rejects") == 0
    assert not any("staging" in t for t in db.tables())


def test_month_not_published_is_exit_4_naming_month_and_url(cli, loaded, mirror):
    result = cli("load", "--taxi", "yellow", "--month", "2021-02")
    assert result.exit_code == 4
    assert "yellow 2021-02" in result.stderr and "HTTP 404" in result.stderr
    assert f"{mirror.url}/yellow/yellow_tripdata_2021-02.csv.gz" in result.stderr
    assert len([r for r in mirror.requests if "2021-02" in r[0]]) == 1  # a 404 is not retried
    assert_untouched(loaded)


def test_403_is_not_retried_either(cli, mirror):
    mirror.put_sample("yellow", JULY, SAMPLE)
    mirror.fail("yellow", JULY, 403)
    result = cli("download", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 4 and "HTTP 403" in result.stderr
    assert len(mirror.requests) == 1


def test_500_and_429_are_retried_then_succeed(cli, db, mirror):
    mirror.put_sample("yellow", JULY, SAMPLE)
    mirror.fail("yellow", JULY, 500, 429, 503)
    result = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 0, result.output
    assert len(mirror.requests) == 4
    assert db.count("yellow_tripdata") == 266


def test_a_server_that_stays_down_is_exit_6_after_bounded_retries(cli, loaded, mirror):
    mirror.put_sample("yellow", JULY, SAMPLE)
    mirror.fail("yellow", JULY, *[500] * 10)
    result = cli("load", "--taxi", "yellow", "--month", "2020-07", "--retries", "3")
    assert result.exit_code == 6
    assert "failed after 3 attempts" in result.stderr and "HTTP 500" in result.stderr
    assert len(mirror.requests) == 1 + 3  # the fixture's load, then three attempts
    assert_untouched(loaded)


def test_a_connection_dropped_mid_download_is_resumed_with_range(cli, db, mirror):
    path = mirror.put_generated("yellow", JULY, 5000)
    size = path.stat().st_size
    mirror.fail("yellow", JULY, f"drop:{size // 3}")
    result = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 0, result.output
    ranges = [r[1] for r in mirror.requests]
    assert ranges == [None, f"bytes={size // 3}-"]
    assert db.count("yellow_tripdata") == 5000


def test_a_server_without_range_support_restarts_the_download(cli, db, mirror):
    path = mirror.put_generated("yellow", JULY, 3000)
    mirror.fail("yellow", JULY, f"drop:{path.stat().st_size // 2}", "no-range")
    assert cli("load", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    assert db.count("yellow_tripdata") == 3000


def test_a_complete_download_is_reused(cli, mirror):
    mirror.put_sample("yellow", JULY, SAMPLE)
    assert cli("download", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    assert cli("download", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    assert len(mirror.requests) == 1


def test_truncated_gzip_is_exit_5_and_the_file_is_removed(cli, loaded, mirror):
    data = gzip.compress((DATA / SAMPLE).read_bytes())
    mirror.put_bytes("yellow", JULY, data[: len(data) // 2])
    result = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 5
    assert "corrupt or truncated gzip" in result.stderr and "yellow_tripdata_2020-07.csv.gz" in result.stderr
    assert not list(cli.data_dir.glob("*2020-07*"))
    assert_untouched(loaded)


def test_an_html_page_instead_of_gzip_is_exit_5(cli, loaded, mirror):
    mirror.put_bytes("yellow", JULY, b"<!DOCTYPE html><html><body>Not Found</body></html>")
    result = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 5 and "not a gzipped file" in result.stderr and "HTML page" in result.stderr
    assert_untouched(loaded)


def test_an_empty_file_is_exit_5(cli, loaded, mirror):
    mirror.put_csv("yellow", JULY, b"")
    result = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 5 and "empty" in result.stderr
    assert_untouched(loaded)


def test_a_green_file_given_as_yellow_is_exit_5(cli, loaded, mirror):
    mirror.put_csv("yellow", JULY, (DATA / "green_tripdata_2019-01.head99.csv").read_bytes())
    result = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 5
    assert "lacks yellow column(s) tpep_pickup_datetime, tpep_dropoff_datetime" in result.stderr
    assert "looks like a green file" in result.stderr
    assert_untouched(loaded)


def test_a_missing_column_is_exit_5_naming_it(cli, loaded, mirror):
    lines = (DATA / SAMPLE).read_text().splitlines()
    cut = [",".join(f for i, f in enumerate(line.split(",")) if i != 10) for line in lines]  # drop fare_amount
    mirror.put_csv("yellow", JULY, "\n".join(cut) + "\n")
    result = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 5 and "lacks yellow column(s) fare_amount" in result.stderr
    assert_untouched(loaded)


def test_garbage_beyond_the_reject_threshold_is_exit_5_and_loads_nothing(cli, loaded, mirror):
    lines = (DATA / SAMPLE).read_text().splitlines()
    for i in range(1, 30):
        fields = lines[i].split(",")
        fields[4] = "lots"
        lines[i] = ",".join(fields)
    mirror.put_csv("yellow", JULY, "\n".join(lines) + "\n")
    result = cli("load", "--taxi", "yellow", "--month", "2020-07", "--max-rejects", "1%")
    assert result.exit_code == 5
    assert "29 of 266 rows rejected" in result.stderr and "line 2 trip_distance: not a number: 'lots'" in result.stderr
    assert_untouched(loaded)
    assert loaded.one("SELECT status FROM taxi_loader_ledger ORDER BY load_id DESC LIMIT 1")[0] == "failed"


def test_unknown_taxi_type_is_a_usage_error(cli):
    result = cli("load", "--taxi", "purple", "--month", "2021-01")
    assert result.exit_code == 2 and "'purple' is not one of 'yellow', 'green', 'fhv'" in result.stderr


def test_month_13_is_a_usage_error(cli, db):
    result = cli("load", "--taxi", "yellow", "--month", "2021-13")
    assert result.exit_code == 2 and "invalid month 2021-13: the month must be 01..12" in result.stderr
    assert db.tables() == set()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_database_that_is_down_is_exit_6_naming_the_host(cli, mirror):
    mirror.put_sample("yellow", JULY, SAMPLE)
    port = _free_port()
    url = f"postgresql://postgres:s3cret@127.0.0.1:{port}/nowhere"
    result = cli("load", "--taxi", "yellow", "--month", "2020-07", "--retries", "2", db_url=url)
    assert result.exit_code == 6
    assert (
        "PostgreSQL is unreachable after 2 attempts" in result.stderr and f'"127.0.0.1", port {port}' in result.stderr
    )
    assert "s3cret" not in result.output + result.stderr


def test_wrong_credentials_are_exit_3_without_the_password(cli, mirror, db):
    # The test server trusts every login, so a role that does not exist stands in for a wrong password:
    # both are authentication failures that no retry can cure.
    mirror.put_sample("yellow", JULY, SAMPLE)
    url = db.url.replace("postgres@", "no_such_role:s3cret@")
    result = cli("load", "--taxi", "yellow", "--month", "2020-07", db_url=url)
    assert result.exit_code == 3
    assert "cannot log in to PostgreSQL" in result.stderr and 'role "no_such_role" does not exist' in result.stderr
    assert "s3cret" not in result.output + result.stderr


def test_dedup_merge_without_stage_says_what_to_do(cli, db):
    result = cli("dedup-merge", "--taxi", "green", "--month", "2019-01")
    assert result.exit_code == 2 and "nothing staged for green 2019-01: run `taxi-loader stage` first" in result.stderr
    # A usage error is not a failed load: the ledger is left alone and status shows nothing for the month.
    assert not db.exists("taxi_loader_ledger") or db.count("taxi_loader_ledger") == 0
    assert "FAILED" not in cli("status", log_format="console").stdout


def test_secrets_do_not_appear_in_help():
    result = CliRunner(env={"TAXI_LOADER_DB_URL": "postgresql://u:hunter2@h/db"}).invoke(main, ["load", "--help"])
    assert result.exit_code == 0 and "hunter2" not in result.output


def test_wrong_header_for_green_named_in_the_message(cli, mirror, db):
    mirror.put_csv("green", Month(2019, 1), (DATA / SAMPLE).read_bytes())
    result = cli("load", "--taxi", "green", "--month", "2019-01")
    assert result.exit_code == 5 and "looks like a yellow file" in result.stderr
    # Nothing half-written: no green table, no staging table, no rejects; the ledger says why.
    assert db.tables() == {"taxi_loader_ledger", GREEN.rejects_table}
    assert db.count(GREEN.rejects_table) == 0
    assert db.all("SELECT taxi, status FROM taxi_loader_ledger") == [("green", "failed")]


def test_a_file_that_breaks_off_while_both_copy_streams_run_leaves_nothing_staged(cli, loaded, tmp_path, monkeypatch):
    # A local mirror is read in place, unverified: the break is found by the streaming pass itself, after
    # both COPY streams have copied segments of it.
    monkeypatch.setattr(pg_stage, "SEGMENT_BYTES", 4096)
    monkeypatch.setattr(reader, "CHUNK", 2048)
    data = gzip.compress((DATA / SAMPLE).read_bytes())
    (tmp_path / "yellow_tripdata_2020-07.csv.gz").write_bytes(data[: len(data) * 3 // 4])
    source = str(tmp_path / "{taxi}_tripdata_{year}-{month}.csv.gz")
    result = cli("stage", "--taxi", "yellow", "--month", "2020-07", "--source-url", source, source=False)
    assert result.exit_code == 5, result.output
    assert "corrupt or truncated" in result.stderr and "yellow_tripdata_2020-07.csv.gz" in result.stderr
    assert_untouched(loaded)


@pytest.mark.parametrize("damage", [corrupt_block, wrong_checksum], ids=["corrupt block", "wrong checksum"])
def test_a_gzip_damaged_inside_is_bad_data_found_while_streaming(cli, loaded, tmp_path, monkeypatch, damage):
    # Read in place (no download check first): the streaming pass meets the damage itself, mid-file or at the
    # very end, and says so as bad data, whatever ISA-L's inflate raised.
    monkeypatch.setattr(pg_stage, "SEGMENT_BYTES", 4096)
    monkeypatch.setattr(reader, "CHUNK", 2048)
    (tmp_path / "yellow_tripdata_2020-07.csv.gz").write_bytes(damage(gzip.compress((DATA / SAMPLE).read_bytes())))
    source = str(tmp_path / "{taxi}_tripdata_{year}-{month}.csv.gz")
    result = cli("load", "--taxi", "yellow", "--month", "2020-07", "--source-url", source, source=False)
    assert result.exit_code == 5, result.output
    assert "corrupt or truncated" in result.stderr and "yellow_tripdata_2020-07.csv.gz" in result.stderr
    assert_untouched(loaded)


def _plain_csv_month(mirror) -> tuple[str, int]:
    """The July sample as an uncompressed CSV, served from /plain/; its URL path and size."""
    text = (DATA / SAMPLE).read_bytes()
    path = mirror.root / "plain" / "yellow_tripdata_2020-07.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(text)
    mirror.source_args = ["--source-url", f"{mirror.url}/plain/{{taxi}}_tripdata_{{year}}-{{month}}.csv"]
    return "/plain/yellow_tripdata_2020-07.csv", len(text)


def test_an_uncompressed_download_cut_short_without_a_length_is_retried(cli, db, mirror):
    """No Content-Length, and the connection closes mid-line: not the end of the file. The download resumes."""
    url_path, size = _plain_csv_month(mirror)
    mirror.faults[url_path] = [f"unannounced-drop:{size // 2}"]
    result = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 0, result.output
    assert db.count("yellow_tripdata") == 266


def test_a_content_length_that_is_not_a_number_is_ignored(cli, db, mirror):
    """It ended in exit 1 (int() of the header); the file's own check (gzip) still says whether it is whole."""
    mirror.put_sample("yellow", JULY, SAMPLE)
    mirror.faults[mirror.url_path("yellow", JULY)] = ["garbled-length"]
    result = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 0, result.output
    assert db.count("yellow_tripdata") == 266


def test_an_uncompressed_download_always_cut_short_is_never_a_success(cli, db, mirror):
    """A server that keeps closing early ends in exit 6 with nothing loaded, never in half a month recorded as
    loaded (it was exit 0 with the first half)."""
    url_path, size = _plain_csv_month(mirror)
    mirror.faults[url_path] = [f"unannounced-drop:{size // 2}"] * 5
    result = cli("load", "--taxi", "yellow", "--month", "2020-07", "--retries", "2")
    assert result.exit_code == 6 and "ends mid-line" in result.stderr
    assert not db.exists("yellow_tripdata") or db.count("yellow_tripdata") == 0
    assert (
        not db.exists("taxi_loader_ledger")
        or not db.one("SELECT count(*) FROM taxi_loader_ledger WHERE status = 'succeeded'")[0]
    )


def test_a_server_that_sends_more_than_it_announced_is_never_a_success(cli, db, mirror):
    """The length it announces cuts the file mid-line: what was read is not the whole month (it was exit 0
    with the announced part loaded)."""
    url_path, _ = _plain_csv_month(mirror)
    mirror.faults[url_path] = ["short-length:500"] * 5
    result = cli("load", "--taxi", "yellow", "--month", "2020-07", "--retries", "2")
    assert result.exit_code == 6 and "ends mid-line" in result.stderr
    assert not db.exists("yellow_tripdata") or db.count("yellow_tripdata") == 0


def test_a_data_dir_that_is_a_file_and_a_url_that_names_no_file(cli, mirror, tmp_path):
    mirror.put_sample("yellow", JULY, SAMPLE)
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")

    def download(source_url: str, data_dir: Path):
        argv = ["download", "--taxi", "yellow", "--month", "2020-07", "--source-url", source_url]
        return CliRunner().invoke(main, [*argv, "--data-dir", str(data_dir)])

    result = download(mirror.template, a_file)
    assert result.exit_code == 3 and f"--data-dir {a_file}" in result.stderr
    slash = download(f"{mirror.url}/yellow/", tmp_path / "d")
    assert slash.exit_code == 2 and "names no file" in slash.stderr
    assert not (tmp_path / "d.part").exists() and not list(tmp_path.glob("*.part"))


def test_a_partial_file_planted_as_a_link_is_refused_and_its_target_untouched(mirror, tmp_path):
    """A shared, world-writable data dir: a `.part` symlink someone planted must not have its target written."""
    mirror.put_sample("yellow", JULY, SAMPLE)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    data = tmp_path / "data"
    data.mkdir()
    (data / "yellow_tripdata_2020-07.csv.gz.part").symlink_to(victim)
    args = ["download", "--taxi", "yellow", "--month", "2020-07", "--source-url", mirror.template]
    result = CliRunner().invoke(main, [*args, "--data-dir", str(data)])
    assert result.exit_code == 3 and "is a symbolic link" in result.stderr
    assert victim.read_text() == "precious"


def test_two_downloads_of_one_month_into_one_data_dir_both_end_well(mirror, tmp_path):
    """The second waits for the first (a lock on the partial file) and finds the file whole: one request."""
    path = mirror.put_sample("yellow", JULY, SAMPLE)
    mirror.fail("yellow", JULY, "drip:0.02")  # the first request takes about two seconds: the runs overlap
    data = tmp_path / "data"
    command = [sys.executable, "-m", "taxi_loader", "download", "--taxi", "yellow", "--month", "2020-07"]
    command += ["--source-url", mirror.template, "--data-dir", str(data)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    assert [run.wait(timeout=120) for run in runs] == [0, 0], [run.stderr.read() for run in runs]
    assert (data / "yellow_tripdata_2020-07.csv.gz").read_bytes() == path.read_bytes()
    assert not list(data.glob("*.part"))
    assert len([r for r in mirror.requests if r[0] == mirror.url_path("yellow", JULY)]) == 1


def test_a_nul_byte_in_a_number_is_one_reject_stored_losslessly(cli, db, mirror):
    """Within --max-rejects a NUL byte blocked the whole month (exit 1): no text column can hold it."""
    lines = (DATA / SAMPLE).read_bytes().split(b"\n")
    fields = lines[5].split(b",")
    fields[10] = b"1\x002"  # fare_amount
    lines[5] = b",".join(fields)
    mirror.put_csv("yellow", JULY, b"\n".join(lines))
    result = cli("load", "--taxi", "yellow", "--month", "2020-07", "--max-rejects", "5")
    assert result.exit_code == 0, result.output
    assert db.count("yellow_tripdata") == 265
    line, reason, raw = db.one("SELECT line, reason, raw_line FROM yellow_tripdata_rejects")
    assert line == 6 and "NUL" in reason
    assert raw.encode("ascii").decode("unicode_escape") == lines[5].decode()


def test_a_bad_value_then_a_truncated_gzip_is_bad_data_not_transient(cli, db, mirror):
    """The validating pass meets the cut-off end: exit 5 naming the file, never exit 6 ("run the command
    again", which an orchestrator retries forever)."""
    lines = (DATA / SAMPLE).read_bytes().split(b"\n")
    fields = lines[3].split(b",")
    fields[10] = b"ten"
    lines[3] = b",".join(fields)
    whole = gzip.compress(b"\n".join(lines[:1] + lines[1:] * 40))
    local = mirror.put_bytes("yellow", JULY, whole[: len(whole) * 2 // 3])
    mirror.source_args = ["--source-url", str(local)]  # read in place: no download check comes first
    result = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 5 and "corrupt or truncated" in result.stderr, result.output
    assert not db.exists("yellow_tripdata") or db.count("yellow_tripdata") == 0


def test_least_privilege_loads_and_a_missing_grant_is_exit_3_naming_it(cli, db, mirror):
    """A role with USAGE and CREATE on its schema only (no CREATE on the database: a new role has none) loads
    months and the zones; without CREATE on the schema it gets exit 3 with the GRANT to run (both were exit 1)."""
    mirror.put_sample("yellow", JULY, SAMPLE)
    role = f"tl_limited_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(db.url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE ROLE "{role}" LOGIN')
            cur.execute(f'CREATE SCHEMA "{role}_s"')
            cur.execute(f'GRANT USAGE, CREATE ON SCHEMA "{role}_s" TO "{role}"')
            cur.execute(f'CREATE SCHEMA "{role}_ro"')
            cur.execute(f'GRANT USAGE ON SCHEMA "{role}_ro" TO "{role}"')
        url = db.url.replace("postgres@", f"{role}@")
        args = ("load", "--taxi", "yellow", "--month", "2020-07", "--db-url", url, "--schema")
        ok = cli(*args, f"{role}_s", pg=False)
        assert ok.exit_code == 0, ok.output
        zones = ("zones", "--db-url", url, "--schema", f"{role}_s", "--zones-url", str(DATA / "taxi_zone_lookup.csv"))
        assert cli(*zones, pg=False).exit_code == 0
        denied = cli(*args, f"{role}_ro", pg=False)
        assert denied.exit_code == 3, denied.output
        assert (
            "permission denied for schema" in denied.stderr
            and f"GRANT USAGE, CREATE ON SCHEMA <schema> TO {role}" in denied.stderr
        )
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{role}_s" CASCADE')
            cur.execute(f'DROP SCHEMA "{role}_ro" CASCADE')
            cur.execute(f'DROP ROLE "{role}"')
        admin.close()


def test_misleading_messages_say_what_happened(cli, db, mirror):
    """A blank line before the header is no empty file; a 401 is configuration, not "not found"; a redirect
    loop says so, not "HTTP 302"."""
    mirror.put_csv("yellow", JULY, b"\n\r\n" + (DATA / SAMPLE).read_bytes())
    blank = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert blank.exit_code == 0, blank.output
    assert db.count("yellow_tripdata") == 266
    august = Month(2020, 8)
    mirror.put_sample("yellow", august, SAMPLE)
    mirror.fail("yellow", august, 401)
    denied = cli("load", "--taxi", "yellow", "--month", "2020-08")
    assert denied.exit_code == 3 and "asks for credentials (HTTP 401)" in denied.stderr
    mirror.fail("yellow", august, *["redirect-loop"] * 30)
    looping = cli("load", "--taxi", "yellow", "--month", "2020-08")
    assert looping.exit_code == 3 and "redirects in a loop" in looping.stderr


def test_an_existing_table_of_other_types_is_exit_3_and_untouched(cli, db, mirror):
    mirror.put_sample("yellow", JULY, SAMPLE)
    columns = ", ".join(
        f"{c.db_name} {'timestamp' if c.name == 'passenger_count' else PG_TYPE[c.kind]}"
        for c in main_columns(TAXI_TYPES["yellow"])
    )
    db.run(f'CREATE SCHEMA "{db.schema}"')
    db.run(f"CREATE TABLE yellow_tripdata ({columns}); INSERT INTO yellow_tripdata (unique_row_id) VALUES ('mine')")
    result = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 3, result.output
    assert "passenger_count (timestamp without time zone, not integer)" in result.stderr
    assert db.all("SELECT unique_row_id FROM yellow_tripdata") == [("mine",)]


def test_a_server_that_drips_bytes_ends_at_the_download_timeout(cli, db, mirror):
    """A byte now and then never trips the per-read timeout; the attempt's deadline does (it ran forever)."""
    mirror.put_sample("yellow", JULY, SAMPLE)
    mirror.fail("yellow", JULY, *["drip:0.2"] * 5)
    result = cli("load", "--taxi", "yellow", "--month", "2020-07", "--retries", "2", "--download-timeout", "1")
    assert result.exit_code == 6 and "too slow" in result.stderr and "--download-timeout" in result.stderr
    assert not db.exists("yellow_tripdata") or db.count("yellow_tripdata") == 0


@pytest.mark.parametrize("case", ["a 10 MB field", "a 10 MB last line without a line ending", "a 10 MB header"])
def test_huge_fields_lines_and_headers_are_bad_data(case, cli, db, mirror):
    """They ended as exit 1 ("field larger than field limit") or exit 6: a file's fault is exit 5."""
    text = (DATA / SAMPLE).read_bytes()
    lines = text.split(b"\n")
    if case == "a 10 MB field":
        fields = lines[3].split(b",")
        fields[10] = b"9" * (10 << 20)
        lines[3] = b",".join(fields)
        data = b"\n".join(lines)
    elif case == "a 10 MB header":
        data = b"a" * (10 << 20) + b"\n" + text
    else:
        data = text + b"x" * (10 << 20)
    mirror.put_csv("yellow", JULY, data)
    result = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 5, result.output
    assert not db.exists("yellow_tripdata") or db.count("yellow_tripdata") == 0
    if case != "a 10 MB header":  # within --max-rejects, the line is one reject with its reason
        allowed = cli("load", "--taxi", "yellow", "--month", "2020-07", "--max-rejects", "1")
        assert allowed.exit_code == 0, allowed.output
        assert db.one("SELECT reason FROM yellow_tripdata_rejects")[0].startswith("not a CSV line")


def _bad_fares(rows: int) -> str:
    """A July file of `rows` rows whose every fare is not a number."""
    header, *lines = (DATA / SAMPLE).read_text().splitlines()
    out = [header]
    for i in range(rows):
        fields = lines[i % len(lines)].split(",")
        fields[10] = f"fare{i}"
        out.append(",".join(fields))
    return "\n".join(out) + "\n"


def test_a_month_whose_every_row_is_rejected_is_read_in_flat_memory(loaded, cli, mirror):
    import tracemalloc

    mirror.put_csv("yellow", JULY, _bad_fares(60_000))
    tracemalloc.start()
    try:
        result = cli("load", "--taxi", "yellow", "--month", "2020-07")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 5, result.output
    assert "60000 of 60000 rows rejected, more than --max-rejects 0.1% allows" in result.stderr
    assert "line 2 fare_amount: not a number: 'fare0'" in result.stderr
    # Kept whole, 60,000 rejects are ~27 MB in Python objects; only the first 10,000 are kept in memory.
    assert peak < 15 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert_untouched(loaded)


def test_rejects_beyond_those_kept_in_memory_are_all_stored(cli, db, mirror, monkeypatch):
    monkeypatch.setattr(reader, "REJECTS_IN_MEMORY", 3)
    text = (DATA / SAMPLE).read_text().splitlines()
    for i in range(1, 11):
        fields = text[i].split(",")
        fields[10] = f"fare{i}"
        text[i] = ",".join(fields)
    mirror.put_csv("yellow", JULY, "\n".join(text) + "\n")
    result = cli("load", "--taxi", "yellow", "--month", "2020-07", "--max-rejects", "10")
    assert result.exit_code == 0, result.output
    stored = db.all("SELECT line, raw_line FROM yellow_tripdata_rejects ORDER BY line")
    assert [line for line, _ in stored] == list(range(2, 12))
    assert [raw for _, raw in stored] == text[1:11]
    assert db.count("yellow_tripdata") == 266 - 10


def test_a_count_of_rejects_stops_reading_when_passed(loaded, cli, mirror):
    mirror.put_csv("yellow", JULY, _bad_fares(50_000))
    result = cli("load", "--taxi", "yellow", "--month", "2020-07", "--max-rejects", "5")
    assert result.exit_code == 5
    assert "more than 5 rows rejected (--max-rejects 5), the last at line 7; nothing was loaded" in result.stderr
    assert_untouched(loaded)
