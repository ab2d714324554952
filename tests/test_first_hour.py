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
