"""The taxi types, described once as data.

Everything else derives from these specs: the DDL of the main and staging tables, the COPY column lists,
header matching, value validation, the Parquet and BigQuery schemas and the row identity. The columns every
sink adds in front of them (unique_row_id, filename), the rejects table and the ledger are in `contract.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taxi_loader.months import Month


class Kind(StrEnum):
    """How a source column is parsed, stored and rendered for the row identity."""

    CODE = "code"  # an integer code the course stores as text (VendorID, PULocationID, ...)
    INT = "int"  # a count stored as integer (passenger_count, payment_type, trip_type)
    TIMESTAMP = "timestamp"  # 'YYYY-MM-DD HH:MM:SS', no zone
    FLOAT = "float"  # distances and money, double precision as in the course tables
    TEXT = "text"  # free text (store_and_fwd_flag, dispatching_base_num, ...)
    # Kinds of the loader's own bookkeeping columns (contract.py), never of a source column:
    COUNT = "count"  # a 64-bit count or size (rows_read, source_size, line)
    INSTANT = "instant"  # a point in time with its zone (started_at, finished_at)


@dataclass(frozen=True)
class Column:
    """One column: its name (a source column's as the published CSV header spells it) and its kind."""

    name: str
    kind: Kind
    required: bool = False  # NOT NULL / REQUIRED where a sink can say so
    # A file may lack it: a column the TLC added later (the course's CSV mirror never has it). Such columns
    # come last in a type's spec, in the order they appeared, so a table created before one existed gains
    # it at its end (ALTER TABLE ... ADD COLUMN) and ends up with the columns of a table created today.
    optional: bool = False

    @property
    def db_name(self) -> str:
        """The column name in PostgreSQL: unquoted in the course's DDL, hence lower-case."""
        return self.name.lower()


@dataclass(frozen=True)
class TaxiType:
    """A taxi type: its columns in file order, its pickup column and the fields of its row identity."""

    name: str
    columns: tuple[Column, ...]
    pickup: str
    dropoff: str
    key_fields: tuple[str, ...]
    amount_fields: tuple[str, ...] = ()

    @property
    def table(self) -> str:
        """Name of the main table."""
        return f"{self.name}_tripdata"

    @property
    def rejects_table(self) -> str:
        """Name of the table that keeps rejected rows."""
        return f"{self.name}_tripdata_rejects"

    @property
    def csv_columns(self) -> tuple[Column, ...]:
        """The columns every file has (the course's CSV mirror has exactly these)."""
        return tuple(c for c in self.columns if not c.optional)

    def column(self, name: str) -> Column:
        """The column called `name` (case-insensitive)."""
        return self._by_lower[name.lower()]

    @cached_property
    def _by_lower(self) -> dict[str, Column]:
        return {c.name.lower(): c for c in self.columns}

    def filename(self, month: str) -> str:
        """The uncompressed CSV name, which the tables record in `filename` (e.g. yellow_tripdata_2021-01.csv)."""
        return f"{self.name}_tripdata_{month}.csv"

    def parquet_name(self, month: object) -> str:
        """The name of the month's typed Parquet object in GCS (the BigQuery sink's)."""
        return f"{self.name}_tripdata_{month}.parquet"

    def staging_table(self, month: Month) -> str:
        """The month's own staging table, on either sink (e.g. yellow_tripdata_staging_2021_01)."""
        return f"{self.table}_staging_{month.year:04d}_{month.month:02d}"


def _cols(spec: str, optional: bool = False) -> tuple[Column, ...]:
    return tuple(
        Column(name, Kind(kind), optional=optional) for name, kind in (item.split(":") for item in spec.split())
    )


_MONEY = ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge", "total_amount")

YELLOW = TaxiType(
    name="yellow",
    columns=_cols(
        "VendorID:code tpep_pickup_datetime:timestamp tpep_dropoff_datetime:timestamp passenger_count:int "
        "trip_distance:float RatecodeID:code store_and_fwd_flag:text PULocationID:code DOLocationID:code "
        "payment_type:int fare_amount:float extra:float mta_tax:float tip_amount:float tolls_amount:float "
        "improvement_surcharge:float total_amount:float congestion_surcharge:float"
    )
    # The TLC's Parquet files only (tlc-parquet.md 1.1): airport_fee from 2011 (all null before 2020-11, spelt
    # Airport_fee from 2023-02), cbd_congestion_fee from 2025-01, request_source from 2026-06.
    + _cols("airport_fee:float cbd_congestion_fee:float request_source:text", optional=True),
    pickup="tpep_pickup_datetime",
    dropoff="tpep_dropoff_datetime",
    key_fields=(
        "VendorID",
        "tpep_pickup_datetime",
        "tpep_dropoff_datetime",
        "PULocationID",
        "DOLocationID",
        "fare_amount",
        "trip_distance",
    ),
    amount_fields=_MONEY,
)

GREEN = TaxiType(
    name="green",
    columns=_cols(
        "VendorID:code lpep_pickup_datetime:timestamp lpep_dropoff_datetime:timestamp store_and_fwd_flag:text "
        "RatecodeID:code PULocationID:code DOLocationID:code passenger_count:int trip_distance:float "
        "fare_amount:float extra:float mta_tax:float tip_amount:float tolls_amount:float ehail_fee:float "
        "improvement_surcharge:float total_amount:float payment_type:int trip_type:int congestion_surcharge:float"
    )
    # The TLC's Parquet files only (tlc-parquet.md 1.2): cbd_congestion_fee from 2025-01, request_source from 2026-06.
    + _cols("cbd_congestion_fee:float request_source:text", optional=True),
    pickup="lpep_pickup_datetime",
    dropoff="lpep_dropoff_datetime",
    key_fields=(
        "VendorID",
        "lpep_pickup_datetime",
        "lpep_dropoff_datetime",
        "PULocationID",
        "DOLocationID",
        "fare_amount",
        "trip_distance",
    ),
    amount_fields=_MONEY,
)

FHV = TaxiType(
    name="fhv",
    columns=_cols(
        "dispatching_base_num:text pickup_datetime:timestamp dropoff_datetime:timestamp PULocationID:code "
        "DOLocationID:code SR_Flag:code Affiliated_base_number:text"
    ),
    pickup="pickup_datetime",
    dropoff="dropoff_datetime",
    key_fields=(
        "dispatching_base_num",
        "pickup_datetime",
        "dropoff_datetime",
        "PULocationID",
        "DOLocationID",
        "SR_Flag",
        "Affiliated_base_number",
    ),
)

# High-Volume For-Hire Vehicle trips (Uber, Lyft, Via, Juno), from 2019-02; published as Parquet only.
FHVHV = TaxiType(
    name="fhvhv",
    columns=_cols(
        "hvfhs_license_num:text dispatching_base_num:text originating_base_num:text request_datetime:timestamp "
        "on_scene_datetime:timestamp pickup_datetime:timestamp dropoff_datetime:timestamp PULocationID:code "
        "DOLocationID:code trip_miles:float trip_time:int base_passenger_fare:float tolls:float bcf:float "
        "sales_tax:float congestion_surcharge:float airport_fee:float tips:float driver_pay:float "
        "shared_request_flag:text shared_match_flag:text access_a_ride_flag:text wav_request_flag:text "
        "wav_match_flag:text"
    )
    + _cols("cbd_congestion_fee:float", optional=True),
    pickup="pickup_datetime",
    dropoff="dropoff_datetime",
    # A trip as the data dictionary describes it: who (licence and base), when (request, pickup, dropoff to
    # the second), where (zones) and what (miles, fare). Two real trips agree on all of them only when they are
    # the same trip written twice; such repeats get their k-th ids like any other type's.
    key_fields=(
        "hvfhs_license_num",
        "dispatching_base_num",
        "request_datetime",
        "pickup_datetime",
        "dropoff_datetime",
        "PULocationID",
        "DOLocationID",
        "trip_miles",
        "base_passenger_fare",
    ),
    amount_fields=("base_passenger_fare", "tolls", "bcf", "sales_tax", "tips", "driver_pay"),
)

TAXI_TYPES: dict[str, TaxiType] = {t.name: t for t in (YELLOW, GREEN, FHV, FHVHV)}


def get_taxi(name: str) -> TaxiType:
    """The taxi type called `name`; raises UsageError naming the allowed values."""
    from taxi_loader.errors import UsageError

    try:
        return TAXI_TYPES[name.lower()]
    except KeyError:
        raise UsageError(f"unknown taxi type {name!r}; choose one of: {', '.join(TAXI_TYPES)}") from None
