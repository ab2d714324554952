"""Unit tests: month selection, value validation, header matching, identity text forms (the last against PostgreSQL)."""

from __future__ import annotations

import random

import psycopg2
import pytest

from taxi_loader.errors import BadData, UsageError
from taxi_loader.identity import key_text, pg_float_text, pg_timestamp_text, row_id
from taxi_loader.months import Month, month_range, parse_trigger_date, select_month
from taxi_loader.reader import match_header, parse_value
from taxi_loader.taxis import FHV, GREEN, YELLOW, Kind, get_taxi


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"month": "2021-01"}, Month(2021, 1)),
        ({"month": "1", "year": "2021"}, Month(2021, 1)),
        ({"month": "01", "year": 2021}, Month(2021, 1)),
        ({"trigger_date": "2021-02-01T09:00:00Z"}, Month(2021, 1)),
        ({"trigger_date": "2021-01-01"}, Month(2020, 12)),
        ({"trigger_date": "2021-03-01T10:00:00+00:00"}, Month(2021, 2)),
    ],
)
def test_month_selection(kw, expected):
    assert select_month(**kw) == expected


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"month": "2021-13"}, "the month must be 01..12"),
        ({"month": "2021-00"}, "the month must be 01..12"),
        ({"month": "13", "year": "2021"}, "the month must be 01..12"),
        ({"month": "2021/01"}, "use YYYY-MM"),
        ({"month": "01", "year": "21x"}, "invalid year"),
        ({"month": "1899-01"}, "invalid year 1899"),
        ({}, "no month selected"),
        ({"trigger_date": "yesterday"}, "invalid trigger date"),
        ({"trigger_date": "2021-02-01", "month": "2021-01"}, "not both"),
    ],
)
def test_month_selection_errors(kw, message):
    with pytest.raises(UsageError, match=message):
        select_month(**kw)


def test_month_arithmetic_and_range():
    assert Month(2020, 12).next() == Month(2021, 1)
    assert Month(2021, 1).previous() == Month(2020, 12)
    assert parse_trigger_date("2019-01-01T00:00:00") == Month(2018, 12)
    months = month_range(Month(2019, 11), Month(2020, 2))
    assert [str(m) for m in months] == ["2019-11", "2019-12", "2020-01", "2020-02"]
    with pytest.raises(UsageError, match="empty range"):
        month_range(Month(2020, 2), Month(2019, 1))


def test_unknown_taxi_names_the_allowed_values():
    with pytest.raises(UsageError, match="choose one of: yellow, green, fhv"):
        get_taxi("purple")


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("1", Kind.INT, "1"),
        ("1.0", Kind.INT, "1"),
        ("", Kind.INT, None),
        (" 2 ", Kind.CODE, "2"),
        ("1.0", Kind.CODE, "1"),
        ("-3", Kind.INT, "-3"),
        (".20", Kind.FLOAT, ".20"),
        ("-5.5", Kind.FLOAT, "-5.5"),
        ("1e3", Kind.FLOAT, "1e3"),
        ("2019-01-01 00:46:40", Kind.TIMESTAMP, "2019-01-01 00:46:40"),
        ("2019-01-01T00:46:40", Kind.TIMESTAMP, "2019-01-01 00:46:40"),
        ("N", Kind.TEXT, "N"),
        ("\xa0", Kind.TEXT, "\xa0"),
    ],
)
def test_parse_value_accepts(value, kind, expected):
    assert parse_value(value, kind) == expected


@pytest.mark.parametrize(
    ("value", "kind", "reason"),
    [
        ("1.5", Kind.INT, "not an integer"),
        ("abc", Kind.CODE, "not an integer"),
        ("99999999999", Kind.INT, "out of range"),
        ("--5.1", Kind.FLOAT, "not a number"),
        ("1_000", Kind.FLOAT, "not a number"),
        ("nan", Kind.FLOAT, "not a number"),
        ("2019-13-01 00:00:00", Kind.TIMESTAMP, "invalid timestamp"),
        ("01/01/2019", Kind.TIMESTAMP, "not a timestamp"),
    ],
)
def test_parse_value_rejects_with_reason(value, kind, reason):
    with pytest.raises(ValueError, match=reason):
        parse_value(value, kind)


