"""End to end on a real PostgreSQL, downloading over real HTTP: counts, ids, re-runs, repeats, rejects."""

from __future__ import annotations

import gzip
import json
import threading
import uuid

import psycopg2
import pytest
from psycopg2 import sql

from taxi_loader import pipeline, reader
from taxi_loader.identity import key_text, row_id
from taxi_loader.job import Job
from taxi_loader.months import Month
from taxi_loader.sinks.postgres import PostgresSettings, PostgresSink
from taxi_loader.sinks.postgres import merge as pg_merge
from taxi_loader.sinks.postgres import stage as pg_stage
from taxi_loader.source import Source
from taxi_loader.taxis import TAXI_TYPES

from conftest import DATA, SAMPLES, data_rows

COURSE_TYPES = {"code": "text", "int": "integer", "timestamp": "timestamp", "float": "double precision", "text": "text"}


def outputs(result) -> dict:
    """The JSON summary line a step printed on stdout."""
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("taxi", "month", "sample"), SAMPLES, ids=[s[2] for s in SAMPLES])
def test_sample_loads_exactly_its_rows_and_rerun_inserts_nothing(cli, db, mirror, taxi, month, sample):
    mirror.put_sample(taxi, month, sample)
    expected = data_rows(DATA / sample)

    first = cli("load", "--taxi", taxi, "--month", str(month))
    assert first.exit_code == 0, first.output
    assert outputs(first)["rows_inserted"] == expected
    assert db.one(f"SELECT count(*), count(DISTINCT unique_row_id) FROM {taxi}_tripdata") == (expected, expected)

    again = cli("load", "--taxi", taxi, "--month", str(month))
    assert again.exit_code == 0, again.output
    assert (outputs(again)["rows_inserted"], outputs(again)["rows_present"]) == (0, expected)
    assert db.count(f"{taxi}_tripdata") == expected
    assert db.all("SELECT status, rows_inserted FROM taxi_loader_ledger ORDER BY load_id") == [
        ("succeeded", expected),
        ("succeeded", 0),
    ]
    assert f"{taxi}_tripdata_staging_{month.year}_{month.mm}" not in db.tables()


def _course_ids(db, taxi_name: str, sample: str) -> list[str]:
    """unique_row_id as the course's Kestra flow computes it, in PostgreSQL, for every row of the sample."""
    taxi = TAXI_TYPES[taxi_name]
    cols = ", ".join(f"{c.name} {COURSE_TYPES[c.kind.value]}" for c in taxi.csv_columns)  # unquoted, like the course
    key = " || ".join(
        f"COALESCE({f}, '')" if taxi.column(f).kind.value == "code" else f"COALESCE(CAST({f} AS text), '')"
        for f in taxi.key_fields
    )
    with db.conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"; SET search_path TO "{db.schema}"')
        cur.execute(f"CREATE TABLE course_{taxi_name} (unique_row_id text, filename text, {cols})")
        with open(DATA / sample, "rb") as f:
            cur.copy_expert(
                f"COPY course_{taxi_name} ({', '.join(c.name for c in taxi.csv_columns)}) "
                "FROM STDIN WITH (FORMAT csv, HEADER true)",
                f,
            )
        cur.execute(f"UPDATE course_{taxi_name} SET unique_row_id = md5({key})")
        cur.execute(f"SELECT unique_row_id FROM course_{taxi_name}")
        return [r[0] for r in cur.fetchall()]


@pytest.mark.parametrize(("taxi", "month", "sample"), SAMPLES, ids=[s[2] for s in SAMPLES])
def test_ids_equal_the_course_expression_and_the_python_twin(cli, db, mirror, taxi, month, sample):
    mirror.put_sample(taxi, month, sample)
    assert cli("load", "--taxi", taxi, "--month", str(month)).exit_code == 0
    ours = {r[0] for r in db.all(f"SELECT unique_row_id FROM {taxi}_tripdata")}
    course = _course_ids(db, taxi, sample)
    assert set(course) <= ours  # every first occurrence has the course's id
    assert len(ours) == len(course)  # and repeats (if any) got ids of their own

    # The Python twin (used by the cloud path) gives the same ids, repeats numbered in file order.
    cols = [c.db_name for c in TAXI_TYPES[taxi].columns]
    rows = db.all(f"SELECT unique_row_id, {', '.join(cols)} FROM {taxi}_tripdata")
    seen: dict[str, int] = {}
    python_ids = set()
    for r in rows:
        text = key_text(TAXI_TYPES[taxi], dict(zip(cols, r[1:], strict=True)))
        seen[text] = seen.get(text, 0) + 1
        python_ids.add(row_id(text, seen[text]))
    assert python_ids == ours


