"""An identical file costs nothing: a month whose file is the one its last load was of, held whole by the
table, is recognised from its size and checksum and neither staged nor merged. Rows deleted since, another
file, or --force, and it loads; PostgreSQL (also as Kestra runs it: stage, then dedup-merge) and DuckDB."""

from __future__ import annotations

import json

from taxi_loader.months import Month

from conftest import DATA, data_rows

DECEMBER = Month(2020, 12)
SAMPLE = "yellow_tripdata_2020-12.head1295.csv"
ROWS = data_rows(DATA / SAMPLE)


def out(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def ledger(db) -> list[tuple]:
    return db.all(
        "SELECT status, rows_inserted, rows_present, rows_after FROM taxi_loader_ledger "
        "WHERE month = '2020-12' ORDER BY load_id"
    )


def test_the_same_file_again_is_neither_staged_nor_merged(cli, db, mirror):
    mirror.put_sample("yellow", DECEMBER, SAMPLE)
    assert cli("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    where = "tableoid::regclass || ctid::text"  # where each row is stored
    db.run(f"CREATE TABLE marker AS SELECT {where} AS c FROM yellow_tripdata")

    again = cli("load", "--taxi", "yellow", "--month", "2020-12")
    assert again.exit_code == 0, again.output
    assert (out(again)["rows_inserted"], out(again)["rows_present"], out(again)["rows_read"]) == (0, ROWS, ROWS)
    assert "the table holds it whole: nothing to stage" in again.stderr
    assert ledger(db)[-1] == ("succeeded", 0, ROWS, ROWS)
    assert db.count("yellow_tripdata") == ROWS and not any("staging" in t for t in db.tables())
    # nothing was rewritten: every row is where it was
    assert db.one(f"SELECT count(*) FROM yellow_tripdata WHERE {where} IN (SELECT c FROM marker)")[0] == ROWS


def test_rows_deleted_since_are_restored_exactly(cli, db, mirror):
    mirror.put_sample("yellow", DECEMBER, SAMPLE)
    assert cli("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    ids = {r[0] for r in db.all("SELECT unique_row_id FROM yellow_tripdata")}
    db.run("DELETE FROM yellow_tripdata WHERE unique_row_id IN (SELECT unique_row_id FROM yellow_tripdata LIMIT 7)")

    again = cli("load", "--taxi", "yellow", "--month", "2020-12")
    assert again.exit_code == 0, again.output
    assert (out(again)["rows_inserted"], out(again)["rows_present"]) == (7, ROWS - 7)
    assert {r[0] for r in db.all("SELECT unique_row_id FROM yellow_tripdata")} == ids
    assert ledger(db)[-1] == ("succeeded", 7, ROWS - 7, ROWS)


def test_another_file_for_the_month_loads(cli, db, mirror):
    mirror.put_sample("yellow", DECEMBER, SAMPLE)
    assert cli("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    lines = (DATA / SAMPLE).read_text().splitlines()
    mirror.put_csv("yellow", DECEMBER, "\n".join(lines[:-5]) + "\n")  # the same month, republished shorter

    again = cli("load", "--taxi", "yellow", "--month", "2020-12")
    assert again.exit_code == 0, again.output
    assert "nothing to stage" not in again.stderr
    assert (out(again)["rows_read"], out(again)["rows_inserted"]) == (ROWS - 5, 0)


def test_force_loads_the_same_file(cli, db, mirror):
    mirror.put_sample("yellow", DECEMBER, SAMPLE)
    assert cli("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    forced = cli("load", "--taxi", "yellow", "--month", "2020-12", "--force")
    assert forced.exit_code == 0, forced.output
    assert "nothing to stage" not in forced.stderr
    assert (out(forced)["rows_staged"], out(forced)["rows_inserted"]) == (ROWS, 0)
    assert db.count("yellow_tripdata") == ROWS


def test_stage_then_dedup_merge_as_kestra_runs_them(cli, db, mirror):
    mirror.put_sample("yellow", DECEMBER, SAMPLE)
    for step in ("stage", "dedup-merge", "cleanup"):
        assert cli(step, "--taxi", "yellow", "--month", "2020-12").exit_code == 0

    stage = cli("stage", "--taxi", "yellow", "--month", "2020-12")
    assert stage.exit_code == 0, stage.output
    assert out(stage)["unchanged"] is True and out(stage)["rows_staged"] == 0
    assert "yellow_tripdata_staging_2020_12" not in db.tables()
    merge = cli("dedup-merge", "--taxi", "yellow", "--month", "2020-12")
    assert merge.exit_code == 0, merge.output
    assert (out(merge)["rows_inserted"], out(merge)["rows_present"]) == (0, ROWS)
    assert ledger(db)[-1] == ("succeeded", 0, ROWS, ROWS)


def test_rows_deleted_between_an_unchanged_stage_and_its_merge_ask_for_stage_again(cli, db, mirror):
    mirror.put_sample("yellow", DECEMBER, SAMPLE)
    assert cli("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    assert out(cli("stage", "--taxi", "yellow", "--month", "2020-12"))["unchanged"] is True
    db.run("DELETE FROM yellow_tripdata WHERE unique_row_id IN (SELECT unique_row_id FROM yellow_tripdata LIMIT 3)")
    merge = cli("dedup-merge", "--taxi", "yellow", "--month", "2020-12")
    assert merge.exit_code == 2
    assert "run `taxi-loader stage` first" in merge.stderr
    assert db.count("yellow_tripdata") == ROWS - 3


def test_duckdb_skips_the_same_file_and_restores_deleted_rows(duck, mirror):
    mirror.put_sample("yellow", DECEMBER, SAMPLE)
    assert duck("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    again = duck("load", "--taxi", "yellow", "--month", "2020-12")
    assert again.exit_code == 0, again.output
    assert "nothing to stage" in again.stderr
    assert (out(again)["rows_inserted"], out(again)["rows_present"]) == (0, ROWS)

    import duckdb

    conn = duckdb.connect(str(duck.path))
    conn.execute(
        "DELETE FROM yellow_tripdata WHERE unique_row_id IN (SELECT unique_row_id FROM yellow_tripdata LIMIT 4)"
    )
    conn.close()
    restored = duck("load", "--taxi", "yellow", "--month", "2020-12")
    assert restored.exit_code == 0, restored.output
    assert out(restored)["rows_inserted"] == 4
    assert duck.query("SELECT count(*) FROM yellow_tripdata") == [(ROWS,)]


def test_rows_held_under_another_files_name_are_never_taken_for_granted(cli, db, mirror):
    """A file whose rows were all in the table already, loaded from another file (the same rows saved under
    another month's name): its ledger row holds none of them under its own name, so deleting the other file's
    rows leaves the count of its own unchanged. The re-run must load, not skip."""
    november = Month(2020, 11)
    mirror.put_sample("yellow", DECEMBER, SAMPLE)
    mirror.put_sample("yellow", november, SAMPLE)  # December's rows, published again as November
    assert cli("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    first = cli("load", "--taxi", "yellow", "--month", "2020-11")
    assert (out(first)["rows_inserted"], out(first)["rows_present"]) == (0, ROWS)
    db.run("DELETE FROM yellow_tripdata WHERE filename = 'yellow_tripdata_2020-12.csv'")

    again = cli("load", "--taxi", "yellow", "--month", "2020-11")
    assert again.exit_code == 0, again.output
    assert "nothing to stage" not in again.stderr
    assert out(again)["rows_inserted"] == ROWS and db.count("yellow_tripdata") == ROWS


def test_a_stricter_max_rejects_refuses_the_same_file_as_a_load_would(cli, db, mirror):
    lines = (DATA / SAMPLE).read_text().splitlines()
    fields = lines[3].split(",")
    fields[10] = "ten"
    lines[3] = ",".join(fields)
    mirror.put_csv("yellow", DECEMBER, "\n".join(lines) + "\n")
    assert cli("load", "--taxi", "yellow", "--month", "2020-12", "--max-rejects", "1").exit_code == 0
    refused = cli("load", "--taxi", "yellow", "--month", "2020-12", "--max-rejects", "0")
    assert refused.exit_code == 5 and "more than 0 rows rejected" in refused.stderr
    assert db.count("yellow_tripdata") == ROWS - 1


def test_after_a_failed_load_of_another_file_the_same_file_loads_again(cli, db, mirror):
    """The failed load's rejects may be in the rejects table: only the month's latest load is trusted."""
    mirror.put_sample("yellow", DECEMBER, SAMPLE)
    assert cli("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    mirror.put_csv("yellow", DECEMBER, "not,a,taxi,header\n1,2,3,4\n")
    assert cli("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 5
    mirror.put_sample("yellow", DECEMBER, SAMPLE)
    again = cli("load", "--taxi", "yellow", "--month", "2020-12")
    assert again.exit_code == 0 and "nothing to stage" not in again.stderr
    assert ledger(db)[-1] == ("succeeded", 0, ROWS, ROWS)


def test_a_dropped_main_table_is_loaded_again(cli, db, mirror):
    mirror.put_sample("yellow", DECEMBER, SAMPLE)
    assert cli("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    db.run("DROP TABLE yellow_tripdata")  # to start over, the ledger kept
    again = cli("load", "--taxi", "yellow", "--month", "2020-12")
    assert again.exit_code == 0, again.output
    assert out(again)["rows_inserted"] == ROWS and db.count("yellow_tripdata") == ROWS


def test_stage_that_skipped_then_dedup_merge_drop_duplicates_asks_for_stage_force(cli, db, mirror):
    mirror.put_sample("yellow", DECEMBER, SAMPLE)
    assert cli("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    assert out(cli("stage", "--taxi", "yellow", "--month", "2020-12"))["unchanged"] is True
    merge = cli("dedup-merge", "--taxi", "yellow", "--month", "2020-12", "--drop-duplicates")
    assert merge.exit_code == 2 and "stage --force" in merge.stderr
