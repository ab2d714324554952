"""The TLC's Parquet source: every era's schema, the source choice, evolving tables, the zone lookup.

Fixtures are the TLC's files as `synthetic_tlc` writes them with each era's exact schema (names, Arrow
types, null-typed columns; tlc-parquet.md section 1): the real sample rows of the course's mirror
(`from_csv`) and generated months. The local HTTP mirror serves them in the TLC's layout, 404 for the rest.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from datetime import date, datetime

import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_loader.errors import BadData, SourceNotFound
from taxi_loader.months import Month
from taxi_loader.parquet_reader import TYPED, ParquetMonthFile
from taxi_loader.source import Source
from taxi_loader.synthetic_tlc import from_csv, generated_table
from taxi_loader.taxis import TAXI_TYPES

from conftest import DATA, twin_ids

SAMPLE_2021_01 = DATA / "yellow_tripdata_2021-01.head22792.csv"


def _sample(lines: int) -> str:
    with open(SAMPLE_2021_01) as f:
        return "".join(next(f) for _ in range(lines + 1))


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


# ---------------------------------------------------------------- every era's schema, read by name


ERAS = [
    ("yellow", 2011, 1),  # Y3a: int64 counts, congestion_surcharge and airport_fee mostly typed
    ("yellow", 2014, 8),  # improvement_surcharge null-typed
    ("yellow", 2015, 3),  # congestion_surcharge and airport_fee null-typed
    ("yellow", 2019, 1),  # Y3b: passenger_count and RatecodeID double, airport_fee null-typed
    ("yellow", 2021, 1),  # Y3b with airport_fee double
    ("yellow", 2023, 1),  # last lower-case airport_fee
    ("yellow", 2023, 2),  # Y4: int32 ids, int64 counts, large_string, Airport_fee
    ("yellow", 2025, 1),  # Y5: cbd_congestion_fee
    ("yellow", 2026, 6),  # request_source
    ("green", 2014, 1),
    ("green", 2019, 9),  # ehail_fee null-typed; payment_type and trip_type double
    ("green", 2023, 2),
    ("green", 2025, 11),
    ("fhv", 2015, 1),
    ("fhv", 2019, 1),  # SR_Flag double, locations double
    ("fhv", 2019, 3),  # SR_Flag null-typed
    ("fhv", 2019, 5),  # locations int64
    ("fhv", 2020, 7),  # DOlocationID int64, PUlocationID double
    ("fhv", 2023, 2),  # large_string, int64
    ("fhvhv", 2019, 2),  # airport_fee and wav_match_flag null-typed
    ("fhvhv", 2022, 6),
    ("fhvhv", 2024, 6),  # int32 ids, large_string
    ("fhvhv", 2025, 1),  # cbd_congestion_fee
]


@pytest.mark.parametrize(("taxi", "year", "month"), ERAS, ids=[f"{t}-{y}-{m:02d}" for t, y, m in ERAS])
def test_every_era_reads_by_name_into_the_one_type_of_each_column(tmp_path, taxi, year, month):
    table = generated_table(taxi, year, month, 300, seed=year * 100 + month)
    path = tmp_path / f"{taxi}_tripdata_{year}-{month:02d}.parquet"
    pq.write_table(table, path, row_group_size=128)  # several row groups, read a batch at a time
    spec = TAXI_TYPES[taxi]
    with ParquetMonthFile(path, spec) as pf:
        batches = list(pf.batches())
        assert len(pf.rejects) == 0 and pf.header.extra == []
        assert pf.stats.data_lines == 300 and pf.stats.size == path.stat().st_size
    got = pa.Table.from_batches(batches)
    assert got.num_rows == 300
    assert got.schema.names == [c.name for c in spec.columns]
    assert [f.type for f in got.schema] == [TYPED[c.kind] for c in spec.columns]
    # Every value the file holds arrives, under its spec name whatever the file's spelling or type.
    names = {n.lower(): n for n in table.schema.names}
    for c in spec.columns:
        source = names.get(c.name.lower())
        if source is None or pa.types.is_null(table.schema.field(source).type):
            assert got[c.name].null_count == 300
        else:
            assert got[c.name].null_count == table[source].null_count, c.name


def test_lossless_coercion_and_rejects_with_reasons(tmp_path):
    """A double 1.0 is the integer 1; 1.5 in an integer column is a reject with its reason; ns times keep µs."""
    spec = TAXI_TYPES["yellow"]
    table = from_csv(_sample(5), "yellow", 2021, 1)
    passengers = pa.array([1.0, 1.5, None, 2.0, 3.0], pa.float64())
    table = table.set_column(table.schema.get_field_index("passenger_count"), "passenger_count", passengers)
    pickup = table.schema.get_field_index("tpep_pickup_datetime")
    table = table.set_column(pickup, "tpep_pickup_datetime", table[pickup].cast(pa.timestamp("ns")))
    path = tmp_path / "y.parquet"
    pq.write_table(table, path)
    with ParquetMonthFile(path, spec) as pf:
        got = pa.Table.from_batches(list(pf.batches()))
    assert got["passenger_count"].to_pylist() == [1, None, 2, 3]
    assert got["tpep_pickup_datetime"].type == pa.timestamp("us")
    assert [(r.line, r.column) for r in pf.rejects] == [(2, "passenger_count")]
    assert "not an integer" in pf.rejects.first()[0].reason and "1.5" in pf.rejects.first()[0].reason


def test_source_choice():
    yellow, fhvhv = TAXI_TYPES["yellow"], TAXI_TYPES["fhvhv"]
    auto = Source()
    assert auto.which(yellow, Month(2021, 7)) == "mirror" and auto.which(yellow, Month(2021, 8)) == "tlc"
    assert auto.which(yellow, Month(2018, 12)) == "tlc" and auto.which(fhvhv, Month(2020, 1)) == "tlc"
    assert Source("tlc").template(yellow, Month(2020, 1)).endswith(".parquet")
    assert Source("mirror").template(yellow, Month(2020, 1)).endswith(".csv.gz")
    assert Source("tlc", url="/m/{taxi}.csv").template(yellow, Month(2020, 1)) == "/m/{taxi}.csv"
    with pytest.raises(SourceNotFound, match="mirror has yellow 2019-01..2021-07; use --source tlc"):
        Source("mirror").check_published(yellow, Month(2024, 6))
    with pytest.raises(SourceNotFound, match="no fhvhv files"):
        Source("mirror").check_published(fhvhv, Month(2020, 1))
    with pytest.raises(SourceNotFound, match="the TLC publishes green from 2014-01"):
        Source().check_published(TAXI_TYPES["green"], Month(2013, 12))
    with pytest.raises(BadData, match="2009-2010"):
        Source().check_published(yellow, Month(2010, 6))


# ---------------------------------------------------------------- loads on every sink


TLC_MONTHS = [("green", 2025, 11, 400), ("fhvhv", 2024, 6, 600), ("yellow", 2015, 3, 500)]


def test_tlc_months_load_whole_and_rerun_inserts_nothing(sink, mirror):
    """The issue's months: every source row, distinct ids, a re-run inserting 0; `auto` takes them from the TLC."""
    mirror.both_sources()
    for taxi, year, month, rows in TLC_MONTHS:
        table = generated_table(taxi, year, month, rows, seed=month)
        mirror.put_parquet(taxi, Month(year, month), table)
        first = sink.run("load", "--taxi", taxi, "--month", f"{year}-{month:02d}")
        assert first.exit_code == 0, first.output
        ids = sink.ids(taxi)
        assert len(ids) == len(set(ids)) == rows
        again = sink.run("load", "--taxi", taxi, "--month", f"{year}-{month:02d}")
        assert again.exit_code == 0, again.output
        assert '"rows_inserted": 0' in again.stdout and sorted(sink.ids(taxi)) == sorted(ids)
    assert not any(path.endswith(".csv.gz") for path, _ in mirror.requests)