def test_repeats_are_kept_with_their_own_ids_or_dropped(cli, db, mirror):
    month = Month(2021, 3)
    header = ",".join(c.name for c in TAXI_TYPES["yellow"].csv_columns)
    row = "1,2021-03-01 00:46:40,2021-03-01 00:53:20,1,1.50,1,N,151,239,1,7,0.5,0.5,1.65,0,0.3,9.95,2.5"
    other = "2,2021-03-02 10:00:00,2021-03-02 10:10:00,1,2.00,1,N,1,2,1,9,0.5,0.5,0,0,0.3,10.3,2.5"
    mirror.put_csv("yellow", month, f"{header}\n{row}\n{other}\n{row}\n{row}\n")

    kept = cli("load", "--taxi", "yellow", "--month", "2021-03")
    assert outputs(kept)["rows_repeated"] == 2 and outputs(kept)["rows_inserted"] == 4
    ids = {r[0] for r in db.all("SELECT unique_row_id FROM yellow_tripdata")}
    text = "12021-03-01 00:46:402021-03-01 00:53:2015123971.5"
    assert ids == {
        row_id(text),
        row_id(text, 2),
        row_id(text, 3),
        row_id("22021-03-02 10:00:002021-03-02 10:10:00129" + "2"),
    }

    db.run("DROP TABLE yellow_tripdata")
    dropped = cli("load", "--taxi", "yellow", "--month", "2021-03", "--drop-duplicates")
    assert outputs(dropped)["rows_inserted"] == 2 and outputs(dropped)["rows_dropped"] == 2
    assert db.count("yellow_tripdata") == 2


def _rows(n: int, day: int = 5) -> list[str]:
    """n distinct yellow rows of March 2021."""
    return [
        f"2,2021-03-{day:02d} {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d},2021-03-{day:02d} 23:59:59,"
        f"1,{i % 97}.25,1,N,{i % 263 + 1},{i % 251 + 1},1,{i % 50}.5,0.5,0.5,0,0,0.3,12.8,2.5"
        for i in range(n)
    ]


def test_ids_computed_segment_by_segment_number_repeats_in_file_order(cli, db, mirror, monkeypatch):
    # Segments of 4 KiB: the ids of one file come from many separately computed segments; a key repeats in
    # three far-apart segments, each time with another tip, so the k-th id must go to the k-th occurrence.
    monkeypatch.setattr(pg_stage, "SEGMENT_BYTES", 4096)
    monkeypatch.setattr(reader, "CHUNK", 2048)
    header = ",".join(c.name for c in TAXI_TYPES["yellow"].csv_columns)
    lines = _rows(3000)
    repeated = "1,2021-03-01 00:46:40,2021-03-01 00:53:20,1,1.50,1,N,151,239,1,7,0.5,0.5,{tip},0,0.3,9.95,2.5"
    for position, tip in ((2900, "3"), (1500, "2"), (5, "1")):
        lines.insert(position, repeated.format(tip=tip))
    mirror.put_csv("yellow", Month(2021, 3), header + "\n" + "\n".join(lines) + "\n")

    assert cli("stage", "--taxi", "yellow", "--month", "2021-03").exit_code == 0
    text = "12021-03-01 00:46:402021-03-01 00:53:2015123971.5"
    # stage gives every row its final id: the repeats are numbered in the staging table already.
    assert db.one("SELECT count(*), count(DISTINCT unique_row_id) FROM yellow_tripdata_staging_2021_03") == (3003, 3003)
    assert db.one("SELECT rows_repeated FROM taxi_loader_ledger WHERE status = 'staged'") == (2,)
    merged = cli("dedup-merge", "--taxi", "yellow", "--month", "2021-03")
    assert outputs(merged)["rows_inserted"] == 3003 and outputs(merged)["rows_repeated"] == 2
    by_tip = dict(
        db.all("SELECT tip_amount, unique_row_id FROM yellow_tripdata WHERE pulocationid = '151' AND vendorid = '1'")
    )
    assert by_tip == {1.0: row_id(text), 2.0: row_id(text, 2), 3.0: row_id(text, 3)}


def test_a_bad_value_late_in_the_file_is_found_in_its_segment(cli, db, mirror, monkeypatch):
    monkeypatch.setattr(pg_stage, "SEGMENT_BYTES", 4096)
    monkeypatch.setattr(reader, "CHUNK", 2048)
    header = ",".join(c.name for c in TAXI_TYPES["yellow"].csv_columns)
    lines = _rows(2000)
    fields = lines[1800].split(",")
    fields[7] = "abc"
    lines[1800] = ",".join(fields)
    mirror.put_csv("yellow", Month(2021, 3), header + "\n" + "\n".join(lines) + "\n")

    result = cli("load", "--taxi", "yellow", "--month", "2021-03", "--max-rejects", "1")
    assert result.exit_code == 0, result.output
    assert outputs(result)["rows_rejected"] == 1 and db.count("yellow_tripdata") == 1999
    assert db.all("SELECT line, column_name FROM yellow_tripdata_rejects") == [(1802, "PULocationID")]


