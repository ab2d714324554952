"""The TLC Parquet facts the loader relies on (shared/reference/tlc-parquet.md §1), as taxi_loader.synthetic_tlc
encodes them, and its fixtures: real CSV rows in a month's schema, generated Parquet months."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from taxi_loader.synthetic_tlc import from_csv, schema_for, write_generated

DATA = Path(__file__).parent / "data"
YELLOW_2021_01 = DATA / "yellow_tripdata_2021-01.head22792.csv"


def types(taxi: str, year: int, month: int) -> dict[str, pa.DataType]:
    return {field.name: field.type for field in schema_for(taxi, year, month)}


def test_yellow_2023_02_switch_of_names_and_types():
    before, after = types("yellow", 2023, 1), types("yellow", 2023, 2)
    assert before["airport_fee"] == pa.float64() and "Airport_fee" not in before
    assert before["VendorID"] == pa.int64() and before["passenger_count"] == pa.float64()
    assert before["RatecodeID"] == pa.float64() and before["store_and_fwd_flag"] == pa.string()
    assert after["Airport_fee"] == pa.float64() and "airport_fee" not in after
    assert after["VendorID"] == pa.int32() and after["PULocationID"] == pa.int32()
    assert after["passenger_count"] == pa.int64() and after["RatecodeID"] == pa.int64()
    assert after["store_and_fwd_flag"] == pa.large_string()
    assert before["tpep_pickup_datetime"] == after["tpep_pickup_datetime"] == pa.timestamp("us")
    assert all(field.nullable for field in schema_for("yellow", 2023, 2))


def test_null_typed_columns_and_appended_ones():
    assert types("yellow", 2015, 3)["airport_fee"] == pa.null()
    assert types("yellow", 2015, 3)["congestion_surcharge"] == pa.null()
    assert types("yellow", 2014, 8)["improvement_surcharge"] == pa.null()
    assert types("yellow", 2018, 1)["airport_fee"] == pa.float64()  # the odd typed month in the null run
    assert types("yellow", 2017, 1)["passenger_count"] == pa.int64()  # era Y3a
    assert types("green", 2019, 8)["ehail_fee"] == pa.float64()
    assert types("green", 2019, 9)["ehail_fee"] == pa.null()
    assert types("fhv", 2019, 1)["SR_Flag"] == pa.float64()
    assert types("fhv", 2019, 3)["SR_Flag"] == pa.null()
    assert types("fhv", 2020, 7)["DOlocationID"] == pa.int64() and types("fhv", 2020, 7)["PUlocationID"] == pa.float64()
    assert types("fhvhv", 2020, 4)["airport_fee"] == pa.null()
    assert types("fhvhv", 2019, 3)["wav_match_flag"] == pa.null()
    assert types("fhvhv", 2019, 4)["wav_match_flag"] == pa.string()

    assert schema_for("yellow", 2024, 12).names[-1] == "Airport_fee"
    assert schema_for("yellow", 2025, 1).names[-1] == "cbd_congestion_fee"
    assert schema_for("green", 2025, 1).names[-1] == "cbd_congestion_fee"
    assert "cbd_congestion_fee" not in schema_for("fhv", 2025, 1).names
    assert schema_for("yellow", 2026, 6).names[-2:] == ["cbd_congestion_fee", "request_source"]
    assert len(schema_for("fhvhv", 2024, 6)) == 24 and len(schema_for("fhvhv", 2025, 1)) == 25
    assert schema_for("fhv", 2019, 7).names == [
        "dispatching_base_num",
        "pickup_datetime",
        "dropOff_datetime",
        "PUlocationID",
        "DOlocationID",
        "SR_Flag",
        "Affiliated_base_number",
    ]


def test_legacy_yellow_layouts():
    y1 = types("yellow", 2009, 6)
    assert len(y1) == 18 and y1["Trip_Pickup_DateTime"] == pa.string() and y1["Rate_Code"] == pa.float64()
    assert types("yellow", 2010, 2)["rate_code"] == pa.int64()
    assert schema_for("yellow", 2010, 3).names[-1] == "__index_level_0__"
    assert types("yellow", 2010, 4)["rate_code"] == pa.string() and len(schema_for("yellow", 2010, 4)) == 18
    with pytest.raises(ValueError):
        schema_for("fhvhv", 2019, 1)  # before the first fhvhv file


def formatted(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def test_from_csv_round_trips_real_rows():
    with YELLOW_2021_01.open(newline="") as f:
        lines = f.readlines()[:51]
    table = from_csv("".join(lines), "yellow", 2021, 1)
    assert table.schema == schema_for("yellow", 2021, 1) and table.num_rows == 50
    assert table.column("airport_fee").null_count == 50  # the mirror has no airport_fee
    rows = list(csv.DictReader(lines))
    for name in rows[0]:
        column = table.column(name)
        for row, value in zip(rows, column.to_pylist(), strict=True):
            text = row[name]
            expected = repr(float(text)) if pa.types.is_floating(column.type) else text
            assert formatted(value) == expected, (name, text, value)


@pytest.mark.parametrize(
    ("name", "taxi", "year", "month", "rows"),
    [
        ("green_tripdata_2019-01.head99.csv", "green", 2019, 1, 99),
        ("yellow_tripdata_2020-01.head499_tail500.crlf.csv", "yellow", 2020, 1, 999),
        ("yellow_tripdata_2021-01.head22792.csv", "yellow", 2023, 2, 22792),  # read into a later era's types
    ],
)
def test_from_csv_reads_the_sample_files(name, taxi, year, month, rows):
    table = from_csv(DATA / name, taxi, year, month)
    assert table.schema == schema_for(taxi, year, month) and table.num_rows == rows


def test_from_csv_is_exact_or_refuses():
    header = (
        "dispatching_base_num,pickup_datetime,dropOff_datetime,PULocationID,DOLocationID,SR_Flag,Affiliated_base_number"
    )
    ok = from_csv(f"{header}\nB00013,2019-07-01 00:03:00,2019-07-01 00:16:00,264,7,, \n", "fhv", 2019, 7)
    assert ok.to_pylist()[0] == {
        "dispatching_base_num": "B00013",
        "pickup_datetime": datetime(2019, 7, 1, 0, 3),
        "dropOff_datetime": datetime(2019, 7, 1, 0, 16),
        "PUlocationID": 264.0,
        "DOlocationID": 7.0,
        "SR_Flag": None,
        "Affiliated_base_number": " ",
    }
    assert (
        from_csv(f"{header}\nB1,2023-02-01 00:00:00,,1.0,,1,\n", "fhv", 2023, 2).column("PUlocationID")[0].as_py() == 1
    )
    for bad in ("1.5", "0x10", "99999999999999999999"):
        with pytest.raises(ValueError):
            from_csv(f"{header}\nB1,2023-02-01 00:00:00,,{bad},,,\n", "fhv", 2023, 2)
    with pytest.raises(ValueError, match="SR_Flag"):  # a value in a column that is null-typed that month
        from_csv(f"{header}\nB1,2019-07-01 00:00:00,,,,1,\n", "fhv", 2019, 7)
    with pytest.raises(ValueError, match="pickup_datetime"):
        from_csv(f"{header}\nB1,2019-07-01T00:00:00,,,,,\n", "fhv", 2019, 7)
    with pytest.raises(ValueError, match="double"):  # more digits than a double keeps
        from_csv(f"{header}\nB1,2019-07-01 00:00:00,,9007199254740993,,,\n", "fhv", 2019, 7)


def test_write_generated_fhvhv(tmp_path):
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert write_generated(first, "fhvhv", 2024, 6, 10_000, seed=5, row_group_size=4_096, chunk=3_000) == 10_000
    assert write_generated(second, "fhvhv", 2024, 6, 10_000, seed=5, row_group_size=4_096, chunk=3_000) == 10_000
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet"]  # no .part left
    meta = pq.ParquetFile(first)
    assert meta.schema_arrow == schema_for("fhvhv", 2024, 6)
    assert meta.metadata.num_rows == 10_000 and meta.metadata.num_row_groups == 3
    table = pq.read_table(first)
    lyft = table.filter(pc.equal(table.column("hvfhs_license_num"), "HV0005"))
    assert lyft.num_rows > 0 and lyft.column("originating_base_num").null_count == lyft.num_rows
