"""The first hour of a new user: what the commands say, where they write, and what they do with a typo."""

from __future__ import annotations

import json

from click.testing import CliRunner

from taxi_loader.cli import main


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
    from taxi_loader.months import Month

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
