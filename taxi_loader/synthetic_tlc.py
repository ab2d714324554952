"""Test data for the TLC's Parquet files: their exact Arrow schemas, real CSV rows in them, generated months.

The published Parquet files cannot be fetched here, so tests and the benchmark build them from what is known
about them: shared/reference/tlc-parquet.md (§1 schemas per taxi type and month, §5-6 code values and null
patterns). Three tools:

- `schema_for`: the Arrow schema a month's file has, column names in their exact spelling and file order,
  the types of its era and the all-null (`pa.null()`) columns of the months the reference lists;
- `from_csv`: rows of the course's CSV mirror converted to that schema, exactly or not at all;
- `generated_table` / `write_generated`: realistic rows in that schema, deterministic for a seed, written to
  Parquet chunk by chunk so that a 20-million-row fhvhv month needs little memory.

Numbers are drawn with `pyarrow.compute` (C++ kernels over whole columns): fast, and no dependency beyond
pyarrow, which the package already has.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

TAXIS = ("yellow", "green", "fhv", "fhvhv")
# First month covered per type: the first published file (§1), except green, whose files before 2014 are left out.
FIRST_MONTH = {"yellow": (2009, 1), "green": (2014, 1), "fhv": (2015, 1), "fhvhv": (2019, 2)}

_STR, _LSTR, _TS = pa.string(), pa.large_string(), pa.timestamp("us")
_F64, _I64, _I32, _NULL = pa.float64(), pa.int64(), pa.int32(), pa.null()

# Months whose column is all-null in the file, so pyarrow typed it `null` (§1.1 footnotes 2-4, §1.2-1.4).
_YELLOW_IMPROVEMENT_NULL = ("2014-08",)
_YELLOW_CONGESTION_NULL = (
    "2011-02",
    "2011-04..2012-11",
    "2013-01..2013-04",
    "2013-06..2013-12",
    "2014-02..2017-12",
    "2018-02..2018-05",
    "2018-07..2018-08",
    "2018-10",
    "2018-12",
)
_YELLOW_AIRPORT_NULL = ("2011-02..2017-12", "2018-02..2020-07", "2020-10")
_GREEN_EHAIL_NULL = ("2019-09..2023-01",)
_FHV_SR_FLAG_NULL = ("2015-01..2018-12", "2019-03..2023-01")  # before 2019: the 2019-07 types (unverified)
_FHVHV_AIRPORT_NULL = ("2019-02..2019-06", "2020-04", "2020-10")
_FHVHV_WAV_MATCH_NULL = ("2019-02..2019-03",)

# Columns the course's CSV mirror lacks although the Parquet file has them: from_csv fills them with nulls.
_MAY_BE_ABSENT = frozenset({"congestion_surcharge", "airport_fee", "cbd_congestion_fee", "request_source"})

_BLOCK = 65_536  # rows drawn from one seed: the unit that makes the data independent of chunk and row-group sizes
_REPEAT_RATE = 0.001  # exact repeats of the previous row, as the published files have
_OUTSIDE_RATE = 0.0005  # pickups outside the file's month


def _ym(text: str) -> int:
    """'YYYY-MM' as a month number (year * 12 + month - 1), which orders and subtracts."""
    year, month = text.split("-")
    return int(year) * 12 + int(month) - 1


def _within(ym: int, spans: tuple[str, ...]) -> bool:
    """Whether month number `ym` is in one of `spans` ('YYYY-MM' or 'YYYY-MM..YYYY-MM', both ends included)."""
    for span in spans:
        first, _, last = span.partition("..")
        if _ym(first) <= ym <= _ym(last or first):
            return True
    return False


def _month_number(taxi: str, year: int, month: int) -> int:
    if taxi not in TAXIS:
        raise ValueError(f"unknown taxi type {taxi!r}: use one of {', '.join(TAXIS)}")
    if not 1 <= month <= 12:
        raise ValueError(f"invalid month {year}-{month:02d}: the month must be 1..12")
    first_year, first_month = FIRST_MONTH[taxi]
    if (year, month) < (first_year, first_month):
        raise ValueError(f"no {taxi} file for {year}-{month:02d}: the first is {first_year}-{first_month:02d}")
    return year * 12 + month - 1


# --- schemas -------------------------------------------------------------------------------------------------


def _yellow_fields(ym: int) -> list[tuple[str, pa.DataType]]:
    if ym < _ym("2010-01"):  # era Y1: other names, times as text, lat/lon instead of zones
        return [
            ("vendor_name", _STR),
            ("Trip_Pickup_DateTime", _STR),
            ("Trip_Dropoff_DateTime", _STR),
            ("Passenger_Count", _I64),
            ("Trip_Distance", _F64),
            ("Start_Lon", _F64),
            ("Start_Lat", _F64),
            ("Rate_Code", _F64),
            ("store_and_forward", _F64),
            ("End_Lon", _F64),
            ("End_Lat", _F64),
            ("Payment_Type", _STR),
            ("Fare_Amt", _F64),
            ("surcharge", _F64),
            ("mta_tax", _F64),
            ("Tip_Amt", _F64),
            ("Tolls_Amt", _F64),
            ("Total_Amt", _F64),
        ]
    if ym < _ym("2011-01"):  # era Y2; types of vendor_id, the times, lat/lon and most amounts are unverified
        pandas_index = _within(ym, ("2010-02..2010-03",))
        fields = [
            ("vendor_id", _STR),
            ("pickup_datetime", _STR),
            ("dropoff_datetime", _STR),
            ("passenger_count", _I64),
            ("trip_distance", _F64),
            ("pickup_longitude", _F64),
            ("pickup_latitude", _F64),
            ("rate_code", _I64 if pandas_index else _STR),
            ("store_and_fwd_flag", _F64),
            ("dropoff_longitude", _F64),
            ("dropoff_latitude", _F64),
            ("payment_type", _STR),
            ("fare_amount", _F64),
            ("surcharge", _F64),
            ("mta_tax", _F64),
            ("tip_amount", _F64),
            ("tolls_amount", _F64),
            ("total_amount", _F64),
        ]
        return fields + [("__index_level_0__", _I64)] if pandas_index else fields
    y4 = ym >= _ym("2023-02")
    ids = _I32 if y4 else _I64
    # passenger_count and RatecodeID: int64 in Y3a, double in Y3b (2018-07..2023-01), int64 again from Y4
    counts = _F64 if _ym("2018-07") <= ym < _ym("2023-02") else _I64
    fields = [
        ("VendorID", ids),
        ("tpep_pickup_datetime", _TS),
        ("tpep_dropoff_datetime", _TS),
        ("passenger_count", counts),
        ("trip_distance", _F64),
        ("RatecodeID", counts),
        ("store_and_fwd_flag", _LSTR if y4 else _STR),
        ("PULocationID", ids),
        ("DOLocationID", ids),
        ("payment_type", _I64),
        ("fare_amount", _F64),
        ("extra", _F64),
        ("mta_tax", _F64),
        ("tip_amount", _F64),
        ("tolls_amount", _F64),
        ("improvement_surcharge", _NULL if _within(ym, _YELLOW_IMPROVEMENT_NULL) else _F64),
        ("total_amount", _F64),
        ("congestion_surcharge", _NULL if _within(ym, _YELLOW_CONGESTION_NULL) else _F64),
        ("Airport_fee" if y4 else "airport_fee", _NULL if _within(ym, _YELLOW_AIRPORT_NULL) else _F64),
    ]
    return fields + _appended(ym, request_source=True)


def _green_fields(ym: int) -> list[tuple[str, pa.DataType]]:
    g2 = ym >= _ym("2023-02")  # before: era G1, whose types are also used, unverified, for 2014-2018
    ids = _I32 if g2 else _I64
    codes = _I64 if g2 else _F64  # RatecodeID, passenger_count, payment_type, trip_type
    fields = [
        ("VendorID", ids),
        ("lpep_pickup_datetime", _TS),
        ("lpep_dropoff_datetime", _TS),
        ("store_and_fwd_flag", _LSTR if g2 else _STR),
        ("RatecodeID", codes),
        ("PULocationID", ids),
        ("DOLocationID", ids),
        ("passenger_count", codes),
        ("trip_distance", _F64),
        ("fare_amount", _F64),
        ("extra", _F64),
        ("mta_tax", _F64),
        ("tip_amount", _F64),
        ("tolls_amount", _F64),
        ("ehail_fee", _NULL if _within(ym, _GREEN_EHAIL_NULL) else _F64),
        ("improvement_surcharge", _F64),
        ("total_amount", _F64),
        ("payment_type", codes),
        ("trip_type", codes),
        ("congestion_surcharge", _F64),
    ]
    return fields + _appended(ym, request_source=True)


def _fhv_fields(ym: int) -> list[tuple[str, pa.DataType]]:
    late = ym >= _ym("2023-02")
    if late or _within(ym, ("2019-05..2019-06",)):
        pu = do = _I64
    elif _within(ym, ("2020-07",)):
        pu, do = _F64, _I64
    else:  # 2019-01..04, 2019-07..2023-01 except 2020-07, and (unverified) 2015-2018 as 2019-07
        pu = do = _F64
    if late:
        sr_flag = _I64
    elif _within(ym, _FHV_SR_FLAG_NULL):
        sr_flag = _NULL
    else:  # 2019-01..02
        sr_flag = _F64
    text = _LSTR if late else _STR
    return [
        ("dispatching_base_num", text),
        ("pickup_datetime", _TS),  # unit unverified for fhv (§1.3 footnote 6): µs as every other TLC file
        ("dropOff_datetime", _TS),
        ("PUlocationID", pu),
        ("DOlocationID", do),
        ("SR_Flag", sr_flag),
        ("Affiliated_base_number", text),
    ]


def _fhvhv_fields(ym: int) -> list[tuple[str, pa.DataType]]:
    v2 = ym >= _ym("2023-02")
    text = _LSTR if v2 else _STR
    ids = _I32 if v2 else _I64
    fields = [
        ("hvfhs_license_num", text),
        ("dispatching_base_num", text),
        ("originating_base_num", text),
        ("request_datetime", _TS),
        ("on_scene_datetime", _TS),
        ("pickup_datetime", _TS),
        ("dropoff_datetime", _TS),
        ("PULocationID", ids),
        ("DOLocationID", ids),
        ("trip_miles", _F64),
        ("trip_time", _I64),
        ("base_passenger_fare", _F64),
        ("tolls", _F64),
        ("bcf", _F64),
        ("sales_tax", _F64),
        ("congestion_surcharge", _F64),
        ("airport_fee", _NULL if _within(ym, _FHVHV_AIRPORT_NULL) else _F64),  # lower-case in every fhvhv file
        ("tips", _F64),
        ("driver_pay", _F64),
        ("shared_request_flag", text),
        ("shared_match_flag", text),
        ("access_a_ride_flag", text),
        ("wav_request_flag", text),
        ("wav_match_flag", _NULL if _within(ym, _FHVHV_WAV_MATCH_NULL) else text),
    ]
    return fields + _appended(ym, request_source=False)


def _appended(ym: int, request_source: bool) -> list[tuple[str, pa.DataType]]:
    """Columns added at the end of later files: cbd_congestion_fee (2025-01), request_source (2026-06)."""
    fields = [("cbd_congestion_fee", _F64)] if ym >= _ym("2025-01") else []
    if request_source and ym >= _ym("2026-06"):
        # "string" in §1.1; Arrow large_string like every text column written since 2023-02 (unverified)
        fields.append(("request_source", _LSTR))
    return fields


_FIELDS = {"yellow": _yellow_fields, "green": _green_fields, "fhv": _fhv_fields, "fhvhv": _fhvhv_fields}


@lru_cache(maxsize=256)
def _schema(taxi: str, ym: int) -> pa.Schema:
    return pa.schema([pa.field(name, type_, nullable=True) for name, type_ in _FIELDS[taxi](ym)])


def schema_for(taxi: str, year: int, month: int) -> pa.Schema:
    """The Arrow schema of the TLC's `{taxi}_tripdata_{year}-{month}.parquet`, as pyarrow reads it.

    From shared/reference/tlc-parquet.md §1: §1.1 yellow (eras Y1 2009, Y2 2010 with 2010-02/03's int64
    `rate_code` and `__index_level_0__`, Y3a/Y3b/Y4/Y5 from 2011), §1.2 green, §1.3 fhv, §1.4 fhvhv. Column
    names keep the files' spelling (yellow `airport_fee` up to 2023-01, `Airport_fee` from 2023-02; fhv
    `dropOff_datetime`, `PUlocationID`), columns are in file order, every field is nullable, and a column that
    is all-null in a month the reference lists is typed `pa.null()`. `cbd_congestion_fee` (double) ends
    yellow, green and fhvhv from 2025-01; `request_source` (large_string) ends yellow and green from 2026-06.

    Unverified, and said so by the reference: green types before 2019 (2019-01's are used), fhv types before
    2019 (2019-07's), most 2010 yellow types, the fhv timestamp unit. Months after the reference's last
    (2026-08) get the latest known schema. Raises ValueError for an unknown taxi type or a month before the
    type's first file (`FIRST_MONTH`).
    """
    return _schema(taxi, _month_number(taxi, year, month))


# --- real CSV rows in a month's schema -------------------------------------------------------------------------

_INT_TEXT = r"^-?[0-9]+(\.0*)?$"  # '1' and '1.0' hold exactly in an integer column; '1.5', '0x10', ' 1' do not
_FLOAT_TEXT = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"  # decimal notation: no 'nan', 'inf', hex
_TIME_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?$"
_SAFE_DIGITS = 15  # any decimal of at most 15 significant digits survives text -> double -> shortest repr


def from_csv(csv_path_or_text: str | os.PathLike[str] | bytes, taxi: str, year: int, month: int) -> pa.Table:
    """Rows of a course-mirror CSV as the TLC's Parquet file for that month holds them (`schema_for`).

    `csv_path_or_text` is a path (str or PathLike; `.gz` and other compressions pyarrow detects are read), or
    the CSV itself as bytes or as a str that contains a line break. Columns are matched by name regardless of
    case (the CSV's `PULocationID` is fhv's `PUlocationID`, its `airport_fee` yellow's `Airport_fee`); the
    columns the mirror lacks (congestion_surcharge, airport_fee, cbd_congestion_fee, request_source) are
    filled with nulls. An empty field is a null; text is kept exactly, a single space included. Values are
    converted to the era's types exactly: '1' is 1.0 where the column is double, '1.0' is 1 where it is an
    integer, times 'YYYY-MM-DD HH:MM:SS' become timestamp[us]. Raises ValueError for a value the type cannot
    hold exactly ('1.5' as an integer, an int32 overflow, a double with more digits than it keeps, a
    malformed time, anything in an all-null column), for a CSV column the file does not have, and for a
    missing column other than those above.
    """
    schema = schema_for(taxi, year, month)
    source, header = _csv_source(csv_path_or_text)
    by_name = {field.name.lower(): field for field in schema}
    seen: dict[str, str] = {}
    for name in header:
        if name.lower() in seen:
            raise ValueError(f"CSV header names {seen[name.lower()]!r} and {name!r}: one column twice")
        seen[name.lower()] = name
    unknown = [name for name in header if name.lower() not in by_name]
    if unknown:
        raise ValueError(f"CSV columns {unknown} are not in the {taxi} {year}-{month:02d} file")
    absent = [f.name for f in schema if f.name.lower() not in seen and f.name.lower() not in _MAY_BE_ABSENT]
    if absent:
        raise ValueError(f"CSV lacks the columns {absent} of the {taxi} {year}-{month:02d} file")
    table = pa_csv.read_csv(
        source,
        read_options=pa_csv.ReadOptions(column_names=header, skip_rows=1),
        # Every field read as text: the conversion below is ours, exact and strict, not pyarrow's inference.
        convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(header, pa.string())),
    )
    arrays = []
    for field in schema:
        csv_name = seen.get(field.name.lower())
        if csv_name is None:
            arrays.append(pa.nulls(table.num_rows, field.type))
        else:
            arrays.append(_exact(table.column(csv_name).combine_chunks(), field))
    return pa.Table.from_arrays(arrays, schema=schema)


def _csv_source(csv: str | os.PathLike[str] | bytes) -> tuple[object, list[str]]:
    """What pyarrow.csv reads, and the header's names."""
    if isinstance(csv, bytes) or (isinstance(csv, str) and ("\n" in csv or "\r" in csv)):
        data = csv if isinstance(csv, bytes) else csv.encode()
        return pa.BufferReader(data), _header(data.split(b"\n", 1)[0])
    path = os.fspath(csv)
    with pa.input_stream(path, compression="detect") as stream:
        first = b""
        while b"\n" not in first:
            piece = stream.read(65_536)
            if not piece:
                break
            first += piece
    return path, _header(first.split(b"\n", 1)[0])


def _header(line: bytes) -> list[str]:
    names = next(csv.reader([line.decode("utf-8-sig").rstrip("\r")]), [])
    if not names:
        raise ValueError("the CSV has no header line")
    return names


def _exact(text: pa.Array, field: pa.Field) -> pa.Array:
    """`text` (strings, '' for an empty field) as `field.type`, exactly, or ValueError."""
    values = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    type_ = field.type
    if pa.types.is_null(type_):
        _refuse(field, values, pc.is_valid(values), "the column is all-null (null-typed) in this month's file")
        return pa.nulls(len(values))
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return values.cast(type_)
    if pa.types.is_integer(type_):
        _refuse(field, values, pc.invert(pc.match_substring_regex(values, _INT_TEXT)), "not an integer")
        return _cast(field, pc.replace_substring_regex(values, r"\.0*$", ""))
    if pa.types.is_floating(type_):
        _refuse(field, values, pc.invert(pc.match_substring_regex(values, _FLOAT_TEXT)), "not a decimal number")
        _check_double_digits(field, values)
        return _cast(field, values)
    if pa.types.is_timestamp(type_):
        _refuse(field, values, pc.invert(pc.match_substring_regex(values, _TIME_TEXT)), "not YYYY-MM-DD HH:MM:SS")
        return _cast(field, values)
    raise TypeError(f"{field.name}: no conversion to {type_}")  # schema_for uses no other type


def _refuse(field: pa.Field, values: pa.Array, bad: pa.Array, why: str) -> None:
    """Raise ValueError naming the first row where `bad` is true (nulls in `bad` count as fine)."""
    bad = pc.fill_null(bad, False)
    if pc.any(bad).as_py():
        row = pc.index(bad, True).as_py()
        raise ValueError(f"{field.name} ({field.type}), data row {row + 1}: {values[row].as_py()!r}: {why}")


def _cast(field: pa.Field, values: pa.Array) -> pa.Array:
    try:
        return values.cast(field.type)  # safe cast: overflow and impossible dates raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"{field.name} ({field.type}): {exc}") from exc


def _check_double_digits(field: pa.Field, values: pa.Array) -> None:
    """Refuse decimal text that a double would round: more than 15 significant digits, or out of range.

    Up to 15 digits (and no exponent, and short enough to stay far from under- and overflow) every decimal
    reads back the same, so only the rare rest is checked one by one, in Python.
    """
    digits = pc.replace_substring_regex(values, r"[^0-9]", "")
    digits = pc.replace_substring_regex(pc.replace_substring_regex(digits, r"^0+", ""), r"0+$", "")
    risky = pc.or_(
        pc.greater(pc.utf8_length(digits), _SAFE_DIGITS),
        pc.or_(pc.match_substring_regex(values, r"[eE]"), pc.greater(pc.utf8_length(values), 24)),
    )
    risky = pc.fill_null(risky, False)
    for row in pc.indices_nonzero(risky).to_pylist():
        text = values[row].as_py()
        number = float(text)  # the pattern check let only decimal notation through
        if not math.isfinite(number) or Decimal(text) not in (Decimal(number), Decimal(repr(number))):
            raise ValueError(f"{field.name} ({field.type}), data row {row + 1}: {text!r}: a double cannot hold it")


# --- generated rows ----------------------------------------------------------------------------------------------


class _Draws:
    """Uniform [0, 1) columns for one block of rows; each call a new stream seeded from the block's key."""

    def __init__(self, key: str, n: int) -> None:
        self.key, self.n, self._streams = key, n, 0

    def uniform(self) -> pa.Array:
        self._streams += 1
        digest = hashlib.blake2b(f"{self.key}/{self._streams}".encode(), digest_size=8).digest()
        return pc.random(self.n, initializer=int.from_bytes(digest, "little"))

    def ints(self, low: int, high: int) -> pa.Array:
        """Integers in [low, high)."""
        return pc.add(pc.cast(pc.floor(pc.multiply(self.uniform(), high - low)), _I64), low)

    def chance(self, p: float) -> pa.Array:
        """True with probability p."""
        return pc.less(self.uniform(), p)

    def expo(self, mean: float) -> pa.Array:
        """Exponentially distributed whole numbers (int64) of the given mean."""
        return pc.cast(pc.floor(pc.multiply(pc.negate(pc.ln(pc.subtract(1.0, self.uniform()))), mean)), _I64)

    def pick(self, weighted: tuple[tuple[object, int], ...], type_: pa.DataType) -> pa.Array:
        """One of the values per row, in proportion to their integer weights (a zero weight never occurs)."""
        table = _lookup(weighted, type_)
        return table.take(pc.cast(pc.floor(pc.multiply(self.uniform(), len(table))), _I64))


@lru_cache(maxsize=512)
def _lookup(weighted: tuple[tuple[object, int], ...], type_: pa.DataType) -> pa.Array:
    return pa.array([value for value, weight in weighted for _ in range(weight)], type_)


def _money(cents: pa.Array) -> pa.Array:
    # whole cents / 100 is the double nearest to the 2-decimal amount, so it prints as '11.8', never '11.80000001'
    return pc.divide(pc.cast(cents, _F64), 100.0)


def _percent(cents: pa.Array, rate: float) -> pa.Array:
    return pc.cast(pc.round(pc.multiply(cents, rate)), _I64)


def _null_where(mask: pa.Array, values: pa.Array) -> pa.Array:
    return pc.if_else(mask, pa.scalar(None, values.type), values)


def _total(*cents: pa.Array | int) -> pa.Array:
    """The sum of the amounts, a null one counting as 0 (as total_amount does in the files)."""
    total = cents[0]
    for part in cents[1:]:
        total = pc.add(total, pc.fill_null(part, 0) if isinstance(part, pa.Array) else part)
    return total


def _epoch_seconds(year: int, month: int, day: int = 1) -> int:
    return int((datetime(year, month, day) - datetime(1970, 1, 1)).total_seconds())


def _as_time(seconds: pa.Array) -> pa.Array:
    return pc.cast(pc.multiply(seconds, 1_000_000), _I64).cast(_TS)


def _as_text_time(seconds: pa.Array) -> pa.Array:
    # through timestamp[s]: strftime's %S of a µs timestamp would add '.000000'
    return pc.strftime(seconds.cast(pa.timestamp("s")), format="%Y-%m-%d %H:%M:%S")


def _trip_times(d: _Draws, ym: int, mean_seconds: int) -> tuple[pa.Array, pa.Array]:
    """Pickup (epoch seconds) inside the month but for ~0.05% of rows, and a trip duration of at least a minute."""
    year, month = divmod(ym, 12)
    start = _epoch_seconds(year, month + 1)
    end = _epoch_seconds(year + (month + 1) // 12, (month + 1) % 12 + 1)
    pickup = pc.add(d.ints(0, end - start), start)
    # Outside the month as the files have them: the days around it, and the odd 2002, 2008 or 2090 clock.
    days = (
        start - 86_400,
        end,
        _epoch_seconds(2002, 12, 31),
        _epoch_seconds(2008, 12, 31),
        _epoch_seconds(2090, 12, 31),
    )
    elsewhere = pc.add(d.pick(tuple((day, 1) for day in days), _I64), d.ints(0, 86_400))
    pickup = pc.if_else(d.chance(_OUTSIDE_RATE), elsewhere, pickup)
    seconds = pc.min_element_wise(pc.add(d.expo(mean_seconds), 60), 6 * 3600)
    return pickup, seconds


def _zones(d: _Draws) -> pa.Array:
    return d.ints(1, 266)  # 1..265; 264 and 265 are the Unknown / outside-NYC zones


def _yellow_columns(d: _Draws, ym: int, row0: int) -> dict[str, pa.Array]:
    if ym < _ym("2011-01"):
        return _legacy_yellow_columns(d, ym, row0)
    year = ym // 12
    pickup, seconds = _trip_times(d, ym, 780)
    vendor = d.pick(((1, 2600), (2, 7300), (6, 30 if year >= 2020 else 0), (7, 70 if year >= 2025 else 0)), _I64)
    payment = d.pick(((1, 7300), (2, 2400), (3, 80), (4, 40), (0, 180 if year >= 2019 else 0)), _I64)
    rate = d.pick(((1, 9500), (2, 250), (3, 30), (4, 20), (5, 150), (99, 50 if year >= 2019 else 0)), _I64)
    distance = d.expo(290)  # hundredths of a mile
    new_fares = ym >= _ym("2022-12")
    base, step, jfk = (300, 70, 7000) if new_fares else (250, 50, 5200)
    fare = pc.add(base, pc.add(pc.multiply(pc.divide(distance, 20), step), pc.multiply(pc.divide(seconds, 240), 50)))
    fare = pc.if_else(pc.equal(rate, 2), jfk, fare)
    tip = pc.if_else(pc.equal(payment, 1), _percent(fare, 0.2), 0)
    tip = pc.if_else(d.chance(0.3), 0, tip)
    tolls = pc.if_else(d.chance(0.04), 694, 0)
    extra = d.pick(((0, 4500), (50, 2500), (100, 1500), (250, 1000), (350, 500)), _I64)
    improvement = 100 if new_fares else 30 if year >= 2015 else 0
    congestion = pc.if_else(d.chance(0.85), 250, 0) if ym >= _ym("2019-02") else pa.nulls(d.n, _I64)
    pu, do = _zones(d), _zones(d)
    at_airport = pc.is_in(pu, pa.array([132, 138]))
    airport = pc.if_else(at_airport, 175 if ym >= _ym("2023-02") else 125, 0)
    airport = airport if ym >= _ym("2020-08") else pa.nulls(d.n, _I64)
    cbd = pc.if_else(d.chance(0.7), 75, 0) if ym >= _ym("2025-01") else pa.nulls(d.n, _I64)
    # payment_type 0 rows come with this block of nulls (§6)
    block = pc.equal(payment, 0)
    congestion, airport = _null_where(block, congestion), _null_where(block, airport)
    total = _total(fare, extra, 50, tip, tolls, improvement, congestion, airport, cbd)
    return {
        "vendorid": vendor,
        "tpep_pickup_datetime": _as_time(pickup),
        "tpep_dropoff_datetime": _as_time(pc.add(pickup, seconds)),
        "passenger_count": _null_where(
            block, d.pick(((1, 7000), (2, 1400), (3, 400), (4, 200), (5, 400), (6, 300), (0, 300)), _I64)
        ),
        "trip_distance": _money(distance),
        "ratecodeid": _null_where(block, rate),
        "store_and_fwd_flag": _null_where(block, d.pick((("N", 9950), ("Y", 50)), _STR)),
        "pulocationid": pu,
        "dolocationid": do,
        "payment_type": payment,
        "fare_amount": _money(fare),
        "extra": _money(extra),
        "mta_tax": _money(pa.repeat(pa.scalar(50, _I64), d.n)),
        "tip_amount": _money(tip),
        "tolls_amount": _money(tolls),
        "improvement_surcharge": _money(pa.repeat(pa.scalar(improvement, _I64), d.n)),
        "total_amount": _money(total),
        "congestion_surcharge": _money(congestion),
        "airport_fee": _money(airport),
        "cbd_congestion_fee": _money(cbd),
        "request_source": _request_source(d),
    }


def _legacy_yellow_columns(d: _Draws, ym: int, row0: int) -> dict[str, pa.Array]:
    """2009 (Y1) and 2010 (Y2): coordinates instead of zones, times as text, payment types spelt out."""
    pickup, seconds = _trip_times(d, ym, 720)
    distance = d.expo(260)
    fare = pc.add(250, pc.multiply(pc.divide(distance, 20), 40))
    payment_codes = (("CASH", 5500), ("Credit", 2000), ("CREDIT", 2300), ("No Charge", 100), ("Dispute", 100))
    if ym >= _ym("2010-01"):
        payment_codes = (("CAS", 6000), ("CRD", 3800), ("NOC", 100), ("DIS", 50), ("UNK", 50))
    payment = d.pick(payment_codes, _STR)
    credit = pc.is_in(payment, pa.array(["Credit", "CREDIT", "CRD"]))
    tip = pc.if_else(credit, _percent(fare, 0.18), 0)
    tolls = pc.if_else(d.chance(0.03), 500, 0)
    surcharge = d.pick(((0, 6000), (50, 3000), (100, 1000)), _I64)
    total = _total(fare, tip, tolls, surcharge, 50)

    def coordinate(center: float) -> pa.Array:  # micro-degrees around Manhattan, 1% unknown (0)
        micro = pc.add(d.ints(-60_000, 60_000), int(center * 1_000_000))
        return pc.divide(pc.cast(pc.if_else(d.chance(0.01), 0, micro), _F64), 1_000_000.0)

    columns = {
        "vendor": d.pick((("VTS", 5000), ("CMT", 4500), ("DDS", 500)), _STR),
        "pickup": _as_text_time(pickup),
        "dropoff": _as_text_time(pc.add(pickup, seconds)),
        "passenger_count": d.pick(((1, 7000), (2, 1500), (3, 400), (4, 200), (5, 800), (6, 100)), _I64),
        "trip_distance": _money(distance),
        "start_lon": coordinate(-73.98),
        "start_lat": coordinate(40.75),
        "end_lon": coordinate(-73.98),
        "end_lat": coordinate(40.75),
        "payment_type": payment,
        "fare": _money(fare),
        "surcharge": _money(surcharge),
        "mta_tax": _money(pa.repeat(pa.scalar(50, _I64), d.n)),
        "tip": _money(tip),
        "tolls": _money(tolls),
        "total": _money(total),
    }
    if ym < _ym("2010-01"):
        names = _Y1_NAMES
        # 2009's Rate_Code and store_and_forward are almost always empty
        columns["rate_code"] = pa.nulls(d.n, _F64)
        columns["store_and_forward"] = pa.nulls(d.n, _F64)
    else:
        names = _Y2_NAMES
        rate = d.pick(((1, 9800), (2, 150), (5, 50)), _I64)
        columns["rate_code"] = rate if _within(ym, ("2010-02..2010-03",)) else rate.cast(_STR)
        columns["store_and_fwd_flag"] = pa.nulls(d.n, _F64)
        # the pandas index the 2010-02/03 files kept: the row's number in the file
        columns["__index_level_0__"] = pa.array(range(row0, row0 + d.n), _I64)
    return {names.get(key, key): values for key, values in columns.items()}


# The generic names of _legacy_yellow_columns as the 2009 and 2010 files spell them (lower-cased).
_Y1_NAMES = {
    "vendor": "vendor_name",
    "pickup": "trip_pickup_datetime",
    "dropoff": "trip_dropoff_datetime",
    "fare": "fare_amt",
    "tip": "tip_amt",
    "tolls": "tolls_amt",
    "total": "total_amt",
}
_Y2_NAMES = {
    "vendor": "vendor_id",
    "pickup": "pickup_datetime",
    "dropoff": "dropoff_datetime",
    "start_lon": "pickup_longitude",
    "start_lat": "pickup_latitude",
    "end_lon": "dropoff_longitude",
    "end_lat": "dropoff_latitude",
    "fare": "fare_amount",
    "tip": "tip_amount",
    "tolls": "tolls_amount",
    "total": "total_amount",
}


def _request_source(d: _Draws) -> pa.Array:
    # values seen in 2026 (§1.1: 'A', 'HV0003'); their shares are a guess
    return d.pick((("A", 9000), ("HV0003", 1000)), _STR)


def _green_columns(d: _Draws, ym: int, row0: int) -> dict[str, pa.Array]:
    year = ym // 12
    pickup, seconds = _trip_times(d, ym, 720)
    vendor = d.pick(((1, 1500), (2, 8450), (6, 50 if year >= 2020 else 0)), _I64)
    payment = d.pick(((1, 5500), (2, 4300), (3, 100), (4, 60), (5, 40)), _I64)
    rate = d.pick(((1, 9600), (2, 30), (3, 20), (4, 30), (5, 300), (99, 20 if year >= 2019 else 0)), _I64)
    distance = d.expo(280)
    fare = pc.add(250, pc.add(pc.multiply(pc.divide(distance, 20), 50), pc.multiply(pc.divide(seconds, 240), 50)))
    tip = pc.if_else(pc.equal(payment, 1), _percent(fare, 0.15), 0)
    tolls = pc.if_else(d.chance(0.02), 694, 0)
    extra = d.pick(((0, 5000), (50, 3000), (100, 2000)), _I64)
    improvement = 100 if ym >= _ym("2022-12") else 30 if year >= 2015 else 0
    congestion = pc.if_else(d.chance(0.25), 275, 0) if ym >= _ym("2019-02") else pa.nulls(d.n, _I64)
    cbd = pc.if_else(d.chance(0.1), 75, 0) if ym >= _ym("2025-01") else pa.nulls(d.n, _I64)
    # rows without a RatecodeID lack this whole block too (§6); about 5% here
    block = d.chance(0.05 if year >= 2019 else 0.0)
    congestion = _null_where(block, congestion)
    total = _total(fare, extra, 50, tip, tolls, improvement, congestion, cbd)
    return {
        "vendorid": vendor,
        "lpep_pickup_datetime": _as_time(pickup),
        "lpep_dropoff_datetime": _as_time(pc.add(pickup, seconds)),
        "store_and_fwd_flag": _null_where(block, d.pick((("N", 9970), ("Y", 30)), _STR)),
        "ratecodeid": _null_where(block, rate),
        "pulocationid": _zones(d),
        "dolocationid": _zones(d),
        "passenger_count": _null_where(
            block, d.pick(((1, 8500), (2, 800), (3, 200), (5, 300), (6, 150), (0, 50)), _I64)
        ),
        "trip_distance": _money(distance),
        "fare_amount": _money(fare),
        "extra": _money(extra),
        "mta_tax": _money(pa.repeat(pa.scalar(50, _I64), d.n)),
        "tip_amount": _money(tip),
        "tolls_amount": _money(tolls),
        "ehail_fee": pa.nulls(d.n, _F64),  # empty in every sampled row of every era (§1.2, §6)
        "improvement_surcharge": _money(pa.repeat(pa.scalar(improvement, _I64), d.n)),
        "total_amount": _money(total),
        "payment_type": _null_where(block, payment),
        "trip_type": _null_where(block, d.pick(((1, 9700), (2, 300)), _I64)),
        "congestion_surcharge": _money(congestion),
        "cbd_congestion_fee": _money(cbd),
        "request_source": _request_source(d),
    }


@lru_cache(maxsize=1)
def _fhv_bases() -> tuple[tuple[str, int], ...]:
    # a fixed spread of base numbers ('B00013' .. 'B03xxx'), the same for every seed
    return tuple((f"B{(number * 7919) % 3400 + 1:05d}", 1) for number in range(400))


def _fhv_columns(d: _Draws, ym: int, row0: int) -> dict[str, pa.Array]:
    pickup, seconds = _trip_times(d, ym, 1100)
    base = d.pick(_fhv_bases(), _STR)
    affiliated = pc.if_else(d.chance(0.1), d.pick(_fhv_bases(), _STR), base)
    unknown = pa.scalar(264, _I64)
    pu = pc.if_else(d.chance(0.15), unknown, _zones(d))
    do = pc.if_else(d.chance(0.15), unknown, _zones(d))
    return {
        "dispatching_base_num": base,
        "pickup_datetime": _as_time(pickup),
        "dropoff_datetime": _as_time(pc.add(pickup, seconds)),
        "pulocationid": _null_where(d.chance(0.32), pu),  # empty in ~1/3 of rows (§1.3, S6)
        "dolocationid": _null_where(d.chance(0.055), do),
        "sr_flag": _null_where(d.chance(0.99), pa.repeat(pa.scalar(1, _I64), d.n)),  # 1 or null (§5)
        "affiliated_base_number": _null_where(d.chance(0.05), affiliated),
    }


_UBER_BASES = tuple((f"B0{n}", 1) for n in (2764, 2872, 2875, 2765, 2869, 2617, 2682, 2835, 2836, 2864, 2866, 2867))


def _fhvhv_columns(d: _Draws, ym: int, row0: int) -> dict[str, pa.Array]:
    year = ym // 12
    license_ = d.pick((("HV0003", 7200), ("HV0005", 2780), ("HV0004", 20)), _STR)
    uber = pc.equal(license_, "HV0003")
    uber_bases = (("B03404", 99), *_UBER_BASES[:1]) if year >= 2022 else _UBER_BASES
    base = pc.if_else(
        uber,
        d.pick(uber_bases, _STR),
        pc.if_else(pc.equal(license_, "HV0005"), d.pick((("B02510", 95), ("B02844", 5)), _STR), "B02800"),
    )
    originating = _null_where(pc.invert(uber), pc.if_else(d.chance(0.95), base, d.pick(_UBER_BASES, _STR)))
    pickup, seconds = _trip_times(d, ym, 1080)
    wait = pc.add(d.expo(240), 30)  # request -> pickup
    request = pc.subtract(pickup, wait)
    on_scene = _null_where(pc.invert(uber), pc.subtract(pickup, pc.min_element_wise(d.expo(60), wait)))
    pu, do = _zones(d), _zones(d)
    # miles from the trip's time at 6..26 mph, in thousandths
    miles = pc.cast(
        pc.floor(pc.multiply(pc.multiply(seconds, pc.add(pc.multiply(d.uniform(), 20), 6)), 1000 / 3600)), _I64
    )
    fare = pc.add(pc.add(250, pc.divide(pc.multiply(miles, 15), 100)), pc.divide(pc.multiply(seconds, 8), 10))
    tolls = pc.if_else(d.chance(0.05), 694, 0)
    airports = pa.array([1, 132, 138], _I64)
    airport = pc.if_else(pc.or_(pc.is_in(pu, airports), pc.is_in(do, airports)), 250, 0)
    shared_request = d.pick((("N", 9700), ("Y", 300)), _STR)
    shared_match = pc.if_else(pc.and_(pc.equal(shared_request, "Y"), d.chance(0.5)), "Y", "N")
    # HV0003 rows carry a single space, the others N (rarely Y) (§5, §6)
    access_a_ride = pc.if_else(uber, " ", d.pick((("N", 995), ("Y", 5)), _STR))
    return {
        "hvfhs_license_num": license_,
        "dispatching_base_num": base,
        "originating_base_num": originating,
        "request_datetime": _as_time(request),
        "on_scene_datetime": _as_time(on_scene),
        "pickup_datetime": _as_time(pickup),
        "dropoff_datetime": _as_time(pc.add(pickup, seconds)),
        "pulocationid": pu,
        "dolocationid": do,
        "trip_miles": pc.divide(pc.cast(miles, _F64), 1000.0),
        "trip_time": seconds,
        "base_passenger_fare": _money(fare),
        "tolls": _money(tolls),
        "bcf": _money(_percent(fare, 0.0275)),
        "sales_tax": _money(_percent(fare, 0.08875)),
        "congestion_surcharge": _money(pc.if_else(d.chance(0.6), 275, 0)),
        "airport_fee": _money(airport),
        "tips": _money(pc.if_else(d.chance(0.2), _percent(fare, 0.15), 0)),
        "driver_pay": _money(_percent(fare, 0.72)),
        "shared_request_flag": shared_request,
        "shared_match_flag": shared_match,
        "access_a_ride_flag": access_a_ride,
        "wav_request_flag": d.pick((("N", 9400), ("Y", 600)), _STR),
        "wav_match_flag": d.pick((("N", 9200), ("Y", 800)), _STR),
        "cbd_congestion_fee": _money(pc.if_else(d.chance(0.35), 150, 0)),
    }


_COLUMNS = {"yellow": _yellow_columns, "green": _green_columns, "fhv": _fhv_columns, "fhvhv": _fhvhv_columns}


@lru_cache(maxsize=1)
def _row_numbers() -> pa.Array:
    return pa.array(range(_BLOCK), _I64)


def _block(taxi: str, ym: int, seed: int, index: int, schema: pa.Schema) -> pa.Table:
    """Block `index` (rows index * _BLOCK ..) of a generated month: a function of its arguments alone."""
    d = _Draws(f"{taxi}/{ym // 12:04d}-{ym % 12 + 1:02d}/{seed}/{index}", _BLOCK)
    columns = _COLUMNS[taxi](d, ym, index * _BLOCK)
    arrays = []
    for field in schema:
        if pa.types.is_null(field.type):
            arrays.append(pa.nulls(_BLOCK))
        else:
            arrays.append(columns[field.name.lower()].cast(field.type))
    table = pa.Table.from_arrays(arrays, schema=schema)
    # ~0.1% of rows repeat the row before them exactly (never a repeat of a repeat, never a block's first row)
    repeat = d.chance(_REPEAT_RATE)
    after_repeat = pa.concat_arrays([pa.array([True]), repeat.slice(0, _BLOCK - 1)])
    repeat = pc.and_not(repeat, after_repeat)
    rows = _row_numbers()
    return table.take(pc.if_else(repeat, pc.subtract(rows, 1), rows))


def _generate(taxi: str, year: int, month: int, rows: int, seed: int, chunk: int) -> Iterator[pa.Table]:
    """The month's first `rows` rows in tables of `chunk` rows (the last may be shorter)."""
    if rows < 0 or chunk < 1:
        raise ValueError(f"rows must be >= 0 and chunk >= 1, not {rows} and {chunk}")
    ym = _month_number(taxi, year, month)
    schema = _schema(taxi, ym)
    cached: tuple[int, pa.Table] | None = None  # the block a chunk boundary cut, for the next chunk
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        pieces = []
        for index in range(start // _BLOCK, (stop - 1) // _BLOCK + 1):
            block = cached[1] if cached and cached[0] == index else _block(taxi, ym, seed, index, schema)
            cached = (index, block)
            low, high = max(start - index * _BLOCK, 0), min(stop - index * _BLOCK, _BLOCK)
            pieces.append(block.slice(low, high - low))
        yield pa.concat_tables(pieces)


def generated_table(taxi: str, year: int, month: int, rows: int, seed: int = 0) -> pa.Table:
    """`rows` realistic rows of `taxi`'s file for the month, in `schema_for(taxi, year, month)`.

    Values follow the reference's §5-6: yellow/green VendorID 1, 2 and, in later years, 6 and 7; pickups in the
    month but for ~0.05% (days around it, 2002, 2008, 2090); dropoff after pickup; money in whole cents;
    payment_type 0 (yellow) or a missing RatecodeID (green) with their block of nulls; fhvhv licences HV0003
    and HV0005 and a few HV0004, with originating_base_num and on_scene_datetime only on HV0003 rows,
    access_a_ride_flag ' ' on them, request before on-scene before pickup, trip_time = dropoff - pickup in
    seconds; ~0.1% of rows an exact repeat of the row before. Null-typed columns of the month are null.

    Deterministic: the same arguments give the same table, and a smaller `rows` gives a prefix of it.
    """
    ym = _month_number(taxi, year, month)
    tables = list(_generate(taxi, year, month, rows, seed, _BLOCK * 4))
    return pa.concat_tables(tables) if tables else _schema(taxi, ym).empty_table()


def write_generated(
    path: str | os.PathLike[str],
    taxi: str,
    year: int,
    month: int,
    rows: int,
    seed: int = 0,
    row_group_size: int = 1_048_576,
    chunk: int = 262_144,
) -> int:
    """Write `generated_table(taxi, year, month, rows, seed)` to the Parquet file `path`; return the rows written.

    Rows are made `chunk` at a time and written in row groups of `row_group_size` rows (the last may be
    shorter), so memory stays near one row group whatever `rows` is. The rows do not depend on `chunk` or
    `row_group_size`, and the same arguments give the same bytes. The file is written as `path + '.part'`
    and renamed at the end: a run killed midway leaves no half file under `path` (an exception also removes
    the part file).
    """
    if row_group_size < 1:
        raise ValueError(f"row_group_size must be >= 1, not {row_group_size}")
    schema = schema_for(taxi, year, month)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    written = 0
    try:
        with pq.ParquetWriter(part, schema, compression="zstd") as writer:
            pending: list[pa.Table] = []
            buffered = 0
            for table in _generate(taxi, year, month, rows, seed, chunk):
                pending.append(table)
                buffered += table.num_rows
                # write full row groups only: one write_table call would otherwise make one (small) group per chunk
                while buffered >= row_group_size:
                    joined = pa.concat_tables(pending)
                    writer.write_table(joined.slice(0, row_group_size), row_group_size=row_group_size)
                    rest = joined.slice(row_group_size)
                    pending, buffered = [rest], rest.num_rows
                    written += row_group_size
            if buffered:
                writer.write_table(pa.concat_tables(pending), row_group_size=row_group_size)
                written += buffered
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return written