def test_a_generated_month_with_quirks_loads_every_row(cli, db, mirror):
    path = mirror.put_generated("yellow", Month(2020, 5), 20_000)
    result = cli("load", "--taxi", "yellow", "--month", "2020-05")
    assert result.exit_code == 0, result.output
    out = outputs(result)
    assert out["rows_inserted"] == data_rows(path) == 20_000
    assert out["rows_repeated"] > 0 and out["rows_suspicious"] > 0
    assert db.one("SELECT count(DISTINCT unique_row_id) FROM yellow_tripdata")[0] == 20_000
    assert db.one("SELECT count(*) FROM yellow_tripdata WHERE vendorid IS NULL")[0] == 400  # the empty-code tail


@pytest.mark.parametrize("places", ["all", "none", "some", "wrong", "too many"])
def test_out_of_month_rows_move_out_whatever_places_the_count_noted(cli, db, mirror, monkeypatch, places):
    """A first load moves its out-of-month rows from the places (ctids) its count noted: the places are a
    shortcut, so when they miss rows, point at rows of the month, or are too many to note, the out-of-month
    rows still all go, each once, and those the table holds already count as present."""
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    assert cli("load", "--taxi", "yellow", "--month", "2020-07").exit_code == 0  # the main table, another month
    mirror.put_generated("yellow", Month(2020, 5), 5_000)
    assert cli("stage", "--taxi", "yellow", "--month", "2020-05").exit_code == 0
    outside = "(tpep_pickup_datetime < '2020-05-01' OR tpep_pickup_datetime >= '2020-06-01')"
    strays = db.one(f"SELECT count(*) FROM yellow_tripdata_staging_2020_05 WHERE {outside}")[0]
    assert strays > 2
    db.run(  # two of them are in the table already (another file held them)
        f"INSERT INTO yellow_tripdata SELECT unique_row_id, filename, vendorid, tpep_pickup_datetime, "
        f"tpep_dropoff_datetime FROM yellow_tripdata_staging_2020_05 WHERE {outside} ORDER BY ctid DESC LIMIT 2"
    )
    count, move_out, moves = pg_merge._count, pg_merge._move_out, []
    if places == "too many":
        monkeypatch.setattr(pg_merge, "_NAMED_AT_MOST", strays - 1)

    def noted(cur, tables, month, repeats, asked):
        counts = count(cur, tables, month, repeats, asked)
        assert counts.outside == strays
        if places == "too many":
            assert counts.outside_at is None
            return counts
        assert len(counts.outside_at) == strays  # as noted, before the test changes them
        cur.execute(sql.SQL("SELECT ctid::text FROM {} WHERE NOT {}").format(tables.staging(month), sql.SQL(outside)))
        of_the_month = [tid for (tid,) in cur.fetchall()][:100]
        chosen = {"all": counts.outside_at, "none": [], "some": counts.outside_at[:2], "wrong": of_the_month}
        counts.outside_at = chosen[places]
        return counts

    def recorded(cur, tables, month, at):
        moved, new = move_out(cur, tables, month, at)
        moves.append(("by places" if at is not None else "by a scan", moved, new))
        return moved, new

    monkeypatch.setattr(pg_merge, "_count", noted)
    monkeypatch.setattr(pg_merge, "_move_out", recorded)
    result = cli("dedup-merge", "--taxi", "yellow", "--month", "2020-05")
    assert result.exit_code == 0, result.output
    assert (outputs(result)["rows_inserted"], outputs(result)["rows_present"]) == (4_998, 2)
    assert db.count("yellow_tripdata") == 266 + 5_000
    assert db.one(f"SELECT count(*) FROM yellow_tripdata_p2020_05 WHERE {outside}") == (0,)
    assert db.one(f"SELECT count(*) FROM yellow_tripdata WHERE {outside} AND filename LIKE '%2020-05%'") == (strays,)
    by_places = {"all": strays, "none": 0, "some": 2, "wrong": 0, "too many": None}[places]
    assert [(how, moved) for how, moved, _ in moves] == (
        [("by places", by_places)] * (by_places is not None)
        + [("by a scan", strays - (by_places or 0))] * (by_places != strays)
    )
    assert sum(new for _, _, new in moves) == strays - 2  # the two the table held are not inserted again