def test_the_same_rows_get_the_same_ids_from_csv_and_from_every_eras_parquet(sink, mirror):
    """The course's ids: a row read from the mirror's CSV and from the TLC's Parquet (with 2021's types, and with
    2023-02's int32 / int64 / large_string ones) is one row."""
    text = _sample(400)
    mirror.both_sources()
    mirror.put_csv("yellow", Month(2021, 1), text)
    first = sink.run("load", "--taxi", "yellow", "--month", "2021-01")  # auto: the course's mirror
    assert first.exit_code == 0, first.output
    assert sorted(sink.ids("yellow")) == sorted(twin_ids(text, "yellow"))
    for year, month in ((2021, 1), (2023, 2)):
        mirror.put_parquet("yellow", Month(2021, 1), from_csv(text, "yellow", year, month))
        again = sink.run("load", "--taxi", "yellow", "--month", "2021-01", "--source", "tlc")
        assert again.exit_code == 0, again.output
        assert '"rows_inserted": 0' in again.stdout and '"rows_present": 400' in again.stdout
    assert sorted(sink.ids("yellow")) == sorted(twin_ids(text, "yellow"))


def test_a_table_created_from_csv_gains_the_columns_of_a_2025_month(sink, mirror, request):
    """A table an earlier taxi-loader created (the course's columns only) takes a 2025 month: the new columns are
    added at its end, NULL for the rows it held."""
    later = ("airport_fee", "cbd_congestion_fee", "request_source")
    mirror.both_sources()
    mirror.put_sample("yellow", Month(2020, 12), "yellow_tripdata_2020-12.head1295.csv")
    if sink.name == "bigquery":  # the emulator cannot drop a column: the old table is made before the first load
        from google.cloud import bigquery

        from taxi_loader.contract import main_columns
        from taxi_loader.sinks.bigquery.bq import schema

        cloud = request.getfixturevalue("cloud")
        cloud.client.create_dataset(cloud.dataset, exists_ok=True)
        old = bigquery.Table(
            f"{cloud.client.project}.{cloud.dataset}.yellow_tripdata",
            schema=schema([c for c in main_columns(TAXI_TYPES["yellow"]) if c.name not in later]),
        )
        old.time_partitioning = bigquery.TimePartitioning(field="tpep_pickup_datetime")
        cloud.client.create_table(old)
    assert sink.run("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    if sink.name == "postgres":  # the table as taxi-loader 0.x created it: the course's columns only
        db = request.getfixturevalue("db")
        db.run(f"ALTER TABLE yellow_tripdata {', '.join(f'DROP COLUMN {c}' for c in later)}")
    elif sink.name == "duckdb":
        import duckdb

        duck = request.getfixturevalue("duck")
        with duckdb.connect(str(duck.path)) as conn:
            for c in later:
                conn.execute(f"ALTER TABLE yellow_tripdata DROP COLUMN {c}")
    table = generated_table("yellow", 2025, 1, 300, seed=7)
    mirror.put_parquet("yellow", Month(2025, 1), table)
    result = sink.run("load", "--taxi", "yellow", "--month", "2025-01")
    assert result.exit_code == 0, result.output
    query = (
        "SELECT count(*), count(cbd_congestion_fee), count(airport_fee), "
        "count(*) FILTER (WHERE filename LIKE '%2020-12%' AND cbd_congestion_fee IS NOT NULL) FROM yellow_tripdata"
    )
    if sink.name == "bigquery":
        query = query.replace("count(*) FILTER (WHERE", "COUNTIF(")  # BigQuery's spelling
        got = tuple(
            next(
                iter(
                    cloud.client.query(query.replace("yellow_tripdata", f"`{cloud.dataset}.yellow_tripdata`")).result()
                )
            ).values()
        )
        names = [f.name for f in cloud.client.get_table(f"{cloud.dataset}.yellow_tripdata").schema]
        assert names[-3:] == list(later)
    else:
        got = db.all(query)[0] if sink.name == "postgres" else duck.query(query)[0]
    cbd, airport = (300 - table[c].null_count for c in ("cbd_congestion_fee", "Airport_fee"))
    assert got == (1295 + 300, cbd, airport, 0) and cbd > 0


# ---------------------------------------------------------------- bad input: a clear error, tables untouched


def _tables_untouched(cli) -> None:
    assert not cli.db.exists("yellow_tripdata") or cli.db.count("yellow_tripdata") == 0
    assert not [t for t in cli.db.tables() if "staging" in t]


def test_a_parquet_file_cut_short_is_bad_data(cli, mirror):
    mirror.both_sources()
    whole = _parquet(from_csv(_sample(200), "yellow", 2022, 3))
    mirror.put_parquet("yellow", Month(2022, 3), whole[: len(whole) // 2])
    result = cli("load", "--taxi", "yellow", "--month", "2022-03")
    assert result.exit_code == 5 and "cut short (no footer)" in result.stderr
    _tables_untouched(cli)


def test_an_html_page_served_as_parquet_is_bad_data(cli, mirror):
    mirror.both_sources()
    mirror.put_parquet("yellow", Month(2022, 3), b"<!DOCTYPE html><html><body>Access denied</body></html>")
    result = cli("load", "--taxi", "yellow", "--month", "2022-03")
    assert result.exit_code == 5 and "not a Parquet file (it holds an HTML page)" in result.stderr
    _tables_untouched(cli)


def test_a_green_file_under_a_yellow_name_is_bad_data(cli, mirror):
    mirror.both_sources()
    mirror.put_parquet("yellow", Month(2022, 3), generated_table("green", 2022, 3, 50))
    result = cli("load", "--taxi", "yellow", "--month", "2022-03")
    assert result.exit_code == 5 and "looks like a green file" in result.stderr
    _tables_untouched(cli)


def test_values_that_do_not_fit_go_to_rejects_or_fail_the_month(cli, mirror):
    mirror.both_sources()
    table = from_csv(_sample(100), "yellow", 2022, 3)
    bad = pa.array([1.5 if i % 25 == 0 else 1.0 for i in range(100)], pa.float64())
    table = table.set_column(table.schema.get_field_index("passenger_count"), "passenger_count", bad)
    mirror.put_parquet("yellow", Month(2022, 3), table)
    result = cli("load", "--taxi", "yellow", "--month", "2022-03")  # 4 of 100: more than 0.1%
    assert result.exit_code == 5 and "4 of 100 rows rejected" in result.stderr and "passenger_count" in result.stderr
    _tables_untouched(cli)
    result = cli("load", "--taxi", "yellow", "--month", "2022-03", "--max-rejects", "5")
    assert result.exit_code == 0, result.output
    assert cli.db.count("yellow_tripdata") == 96
    rejects = cli.db.all("SELECT line, column_name, reason FROM yellow_tripdata_rejects ORDER BY line")
    assert [r[:2] for r in rejects] == [
        (1, "passenger_count"),
        (26, "passenger_count"),
        (51, "passenger_count"),
        (76, "passenger_count"),
    ]
    assert all("not an integer: 1.5" in r[2] for r in rejects)


def test_a_column_of_a_type_that_cannot_be_coerced_names_file_and_column(cli, mirror):
    mirror.both_sources()
    table = from_csv(_sample(20), "yellow", 2022, 3)
    odd = pa.array([{"a": 1}] * 20)
    table = table.set_column(table.schema.get_field_index("trip_distance"), "trip_distance", odd)
    mirror.put_parquet("yellow", Month(2022, 3), table)
    result = cli("load", "--taxi", "yellow", "--month", "2022-03")
    assert result.exit_code == 5
    assert "yellow_tripdata_2022-03.parquet" in result.stderr and "trip_distance" in result.stderr
    _tables_untouched(cli)


def test_a_month_the_tlc_has_not_published_yet(cli, mirror):
    mirror.both_sources()
    last = Month(date.today().year, date.today().month).previous()
    result = cli("load", "--taxi", "green", "--month", str(last))
    assert result.exit_code == 4 and "not published yet" in result.stderr and "two months" in result.stderr
    _tables_untouched(cli)


def test_legacy_yellow_and_unknown_taxi(cli, mirror):
    mirror.both_sources()
    result = cli("load", "--taxi", "yellow", "--month", "2009-06")
    assert result.exit_code == 5 and "2009-2010" in result.stderr and "from 2011-01" in result.stderr
    mirror.put_parquet("yellow", Month(2012, 6), generated_table("yellow", 2010, 6, 20))  # the layout itself
    result = cli("load", "--taxi", "yellow", "--month", "2012-06")
    assert result.exit_code == 5 and "2009-2010" in result.stderr
    assert cli("load", "--taxi", "limo", "--month", "2022-01").exit_code == 2
    _tables_untouched(cli)


# ---------------------------------------------------------------- the zone lookup


def test_zones_replace_the_lookup_on_every_sink(sink, mirror, tmp_path):
    zones = ["zones", "--zones-url", str(DATA / "taxi_zone_lookup.csv")]
    for _ in range(2):  # replaced, never appended
        result = sink.run(*zones)
        assert result.exit_code == 0, result.output
        assert '"rows_zones": 265' in result.stdout
    status = sink.run("status", "--format", "json")
    assert '"zones": 265' in status.stdout
    bad = tmp_path / "zones.csv"
    bad.write_text('"LocationID","Borough","Zone","service_zone"\n1,"EWR","Newark Airport","EWR"\nx,"a","b","c"\n')
    result = sink.run("zones", "--zones-url", str(bad))
    assert result.exit_code == 5 and "line 3: LocationID 'x' is not an integer" in result.stderr
    bad.write_text('"LocationID","Borough","Zone","service_zone"\n1,"EWR","Newark Airport","EWR"\n3000000000,a,b,c\n')
    result = sink.run("zones", "--zones-url", str(bad))
    assert result.exit_code == 5 and "line 3: LocationID 3000000000 is out of range" in result.stderr
    assert '"zones": 265' in sink.run("status", "--format", "json").stdout
    # A NUL no text column holds is dropped, as from a trip file's text (it ended in exit 1 on PostgreSQL).
    bad.write_text('"LocationID","Borough","Zone","service_zone"\n1,"EWR","Newark\x00 Airport","EWR"\n')
    result = sink.run("zones", "--zones-url", str(bad))
    assert result.exit_code == 0, result.output
    assert '"zones": 1' in sink.run("status", "--format", "json").stdout


def test_flags_keep_what_the_file_holds_and_fhvhv_types_land_as_the_contract_says(cli, mirror):
    """' ' is a flag value of the real files, not a missing one; trip_time is an integer of seconds."""
    mirror.both_sources()
    table = generated_table("fhvhv", 2024, 6, 2000, seed=3)
    mirror.put_parquet("fhvhv", Month(2024, 6), table)
    result = cli("load", "--taxi", "fhvhv", "--month", "2024-06")
    assert result.exit_code == 0, result.output
    spaces = sum(1 for v in table["access_a_ride_flag"].to_pylist() if v == " ")
    assert spaces > 0
    assert cli.db.one("SELECT count(*) FROM fhvhv_tripdata WHERE access_a_ride_flag = ' '")[0] == spaces
    nulls = table["on_scene_datetime"].null_count
    assert cli.db.one("SELECT count(*) FROM fhvhv_tripdata WHERE on_scene_datetime IS NULL")[0] == nulls
    assert cli.db.one(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'fhvhv_tripdata' "
        "AND table_schema = %s AND column_name = 'trip_time'",
        (cli.db.schema,),
    ) == ("integer",)
    status = cli("status", "--format", "json")
    assert [(m["taxi"], m["format"]) for m in json.loads(status.stdout)["months"]] == [("fhvhv", "parquet")]


def test_a_backfill_across_the_sources_and_before_the_first_tlc_month(cli, mirror):
    """auto over 2021-06..2021-08: the mirror's last month, then the TLC's; fhvhv 2019-01 lies before the
    TLC's first High-Volume month: "not published" with no request and no failure."""
    mirror.both_sources()
    mirror.put_sample("yellow", Month(2021, 7), "yellow_tripdata_2020-12.head1295.csv")
    mirror.put_parquet("yellow", Month(2021, 8), generated_table("yellow", 2021, 8, 300))
    mirror.put_parquet("fhvhv", Month(2019, 2), generated_table("fhvhv", 2019, 2, 200))
    result = cli("backfill", "--taxi", "yellow", "--from", "2021-07", "--to", "2021-08")
    assert result.exit_code == 0, result.output
    assert cli.db.count("yellow_tripdata") == 1295 + 300
    result = cli("backfill", "--taxi", "fhvhv", "--from", "2019-01", "--to", "2019-02")
    assert result.exit_code == 0, result.output
    months = {m["month"]: m for m in map(json.loads, result.stdout.splitlines()) if m.get("step") == "backfill-month"}
    assert months["2019-01"]["status"] == "not published" and "from 2019-02" in months["2019-01"]["error"]
    assert months["2019-02"]["status"] == "loaded" and cli.db.count("fhvhv_tripdata") == 200
    assert not [p for p, _ in mirror.requests if "2019-01" in p]
    status = json.loads(cli("status", "--format", "json", "--taxi", "yellow").stdout)
    assert [(m["month"], m["format"]) for m in status["months"]] == [("2021-07", "csv"), ("2021-08", "parquet")]


def test_a_stage_of_a_month_not_published_leaves_the_ledger_alone(cli, mirror):
    """What a scheduled Kestra run does on the 1st: stage finds nothing yet (exit 4); status must not show the
    month as failed."""
    mirror.both_sources()
    last = Month(date.today().year, date.today().month).previous()
    result = cli("stage", "--taxi", "green", "--month", str(last))
    assert result.exit_code == 4 and "not published yet" in result.stderr
    assert not cli.db.exists("taxi_loader_ledger") or cli.db.count("taxi_loader_ledger") == 0


def _column(values: pa.Array, name: str, taxi: str = "yellow"):
    from taxi_loader.parquet_reader import coerce

    return coerce(values, TAXI_TYPES[taxi].column(name))


def test_numbers_and_times_written_as_text_follow_the_csv_rules():
    values, wrong, reasons = _column(
        pa.array(["1", "1.0", "", None, "1.5", " 2 "], pa.large_string()), "passenger_count"
    )
    assert values.to_pylist() == [1, 1, None, None, None, 2]
    assert wrong.to_pylist() == [False, False, False, False, True, False] and "not an integer" in reasons[4]
    times = pa.array(["2021-01-01 00:15:56", "2021-01-01T00:15:56", "2021-13-01 00:00:00"])
    values, wrong, reasons = _column(times, "tpep_pickup_datetime")
    assert values.to_pylist()[:2] == [datetime(2021, 1, 1, 0, 15, 56)] * 2 and wrong.to_pylist()[2]


def test_values_beyond_their_column_are_rejected_not_crashed_on():
    big = pa.array([2.0**63, -(2.0**63), 1.0, float("nan")], pa.float64())
    values, wrong, _ = _column(big, "VendorID")
    assert wrong.to_pylist() == [True, False, False, True] and values.to_pylist()[1:3] == [-(2**63), 1]
    huge = pa.array([2**64 - 1, 5], pa.uint64())
    assert _column(huge, "VendorID")[1].to_pylist() == [True, False]
    assert _column(pa.array([2**31, 7], pa.int64()), "passenger_count")[1].to_pylist() == [True, False]
    seconds = pa.array([253402300800, 0], pa.timestamp("s"))  # 10000-01-01, 1970-01-01
    assert _column(seconds, "tpep_pickup_datetime")[1].to_pylist() == [True, False]
    nanos = pa.array([1_000, 1_001], pa.timestamp("ns"))
    assert _column(nanos, "tpep_pickup_datetime")[1].to_pylist() == [False, True]
    assert _column(pa.array([2**60], pa.int64()), "trip_distance")[0].to_pylist() == [float(2**60)]


def test_text_that_is_not_utf8_is_read_as_latin1():
    values, wrong, _ = _column(pa.array([b"N", b"caf\xe9", None], pa.binary()), "store_and_fwd_flag")
    assert values.to_pylist() == ["N", "café", None] and wrong is None


def test_reading_stops_once_the_rejects_pass_max_rejects(tmp_path):
    table = from_csv(_sample(20_000), "yellow", 2021, 1)
    bad = pa.array([1.5] * table.num_rows, pa.float64())
    table = table.set_column(table.schema.get_field_index("passenger_count"), "passenger_count", bad)
    path = tmp_path / "y.parquet"
    pq.write_table(table, path)
    with ParquetMonthFile(path, TAXI_TYPES["yellow"], max_rejects="10") as pf:
        with pytest.raises(BadData, match=r"more than 10 rows rejected \(--max-rejects 10\), the last at line 11"):
            list(pf.batches())
        assert len(pf.rejects) == 11  # it stopped at the eleventh


def test_zones_from_each_source_are_fetched_afresh_and_two_replacements_take_turns(cli, mirror, tmp_path):
    """The TLC's and the mirror's lookups share a file name: each run downloads its own, kept nowhere; two
    replacements at once on PostgreSQL take turns."""
    for where, zone in (("tlc", "Newark Airport"), ("mirror", "Newark (mirror)")):
        text = (DATA / "taxi_zone_lookup.csv").read_text().replace("Newark Airport", zone)
        path = mirror.root / where / "taxi_zone_lookup.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for where, zone in (("tlc", "Newark Airport"), ("mirror", "Newark (mirror)"), ("tlc", "Newark Airport")):
        result = cli("zones", "--zones-url", f"{mirror.url}/{where}/taxi_zone_lookup.csv")
        assert result.exit_code == 0, result.output
        assert cli.db.one("SELECT zone FROM taxi_zone_lookup WHERE locationid = 1")[0] == zone
    # A replacement waits for one under way (two flows' first tasks at once): while another session holds the
    # zones lock, a zones process does not finish; once it is let go, it does.
    from taxi_loader.sinks.postgres.ddl import xact_lock

    command = [sys.executable, "-m", "taxi_loader", "zones", "--sink", "postgres", "--db-url", cli.db.url]
    command += ["--schema", cli.db.schema, "--zones-url", str(DATA / "taxi_zone_lookup.csv")]
    holder = psycopg2.connect(cli.db.url)
    try:
        with holder.cursor() as cur:
            xact_lock(cur, "zones", cli.db.schema)
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        waiting, end = 0, time.monotonic() + 60
        with psycopg2.connect(cli.db.url) as watch, watch.cursor() as cur:
            while not waiting and time.monotonic() < end and run.poll() is None:
                watch.rollback()  # a fresh look each time
                cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                waiting = cur.fetchone()[0]
                time.sleep(0.05)
        assert waiting and run.poll() is None  # it waits for its turn on the lock
    finally:
        holder.rollback()
        holder.close()
    assert run.wait(timeout=120) == 0, run.stderr.read()
    assert cli.db.count("taxi_zone_lookup") == 265


def test_a_backfill_its_source_cannot_serve_at_all_is_refused_before_any_work(cli, mirror):
    mirror.both_sources()
    result = cli("backfill", "--taxi", "fhvhv", "--from", "2020-01", "--to", "2020-03", "--source", "mirror")
    assert result.exit_code == 2 and "nothing of this range can be loaded" in result.stderr
    assert "no fhvhv files" in result.stderr
    result = cli("backfill", "--taxi", "yellow", "--from", "2010-11", "--to", "2011-02")
    assert result.exit_code == 2 and "2009-2010" in result.stderr and "start the range later" in result.stderr
    assert mirror.requests == [] and not cli.db.exists("taxi_loader_ledger")