def test_header_order_case_and_extra_columns():
    names = [c.name for c in YELLOW.columns]
    shuffled = list(reversed(names)) + ["airport_fee"]
    header = match_header(",".join(n.upper() for n in shuffled), YELLOW, "f.csv")
    assert header.extra == ["AIRPORT_FEE"]
    assert [c.name for c in header.columns if c] == list(reversed(names))


def test_fhv_header_of_2019_matches_case_insensitively():
    line = (
        "dispatching_base_num,pickup_datetime,dropOff_datetime,PUlocationID,DOlocationID,SR_Flag,Affiliated_base_number"
    )
    assert match_header(line, FHV, "fhv.csv").extra == []


def test_header_missing_columns_are_named():
    names = [c.name for c in YELLOW.columns if c.name not in ("fare_amount", "extra")]
    with pytest.raises(BadData, match="lacks yellow column\\(s\\) fare_amount, extra"):
        match_header(",".join(names), YELLOW, "f.csv")


def test_header_of_another_taxi_type_says_so():
    with pytest.raises(BadData, match="looks like a green file"):
        match_header(",".join(c.name for c in GREEN.columns), YELLOW, "f.csv")


def test_worked_example_from_the_course():
    row = {
        "VendorID": "1",
        "tpep_pickup_datetime": "2019-01-01 00:46:40",
        "tpep_dropoff_datetime": "2019-01-01 00:53:20",
        "PULocationID": "151",
        "DOLocationID": "239",
        "fare_amount": "7",
        "trip_distance": "1.50",
    }
    text = key_text(YELLOW, row)
    assert text == "12019-01-01 00:46:402019-01-01 00:53:2015123971.5"
    assert row_id(text) == "cfefc5173cf20c3ddd4989e79dc5aba9"
    assert row_id(text, 2) != row_id(text)


def _floats() -> list[float]:
    rng = random.Random(7)
    special = [
        0.0,
        -0.0,
        7.0,
        1.5,
        0.2,
        1e20,
        1e-05,
        1e15,
        1e14,
        999999999999999.0,
        1e16,
        0.0001,
        0.00009999,
        123456789.123,
        -3.25,
        5e-324,
        1.7976931348623157e308,
        0.1 + 0.2,
        2.675,
        1 / 3,
    ]
    randoms = [rng.uniform(-1000, 1000) for _ in range(300)] + [round(rng.uniform(-500, 500), 2) for _ in range(300)]
    randoms += [rng.uniform(0, 1) * 10 ** rng.randint(-30, 30) for _ in range(300)]
    return special + randoms


def test_float_text_matches_postgresql(test_database):
    values = _floats()
    with psycopg2.connect(test_database) as conn, conn.cursor() as cur:
        cur.execute("SET extra_float_digits = 1")
        cur.execute(
            "SELECT v::float8::text FROM unnest(%s::text[]) WITH ORDINALITY AS u(v, i) ORDER BY i",
            ([repr(v) for v in values],),
        )
        pg_texts = [r[0] for r in cur.fetchall()]
    assert [pg_float_text(v) for v in values] == pg_texts


def test_timestamp_text_matches_postgresql(test_database):
    from datetime import datetime

    stamps = [
        datetime(2019, 1, 1, 0, 46, 40),
        datetime(2090, 12, 31, 23, 59, 59),
        datetime(2001, 1, 1, 0, 0, 0, 500000),
        datetime(999, 5, 6, 7, 8, 9),
        datetime(2020, 2, 29, 12, 0, 0, 123),
    ]
    with psycopg2.connect(test_database) as conn, conn.cursor() as cur:
        cur.execute("SET DateStyle = 'ISO, MDY'")
        cur.execute("SELECT v::text FROM unnest(%s::timestamp[]) WITH ORDINALITY AS u(v, i) ORDER BY i", (stamps,))
        assert [pg_timestamp_text(s) for s in stamps] == [r[0] for r in cur.fetchall()]