def test_rejected_rows_are_recorded_and_the_rest_loads(cli, db, mirror):
    lines = (DATA / "yellow_tripdata_2020-07.head266.rides.csv").read_text().splitlines()
    fields = lines[10].split(",")  # lines[10] is line 11 of the file: the header is line 1
    fields[7] = "abc"
    lines[10] = ",".join(fields)
    fields = lines[20].split(",")
    fields[10] = "12,5"  # a fare with a comma: one field too many
    lines[20] = ",".join(fields)
    fields = lines[30].split(",")
    fields[1] = "2020-07-01 25:61:00"
    lines[30] = ",".join(fields)
    fields = lines[40].split(",")
    fields[3] = "1.5"
    lines[40] = ",".join(fields)
    mirror.put_csv("yellow", Month(2020, 7), "\n".join(lines) + "\n")

    result = cli("load", "--taxi", "yellow", "--month", "2020-07", "--max-rejects", "10")
    assert result.exit_code == 0, result.output
    assert outputs(result)["rows_rejected"] == 4
    assert db.count("yellow_tripdata") == 266 - 4
    rejects = db.all("SELECT line, column_name, reason FROM yellow_tripdata_rejects ORDER BY line")
    assert [r[0] for r in rejects] == [11, 21, 31, 41]
    assert rejects[0][1] == "PULocationID" and rejects[1][1] is None and "19 fields" in rejects[1][2]
    assert rejects[2][1] == "tpep_pickup_datetime" and "invalid timestamp" in rejects[2][2]
    assert rejects[3][1] == "passenger_count" and "not an integer" in rejects[3][2]
    # a re-run records the rejects once, not twice
    cli("load", "--taxi", "yellow", "--month", "2020-07", "--max-rejects", "10")
    assert db.count("yellow_tripdata_rejects") == 4


def test_integers_written_as_floats_and_a_latin1_byte(cli, db, mirror):
    fhv = (
        "dispatching_base_num,pickup_datetime,dropOff_datetime,PUlocationID,DOlocationID,SR_Flag,"
        "Affiliated_base_number\n"
    )
    body = (
        "B00001,2019-01-01 00:30:00,2019-01-01 02:51:55,,,,B00001\n"
        "B00008,2019-01-01 00:15:00,2019-01-01 00:23:00,264.0,265.0,1.0,B00008\n"
        "B00009,2019-01-01 00:17:00,2019-01-01 00:25:00,,,,B00009\xa0\n"
    )
    mirror.put_csv("fhv", Month(2019, 1), fhv.encode() + body.encode("latin-1"))
    result = cli("load", "--taxi", "fhv", "--month", "2019-01")
    assert result.exit_code == 0, result.output
    assert db.all("SELECT pulocationid, sr_flag FROM fhv_tripdata WHERE dispatching_base_num = 'B00008'") == [
        ("264", "1")
    ]
    assert (
        db.one("SELECT affiliated_base_number FROM fhv_tripdata WHERE dispatching_base_num = 'B00009'")[0]
        == "B00009\xa0"
    )


def test_two_months_staged_at_once_do_not_interfere(cli, db, mirror, tmp_path):
    a, b = Month(2021, 1), Month(2020, 12)
    mirror.put_sample("yellow", a, "yellow_tripdata_2021-01.head22792.csv")
    mirror.put_sample("yellow", b, "yellow_tripdata_2020-12.head1295.csv")
    sink = PostgresSink(PostgresSettings(db.url, db.schema))
    jobs = [Job(TAXI_TYPES["yellow"], m, tmp_path / "d", Source(url=mirror.template)) for m in (a, b)]
    errors = []

    def run(job):
        try:
            pipeline.stage(job, sink)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert db.count("yellow_tripdata_staging_2021_01") == 22792
    assert db.count("yellow_tripdata_staging_2020_12") == 1295
    for m in (a, b):
        assert cli("dedup-merge", "--taxi", "yellow", "--month", str(m)).exit_code == 0
    assert db.count("yellow_tripdata") == 22792 + 1295


