"""The first hour of a new user: what the commands say, where they write, and what they do with a typo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from taxi_loader.cli import main
from taxi_loader.months import Month
from taxi_loader.synthetic_tlc import generated_table

from conftest import DATA, SERVER, free_port

ROOT = Path(__file__).resolve().parent.parent


def test_the_global_options_work_after_the_command_too(tmp_path):
    db = str(tmp_path / "t.duckdb")
    before = CliRunner().invoke(main, ["--log-format", "json", "status", "--sink", "duckdb", "--duckdb-path", db])
    after = CliRunner().invoke(
        main, ["status", "--sink", "duckdb", "--duckdb-path", db, "--log-format", "json", "--log-level=debug"]
    )
    assert before.exit_code == after.exit_code == 0, after.output
    assert after.stdout == before.stdout
    assert "--log-format" not in after.output  # no "No such option"
    # `--format` stays the status command's own option
    as_json = CliRunner().invoke(main, ["status", "--sink", "duckdb", "--duckdb-path", db, "--format", "json"])
    assert json.loads(as_json.stdout)["months"] == []


def test_every_missing_gcp_setting_is_named_at_once_before_any_download(mirror, tmp_path):

    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    args = ["load", "--sink", "bigquery", "--taxi", "green", "--month", "2019-01", "--source-url", mirror.template]
    result = CliRunner().invoke(main, [*args, "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 3
    assert "GCP_PROJECT_ID, GCP_BUCKET_NAME, GCP_DATASET" in result.stderr
    assert mirror.requests == [] and not (tmp_path / "data").exists()


def test_a_bad_file_of_a_local_mirror_is_named_by_its_path_and_left_alone(tmp_path):
    mirror = tmp_path / "my mirror"
    mirror.mkdir()
    bad = mirror / "yellow_tripdata_2021-01.csv.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 40)  # a gzip header, then nothing that inflates
    template = str(mirror / "{taxi}_tripdata_{year}-{month}.csv.gz")
    args = ["load", "--sink", "duckdb", "--duckdb-path", str(tmp_path / "t.duckdb"), "--taxi", "yellow"]
    result = CliRunner().invoke(main, [*args, "--month", "2021-01", "--source-url", template])
    assert result.exit_code == 5
    assert str(bad) in result.stderr and "delete" not in result.stderr
    assert bad.exists()  # the user's mirror is theirs


def test_a_missing_database_says_how_to_create_it(db, monkeypatch):
    url = db.url.rsplit("/", 1)[0] + "/no_such_db"
    result = CliRunner().invoke(main, ["status", "--sink", "postgres", "--db-url", url])
    assert result.exit_code == 3
    assert "database no_such_db does not exist" in result.stderr and "createdb no_such_db" in result.stderr


def test_connection_messages_show_the_pg_variables_in_force(db, monkeypatch):
    """PGHOST and PGPORT set, no URL: the message names that host and port, not placeholders or 5432."""

    port = free_port()
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(port))
    args = ["load", "--sink", "postgres", "--taxi", "yellow", "--month", "2021-01", "--retries", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 6
    assert f'"127.0.0.1", port {port}' in result.stderr and "PGHOST or" not in result.stderr


def test_a_load_says_where_it_writes_in_its_first_log_line_and_its_result(cli, db, mirror):

    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    result = cli("load", "--taxi", "green", "--month", "2019-01")
    assert result.exit_code == 0, result.output
    where = f"postgres@127.0.0.1:5432/{db.url.rsplit('/', 1)[1]}, schema {db.schema}"
    first = json.loads(result.stderr.splitlines()[0])
    assert first["event"] == "writing to PostgreSQL" and first["target"] == where
    assert json.loads(result.stdout)["target"] == where
    console = cli("load", "--taxi", "green", "--month", "2019-01", log_format="console")
    assert console.stdout.rstrip().endswith(f" -> {where}")


def test_the_tests_without_a_server_say_what_to_start():
    """`make test` with no PostgreSQL: one message naming TAXI_LOADER_TEST_SERVER and how to start one."""

    env = {**os.environ, "TAXI_LOADER_TEST_SERVER": f"postgresql://postgres@127.0.0.1:{free_port()}"}
    test = f"{__file__}::test_a_missing_database_says_how_to_create_it"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 2
    assert "TAXI_LOADER_TEST_SERVER=postgresql://postgres@127.0.0.1:" in result.stdout
    assert "Start one" in result.stdout and "Traceback" not in result.stdout + result.stderr


def test_source_url_may_be_a_directory_of_either_format(tmp_path):

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(DATA / "yellow_tripdata_2020-12.head1295.csv", mirror / "yellow_tripdata_2020-12.csv")
    pq.write_table(generated_table("yellow", 2024, 6, 100), mirror / "yellow_tripdata_2024-06.parquet")
    db = str(tmp_path / "t.duckdb")
    for month, rows in (("2020-12", 1295), ("2024-06", 100)):
        args = ["load", "--sink", "duckdb", "--duckdb-path", db, "--taxi", "yellow", "--month", month]
        result = CliRunner().invoke(main, ["--log-format", "json", *args, "--source-url", str(mirror)])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["rows_inserted"] == rows
    missing = CliRunner().invoke(
        main,
        [
            "load",
            "--sink",
            "duckdb",
            "--duckdb-path",
            db,
            "--taxi",
            "yellow",
            "--month",
            "2021-01",
            "--source-url",
            str(mirror),
        ],
    )
    assert missing.exit_code == 4 and str(mirror / "yellow_tripdata_2021-01.csv.gz") in missing.stderr


def test_the_readmes_first_run_block_works_as_pasted(mirror, tmp_path):
    """The block under <!-- first-run --> in README.md, line by line in bash at the repository's root: only the
    database's name is the test's own, and the files come from the local mirror (TAXI_LOADER_* variables)."""

    if SERVER != "postgresql://postgres@127.0.0.1:5432":
        import pytest

        pytest.skip(f"the block names the server localhost:5432 as postgres; TAXI_LOADER_TEST_SERVER is {SERVER}")
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    block = re.search(r"<!-- first-run -->\n```bash\n(.*?)```", readme, re.S)[1]
    name = f"taxi_loader_readme_{uuid.uuid4().hex[:8]}"
    mirror.put_sample("yellow", Month(2021, 1), "yellow_tripdata_2021-01.head22792.csv")
    env = {
        **os.environ,
        "TAXI_LOADER_MIRROR_URL": mirror.template,
        "TAXI_LOADER_ZONES_URL": str(DATA / "taxi_zone_lookup.csv"),
        "TAXI_LOADER_DATA_DIR": str(tmp_path / "data"),
    }
    try:
        result = subprocess.run(
            ["bash", "-e", "-c", block.replace("ny_taxi", name)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"^\s*22792\s*$", result.stdout, re.M), result.stdout
        assert '"rows_zones": 265' in result.stdout
    finally:
        admin = psycopg2.connect(f"{SERVER}/postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_every_step_takes_sink_the_same_way(cli, db, mirror, monkeypatch):
    """The README's step-by-step example: --sink postgres on stage, dedup-merge and cleanup alike; another sink
    on a PostgreSQL step is a usage error; TAXI_LOADER_SINK does not turn a PostgreSQL step into another."""
    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    for step in ("stage", "dedup-merge", "cleanup"):
        result = cli(step, "--sink", "postgres", "--taxi", "green", "--year", "2019", "--month", "01")
        assert result.exit_code == 0, result.output
    assert db.count("green_tripdata") == 99
    wrong = cli("stage", "--sink", "duckdb", "--taxi", "green", "--month", "2019-01")
    assert wrong.exit_code == 2 and "'duckdb' is not 'postgres'" in wrong.stderr
    monkeypatch.setenv("TAXI_LOADER_SINK", "duckdb")
    for step in ("stage", "dedup-merge"):  # the same file again: staged nothing, merged nothing, as PostgreSQL
        result = cli(step, "--taxi", "green", "--month", "2019-01")
        assert result.exit_code == 0, result.output
    assert db.count("green_tripdata") == 99


@pytest.mark.parametrize("value", ["1,000", "-1", "nan%", "inf", "150%", "many"])
def test_max_rejects_is_checked_where_it_is_typed(value, mirror, tmp_path):
    args = ["load", "--sink", "duckdb", "--duckdb-path", str(tmp_path / "t.duckdb"), "--taxi", "yellow"]
    result = CliRunner().invoke(
        main, [*args, "--month", "2021-01", "--source-url", mirror.template, "--max-rejects", value]
    )
    assert result.exit_code == 2 and "--max-rejects" in result.stderr and "a count (100)" in result.stderr
    assert mirror.requests == []  # nothing was read first


def test_install_needs_no_python_313_and_the_tests_say_how_to_get_it(tmp_path):
    """make install sets up what running the loader needs; the emulators (Python 3.13) come with make test."""

    def dry_run(target: str) -> str:
        # -B: every command the target would run, whatever is already set up here; no make of ours around it
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
        return subprocess.run(["make", "-n", "-B", target], cwd=ROOT, env=env, capture_output=True, text=True).stdout

    assert "setup-emulators" not in dry_run("install") and "setup-emulators" in dry_run("install-dev")
    bare = "/usr/bin:/bin"
    if shutil.which("python3.13", path=bare):
        pytest.skip("this machine has a python3.13 outside pyenv: there is no 'without' to try")
    env = {"PATH": bare, "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", ROOT / "scripts" / "setup-emulators.sh", tmp_path / "emulators"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "no Python 3.13 found" in result.stderr and "pyenv install 3.13" in result.stderr
    assert "make install and the loader need only 3.11" in result.stderr


def test_help_groups_options_and_gives_an_example_for_every_command():
    top = " ".join(CliRunner().invoke(main, ["--help"]).output.split())
    assert "PostgreSQL, BigQuery or a DuckDB file" in top and "stage and dedup-merge to postgres" in top
    load = CliRunner().invoke(main, ["load", "--help"]).output
    sections = [line for line in load.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert sections == [
        "Month:",
        "Source:",
        "Load rules:",
        "PostgreSQL sink:",
        "BigQuery sink:",
        "DuckDB sink:",
        "Options:",
    ]
    postgres = load.split("PostgreSQL sink:")[1].split("BigQuery sink:")[0]
    assert "--db-url" in postgres and "--schema" in postgres and "--bucket" not in postgres
    assert "required" in load.split("Source:")[0]  # --taxi
    assert "2021-02-01T10:00:00Z" in load  # --trigger-date's format
    for command in main.commands:
        text = CliRunner().invoke(main, [command, "--help"]).output
        assert f"taxi-loader {command} --" in text, f"{command} --help has no example"
    assert "json (months, gaps, totals, zones)" in " ".join(
        CliRunner().invoke(main, ["status", "--help"]).output.split()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sink", "postgres", "--schema", "pg_catalog"], "cannot hold taxi-loader's tables"),
        (["--sink", "postgres", "--schema", "pg_temp"], "cannot hold taxi-loader's tables"),
        (["--sink", "postgres", "--schema", ""], "cannot hold taxi-loader's tables"),
        (["--sink", "postgres", "--schema", "s" * 64], "cannot hold taxi-loader's tables"),
        (["--source-url", "/m/{taxi}_{year}-{month:>3}.csv"], "is not one of {taxi}, {year}, {month}"),
        (["--source-url", "/m/{taxi.__class__}.csv"], "is not one of {taxi}, {year}, {month}"),
        (["--mirror-url", "/m/{taxi!r}.csv"], "is not one of {taxi}, {year}, {month}"),
        (["--tlc-url", "/m/{0}.csv"], "is not one of {taxi}, {year}, {month}"),
        (["--source-url", "/m/{taxi"], "bad --source-url template"),
    ],
)
def test_option_values_a_user_could_type_are_usage_errors(args, message, tmp_path):
    base = ["load", "--taxi", "yellow", "--month", "2021-01", "--data-dir", str(tmp_path)]
    result = CliRunner().invoke(main, [*base, *args])
    assert result.exit_code == 2 and message in result.stderr, result.output


@pytest.mark.parametrize("month", [("2021-0²",), ("²", "2021"), ("01", "２０２１"), ("１", "2021")])
def test_digits_python_reads_but_the_month_parser_does_not_are_usage_errors(month):
    args = ["--month", month[0], *(["--year", month[1]] if len(month) > 1 else [])]
    result = CliRunner().invoke(main, ["load", "--sink", "duckdb", "--taxi", "yellow", *args])
    assert result.exit_code == 2 and "invalid" in result.stderr, result.output


def test_the_courses_sqlalchemy_url_works_and_bad_urls_are_configuration(cli, db, mirror):
    """Module 1 writes postgresql+psycopg2://...; a port or sslmode libpq cannot use is exit 3 at once (it was
    retried as a server to wait for); another database's URL says what taxi-loader loads into; libpq's own
    forms (options with spaces) pass untouched."""
    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    course = db.url.replace("postgresql://", "postgresql+psycopg2://")
    result = cli("load", "--taxi", "green", "--month", "2019-01", db_url=course)
    assert result.exit_code == 0, result.output
    assert db.count("green_tripdata") == 99
    options = f"{db.url}?options=-c%20statement_timeout%3D600000"
    assert cli("load", "--taxi", "green", "--month", "2019-01", db_url=options).exit_code == 0
    for url, message in (
        ("postgresql://u:s3cret@127.0.0.1:notaport/x", 'for connection option "port"'),
        ("postgresql://u:s3cret@127.0.0.1:5432/x?sslmode=sometimes", "invalid sslmode value"),
        ("mysql://u:s3cret@127.0.0.1/x", "is a mysql URL"),
    ):
        bad = cli("load", "--taxi", "green", "--month", "2019-01", "--retries", "5", db_url=url)
        assert bad.exit_code == 3 and message in bad.stderr, bad.output
        assert "s3cret" not in bad.output


def test_a_signed_urls_token_is_never_stored_or_shown(cli, db, mirror):
    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    signed = f"{mirror.template}?X-Amz-Signature=t0ps3cret&X-Amz-Credential=me"
    mirror.source_args = ["--source-url", signed]
    result = cli("load", "--taxi", "green", "--month", "2019-01")
    assert result.exit_code == 0, result.output
    missing = cli("load", "--taxi", "green", "--month", "2019-02")
    assert missing.exit_code == 4 and "?***" in missing.stderr
    sources = [r[0] for r in db.all("SELECT source FROM taxi_loader_ledger")]
    assert sources and all(s.endswith("?***") for s in sources)
    everything = result.output + missing.output + " ".join(sources)
    assert "t0ps3cret" not in everything and "X-Amz-Credential" not in everything


def test_redact_masks_user_info_and_query_but_not_paths():
    from taxi_loader.source import redact

    assert redact("https://me:pw@host/a/b.csv.gz?sig=1") == "https://***@host/a/b.csv.gz?***"
    assert redact("https://host/a/b.parquet") == "https://host/a/b.parquet"
    assert redact("/data/mirror/x.csv?not-a-query") == "/data/mirror/x.csv?not-a-query"


@pytest.mark.parametrize("fmt", ["json", "kestra"])
def test_an_unexpected_failure_logs_its_traceback_for_a_bug_report(fmt, monkeypatch, tmp_path):
    from taxi_loader import pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline, "download", broken)  # a stand-in for a bug: nothing real fails this way
    args = ["--log-format", fmt, "download", "--taxi", "yellow", "--month", "2021-01", "--data-dir", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.output and "RuntimeError: a bug" in result.output


@pytest.mark.parametrize(
    ("setting", "value"),
    [("GCP_DATASET", "zoomcamp`; DROP TABLE x; --"), ("GCP_PROJECT_ID", "My Project"), ("GCP_BUCKET_NAME", "B")],
)
def test_gcp_names_are_checked_against_googles_rules_where_they_are_read(setting, value, tmp_path):
    env = {"GCP_PROJECT_ID": "my-project", "GCP_DATASET": "zoomcamp", "GCP_BUCKET_NAME": "my-bucket", setting: value}
    result = CliRunner(env=env).invoke(main, ["status", "--sink", "bigquery"])
    assert result.exit_code == 3 and f"{setting} {value!r} is not a valid name" in result.stderr