def test_a_failure_between_stage_and_merge_leaves_the_main_table_untouched(cli, db, mirror):
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    mirror.put_sample("yellow", Month(2020, 12), "yellow_tripdata_2020-12.head1295.csv")
    assert cli("load", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    assert cli("stage", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    # The merge dies mid-statement: the staging table lost a column it needs.
    db.run("ALTER TABLE yellow_tripdata_staging_2020_12 DROP COLUMN fare_amount")
    failed = cli("dedup-merge", "--taxi", "yellow", "--month", "2020-12")
    assert failed.exit_code == 2, failed.output
    assert "staging table is not as stage left it" in failed.stderr and "fare_amount" in failed.stderr
    assert "run `taxi-loader stage` again" in failed.stderr
    assert db.count("yellow_tripdata") == 266
    assert db.one("SELECT status FROM taxi_loader_ledger ORDER BY load_id DESC LIMIT 1")[0] == "failed"
    # Staged again and merged, the month arrives whole.
    assert cli("stage", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    assert cli("dedup-merge", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    assert db.count("yellow_tripdata") == 266 + 1295


def test_steps_one_by_one_with_year_month_and_trigger_date(cli, db, mirror):
    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    assert cli("download", "--taxi", "green", "--year", "2019", "--month", "1").exit_code == 0
    assert (cli.data_dir / "green_tripdata_2019-01.csv.gz").exists()
    assert cli("stage", "--taxi", "green", "--trigger-date", "2019-02-01T09:00:00Z").exit_code == 0
    merged = cli("dedup-merge", "--taxi", "green", "--month", "2019-01")
    assert outputs(merged)["rows_inserted"] == 99
    # A first load's staging table became the month's partition: cleanup has no table left to drop.
    assert "green_tripdata_staging_2019_01" not in db.tables() and "green_tripdata_p2019_01" in db.tables()
    done = cli("cleanup", "--sink", "postgres", "--taxi", "green", "--month", "2019-01")
    assert outputs(done)["staging_dropped"] is False
    assert not (cli.data_dir / "green_tripdata_2019-01.csv.gz").exists()
    assert "green_tripdata_staging_2019_01" not in db.tables()
    assert db.one("SELECT filename FROM green_tripdata LIMIT 1")[0] == "green_tripdata_2019-01.csv"


def test_a_local_mirror_is_read_in_place_and_never_deleted(cli, db, tmp_path):
    src = tmp_path / "local" / "yellow_tripdata_2020-07.csv"
    src.parent.mkdir()
    src.write_bytes((DATA / "yellow_tripdata_2020-07.head266.rides.csv").read_bytes())
    source = f"file://{tmp_path}/local/{{taxi}}_tripdata_{{year}}-{{month}}.csv"
    result = cli("load", "--taxi", "yellow", "--month", "2020-07", "--source-url", source, source=False)
    assert result.exit_code == 0, result.output
    assert db.count("yellow_tripdata") == 266 and src.exists()


def test_kestra_format_prints_outputs_metrics_and_levelled_logs(cli, mirror):
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    result = cli("load", "--taxi", "yellow", "--month", "2020-07", log_format="kestra")
    lines = result.stdout.strip().splitlines()
    assert all(line.startswith("::{") and line.endswith("}::") for line in lines)
    payloads = [json.loads(line[2:-2]) for line in lines]
    outputs_ = [p["outputs"] for p in payloads if "outputs" in p]
    assert outputs_[-1]["rows_inserted"] == 266
    metrics = [m for p in payloads if "metrics" in p for m in p["metrics"]]
    assert {
        "name": "rows_inserted",
        "type": "counter",
        "value": 266,
        "tags": {"taxi": "yellow", "month": "2020-07"},
    } in metrics
    assert any(log["level"] == "INFO" for p in payloads if "logs" in p for log in p["logs"])


def test_a_course_created_table_is_accepted_as_it_is(cli, db, mirror):
    _course_ids(db, "yellow", "yellow_tripdata_2020-07.head266.rides.csv")
    db.run(
        "ALTER TABLE course_yellow RENAME TO yellow_tripdata; "
        "UPDATE yellow_tripdata SET filename = 'yellow_tripdata_2020-07.csv'"
    )
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    mirror.put_sample("yellow", Month(2020, 12), "yellow_tripdata_2020-12.head1295.csv")
    again = cli("load", "--taxi", "yellow", "--month", "2020-07")
    assert outputs(again)["rows_inserted"] == 0
    new = cli("load", "--taxi", "yellow", "--month", "2020-12")
    assert outputs(new)["rows_inserted"] == 1295
    assert db.count("yellow_tripdata") == 266 + 1295
    assert (
        db.one("SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND tablename = 'yellow_tripdata'", (db.schema,))[
            0
        ]
        == 0
    )


def test_gzip_and_plain_sources_give_the_same_table(db, tmp_path):
    from click.testing import CliRunner

    from taxi_loader.cli import main

    d = tmp_path / "m"
    d.mkdir()
    raw = (DATA / "yellow_tripdata_2020-12.head1295.csv").read_bytes()
    (d / "yellow_tripdata_2020-12.csv.gz").write_bytes(gzip.compress(raw))
    (d / "yellow_tripdata_2020-12.csv").write_bytes(raw)
    ids = []
    for suffix in (".csv.gz", ".csv"):
        schema = f"{db.schema}{suffix.replace('.', '_')}"
        result = CliRunner().invoke(
            main,
            [
                "load",
                "--taxi",
                "yellow",
                "--month",
                "2020-12",
                "--db-url",
                db.url,
                "--schema",
                schema,
                "--source-url",
                f"{d}/{{taxi}}_tripdata_{{year}}-{{month}}{suffix}",
            ],
        )
        assert result.exit_code == 0, result.output
        with psycopg2.connect(db.url) as conn, conn.cursor() as cur:
            cur.execute(f'SELECT array_agg(unique_row_id ORDER BY unique_row_id) FROM "{schema}".yellow_tripdata')
            ids.append(cur.fetchone()[0])
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
    assert ids[0] == ids[1] and len(ids[0]) == 1295


YELLOW_HEADER = ",".join(c.name for c in TAXI_TYPES["yellow"].csv_columns)


def _yellow(vendor, pickup, dropoff, pu, do, fare="7", dist="1.50"):
    return f"{vendor},{pickup},{dropoff},1,{dist},1,N,{pu},{do},1,{fare},0.5,0.5,0,0,0.3,8.3,2.5"


def test_a_row_in_two_files_is_stored_once_whichever_loads_first(cli, db, mirror):
    shared = _yellow(1, "2021-01-31 23:50:00", "2021-02-01 00:10:00", 10, 20)  # a January trip, in both files
    jan = [_yellow(2, f"2021-01-0{d} 10:00:00", f"2021-01-0{d} 10:20:00", 1, 2) for d in range(1, 6)] + [shared]
    feb = [shared] + [_yellow(2, f"2021-02-0{d} 10:00:00", f"2021-02-0{d} 10:20:00", 1, 2) for d in range(1, 4)]
    mirror.put_csv("yellow", Month(2021, 1), YELLOW_HEADER + "\n" + "\n".join(jan) + "\n")
    mirror.put_csv("yellow", Month(2021, 2), YELLOW_HEADER + "\n" + "\n".join(feb) + "\n")

    assert outputs(cli("load", "--taxi", "yellow", "--month", "2021-02"))["rows_inserted"] == 4
    # January's first load moves February's copy of the shared row into its new partition, once.
    result = cli("load", "--taxi", "yellow", "--month", "2021-01")
    assert (outputs(result)["rows_inserted"], outputs(result)["rows_present"]) == (5, 1)
    assert db.one("SELECT count(*), count(DISTINCT unique_row_id) FROM yellow_tripdata") == (9, 9)
    where = db.all("SELECT tableoid::regclass::text, count(*) FROM yellow_tripdata GROUP BY 1 ORDER BY 1")
    assert where == [("yellow_tripdata_p2021_01", 6), ("yellow_tripdata_p2021_02", 3)]


def test_keys_that_render_to_the_same_text_still_load_every_row(cli, db, mirror):
    # PULocationID 15 + DOLocationID 1 and 1 + 51 both render "151": the course's key cannot tell them apart.
    rows = [
        _yellow(1, "2021-01-05 10:00:00", "2021-01-05 10:20:00", 15, 1),
        _yellow(1, "2021-01-05 10:00:00", "2021-01-05 10:20:00", 1, 51),
        _yellow(2, "2021-01-06 10:00:00", "2021-01-06 10:20:00", 3, 4),
    ]
    mirror.put_csv("yellow", Month(2021, 1), YELLOW_HEADER + "\n" + "\n".join(rows) + "\n")
    result = cli("load", "--taxi", "yellow", "--month", "2021-01")
    assert result.exit_code == 0, result.output
    assert db.one("SELECT count(*), count(DISTINCT unique_row_id) FROM yellow_tripdata") == (3, 3)


def test_rows_deleted_since_the_last_load_come_back_on_a_rerun(cli, db, mirror):
    mirror.put_sample("yellow", Month(2020, 12), "yellow_tripdata_2020-12.head1295.csv")
    assert cli("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    db.run("DELETE FROM yellow_tripdata_p2020_12 WHERE ctid IN (SELECT ctid FROM yellow_tripdata_p2020_12 LIMIT 100)")
    result = cli("load", "--taxi", "yellow", "--month", "2020-12")
    assert (outputs(result)["rows_inserted"], outputs(result)["rows_present"]) == (100, 1195)
    assert db.one("SELECT count(*), count(DISTINCT unique_row_id) FROM yellow_tripdata") == (1295, 1295)


def test_values_the_id_pass_cannot_vouch_for_go_through_the_validating_pass(cli, db, mirror):
    # COPY would store a code as written ("01"), and a distance "1.50" is re-printed for the key: the first
    # is refused by the fast path, so the Python pass stores the integer and keys it as PostgreSQL prints it.
    rows = [
        _yellow("01", "2021-01-05 10:00:00", "2021-01-05 10:20:00", "+7", 8, fare="7.0"),
        _yellow(2, "2021-01-06 10:00:00", "2021-01-06 10:20:00", 3, 4, dist=".20"),
    ]
    mirror.put_csv("yellow", Month(2021, 1), YELLOW_HEADER + "\n" + "\n".join(rows) + "\n")
    staged = cli("stage", "--taxi", "yellow", "--month", "2021-01")
    assert staged.exit_code == 0, staged.output
    assert outputs(staged)["validated"] is True
    assert cli("dedup-merge", "--taxi", "yellow", "--month", "2021-01").exit_code == 0
    assert db.all("SELECT vendorid, pulocationid, unique_row_id FROM yellow_tripdata ORDER BY vendorid") == [
        ("1", "7", row_id("12021-01-05 10:00:002021-01-05 10:20:007871.5")),
        ("2", "3", row_id("22021-01-06 10:00:002021-01-06 10:20:003470.2")),
    ]


def test_a_first_load_stages_into_its_partition_to_be_and_a_reload_into_an_unlogged_table(cli, db, mirror):
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    persistence = "SELECT relpersistence FROM pg_class WHERE oid = to_regclass('yellow_tripdata_staging_2020_07')"
    staged = cli("stage", "--taxi", "yellow", "--month", "2020-07")
    assert outputs(staged)["validated"] is False  # the published forms take the fast path
    assert db.one(persistence) == ("p",)  # logged: it will be the partition
    assert cli("dedup-merge", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    assert db.one(persistence) is None and "yellow_tripdata_p2020_07" in db.tables()  # renamed, attached
    assert cli("stage", "--taxi", "yellow", "--month", "2020-07", "--force").exit_code == 0  # (else: unchanged)
    assert db.one(persistence) == ("u",)  # the partition exists: only what is new will be copied
    merged = cli("dedup-merge", "--taxi", "yellow", "--month", "2020-07")
    assert outputs(merged)["rows_inserted"] == 0 and db.count("yellow_tripdata") == 266


def test_a_new_partition_carries_a_check_that_spares_attach_its_scan(cli, db, mirror):
    # ATTACH PARTITION scans the table unless a valid constraint implies the whole partition constraint,
    # `pickup IS NOT NULL` included. PostgreSQL says which it did at DEBUG1: re-attach and listen.
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    assert cli("load", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    db.conn.notices.clear()
    db.run(
        "BEGIN; ALTER TABLE yellow_tripdata DETACH PARTITION yellow_tripdata_p2020_07;"
        " SET client_min_messages = debug1; ALTER TABLE yellow_tripdata ATTACH PARTITION yellow_tripdata_p2020_07"
        " FOR VALUES FROM ('2020-07-01') TO ('2020-08-01'); ROLLBACK"
    )
    said = " ".join(db.conn.notices)
    assert 'partition constraint for table "yellow_tripdata_p2020_07" is implied by existing constraints' in said
    assert 'verifying table "yellow_tripdata_p2020_07"' not in said


_PARTITION_INDEXES = """
    SELECT c.relname::text, p.relname::text FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    LEFT JOIN pg_inherits h ON h.inhrelid = i.indexrelid LEFT JOIN pg_class p ON p.oid = h.inhparent
    WHERE i.indrelid = to_regclass('yellow_tripdata_p2020_07') ORDER BY 1"""
# A new partition's two indexes, each the partition's share of the main table's (none built twice by ATTACH).
_BUILT_ONCE = [
    ("yellow_tripdata_p2020_07_filename_idx", "yellow_tripdata_filename_idx"),
    ("yellow_tripdata_p2020_07_unique_row_id_key", "yellow_tripdata_unique_row_id_key"),
]


def test_a_first_load_indexes_its_partition_on_two_connections_or_on_one(cli, db, mirror):
    """The two indexes of a new partition are built at once, on two connections (their SQL, connection by
    connection: tests/golden/postgres_first_load.sql); a role allowed one connection gets the same partition
    from one, and the same rows."""
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    assert cli("load", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    assert db.all(_PARTITION_INDEXES) == _BUILT_ONCE
    ids = db.all("SELECT unique_row_id FROM yellow_tripdata ORDER BY 1")

    role = f"tl_one_{uuid.uuid4().hex[:8]}"
    db.run(
        f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1; CREATE SCHEMA "{role}_s";'
        f' GRANT USAGE, CREATE ON SCHEMA "{role}_s" TO "{role}"'
    )
    try:
        url = db.url.replace("postgres@", f"{role}@")
        one = cli("load", "--taxi", "yellow", "--month", "2020-07", "--db-url", url, "--schema", f"{role}_s", pg=False)
        assert one.exit_code == 0, one.output
        assert outputs(one)["rows_inserted"] == 266
        db.run(f'SET search_path TO "{role}_s"')
        assert db.all(f'SELECT unique_row_id FROM "{role}_s".yellow_tripdata ORDER BY 1') == ids
        indexes = _PARTITION_INDEXES.replace("to_regclass('", f'to_regclass(\'"{role}_s".')
        assert db.all(indexes) == _BUILT_ONCE
    finally:
        db.run(f'DROP SCHEMA "{role}_s" CASCADE; DROP ROLE "{role}"')


def test_when_one_of_two_builds_fails_the_other_is_cancelled_and_the_failure_told(db):
    """The two index builds run at once: the side that fails must not leave the other running to its end, and
    its own error (not the other's cancellation) is what the merge reports; both connections stay usable."""
    import time

    from taxi_loader.sinks.postgres.connect import connect
    from taxi_loader.sinks.postgres.merge import _at_once

    here, there = connect(db.url), connect(db.url)
    try:
        started = time.monotonic()
        with pytest.raises(psycopg2.errors.DivisionByZero):
            _at_once(here, [sql.SQL("SELECT pg_sleep(60)")], there, [sql.SQL("SELECT 1 / 0")], then=lambda c: c)
        here.rollback(), there.rollback()
        with pytest.raises(psycopg2.errors.DivisionByZero):
            _at_once(here, [sql.SQL("SELECT 1 / 0")], there, [sql.SQL("SELECT pg_sleep(60)")], then=lambda c: c)
        here.rollback(), there.rollback()
        with pytest.raises(psycopg2.errors.DivisionByZero):  # what follows the second side's builds fails
            _at_once(here, [sql.SQL("SELECT pg_sleep(60)")], there, [], then=lambda c: c.cursor().execute("SELECT 1/0"))
        here.rollback(), there.rollback()
        assert _at_once(here, [sql.SQL("SELECT 1")], there, [], then=lambda c: c) is there
        assert time.monotonic() - started < 30  # neither sleep ran out
        for conn in (here, there):
            conn.rollback()
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
    finally:
        here.close()
        there.close()


def test_indexes_an_interrupted_merge_left_on_the_staging_table_are_the_partitions(cli, db, mirror):
    """The indexes are built before the merge's transaction, and committed: a merge that fails after them
    leaves them on the staging table, and the next merge uses them as they are."""
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    assert cli("stage", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    db.run(
        "CREATE UNIQUE INDEX yellow_tripdata_p2020_07_unique_row_id_key ON yellow_tripdata_staging_2020_07"
        ' (unique_row_id COLLATE "C", tpep_pickup_datetime);'
        " CREATE INDEX yellow_tripdata_p2020_07_filename_idx ON yellow_tripdata_staging_2020_07 (filename)"
    )
    merged = cli("dedup-merge", "--taxi", "yellow", "--month", "2020-07")
    assert merged.exit_code == 0, merged.output
    assert outputs(merged)["rows_inserted"] == 266 and db.count("yellow_tripdata") == 266
    assert db.all(_PARTITION_INDEXES) == _BUILT_ONCE


def test_two_staged_rows_with_one_id_are_exit_2_and_load_nothing(cli, db, mirror):
    """Only a staging table changed by hand can hold one id twice: the unique index refuses it."""
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    assert cli("stage", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    db.run(
        "UPDATE yellow_tripdata_staging_2020_07 s SET unique_row_id = f.unique_row_id,"
        " tpep_pickup_datetime = f.tpep_pickup_datetime FROM (SELECT * FROM yellow_tripdata_staging_2020_07"
        " WHERE ctid = '(0,1)') f WHERE s.ctid = '(0,2)'"
    )
    failed = cli("dedup-merge", "--taxi", "yellow", "--month", "2020-07")
    assert failed.exit_code == 2, failed.output
    assert "staging table is not as stage left it" in failed.stderr and "could not create unique index" in failed.stderr
    assert db.count("yellow_tripdata") == 0 and "yellow_tripdata_p2020_07" not in db.tables()


def test_a_partition_keeps_its_file_name_in_the_catalog_for_the_rows_copied(cli, db, mirror):
    # The staging table gets its filename column after the COPY, the file's name as its default: PostgreSQL
    # keeps that value once, in the catalog, for the rows already there (a smaller partition, shorter scans).
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    assert cli("load", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    assert db.one(
        "SELECT atthasmissing, attmissingval::text FROM pg_attribute"
        " WHERE attrelid = 'yellow_tripdata_p2020_07'::regclass AND attname = 'filename'"
    ) == (True, "{yellow_tripdata_2020-07.csv}")
    assert db.one(
        "SELECT column_default FROM information_schema.columns WHERE table_schema = %s AND table_name = "
        "'yellow_tripdata_p2020_07' AND column_name = 'filename'",
        (db.schema,),
    ) == (None,)
    assert db.all("SELECT filename, count(*) FROM yellow_tripdata GROUP BY 1") == [("yellow_tripdata_2020-07.csv", 266)]


def test_a_control_character_in_a_text_field_loads_as_the_validating_pass_would(cli, db, mirror):
    # The fast path used to split lines with Arrow on \x1f, and sent such a file to the Python pass; it now
    # splits lines on their newlines alone, so a unit separator is a text field's byte like any other.
    row = _yellow(1, "2021-01-05 10:00:00", "2021-01-05 10:20:00", 7, 8).replace(",N,", ",N\x1f,")
    mirror.put_csv("yellow", Month(2021, 1), YELLOW_HEADER + "\n" + row + "\n")
    staged = cli("stage", "--taxi", "yellow", "--month", "2021-01")
    assert staged.exit_code == 0, staged.output
    assert outputs(staged)["validated"] is False
    assert cli("dedup-merge", "--taxi", "yellow", "--month", "2021-01").exit_code == 0
    yellow = TAXI_TYPES["yellow"]
    key = key_text(yellow, dict(zip(YELLOW_HEADER.split(","), row.split(","), strict=True)))
    assert db.all("SELECT store_and_fwd_flag, unique_row_id FROM yellow_tripdata") == [("N\x1f", row_id(key))]


@pytest.mark.parametrize("names", [("--only", ","), ("--taxi", ",", "--from", "2021-01", "--to", "2021-02")])
def test_a_backfill_that_names_no_month_is_a_usage_error(cli, db, names):
    result = cli("backfill", *names)
    assert result.exit_code == 2, result.output
    assert "no month to load" in result.stderr
    assert "yellow_tripdata" not in db.tables()
