"""The BigQuery side of the sink: bq-load (load job, staging table, MERGE), the ledger, the rejects table.

Main table <dataset>.<taxi>_tripdata, partitioned by the pickup day; the MERGE reads only the partitions of
the staged pickups (`_merge_statement`). No clustering: the MERGE reads every id of those partitions anyway,
and queries filter by date, which the partitioning serves. Every schema derives from `contract.py` through
`BQ_TYPE`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as time_of_day
from typing import TYPE_CHECKING, Any

from taxi_loader.contract import (
    ERROR_CHARS,
    LEDGER_COLUMNS,
    LEDGER_TABLE,
    REJECTS_COLUMNS,
    SUCCEEDED,
    LoadRecord,
    columns_to_add,
    ledger_row,
    main_columns,
)
from taxi_loader.errors import ConfigError
from taxi_loader.logs import get_logger
from taxi_loader.months import Month
from taxi_loader.source import RetryPolicy
from taxi_loader.taxis import Column, Kind, TaxiType
from taxi_loader.zones import ZONE_COLUMNS, ZONES_TABLE, Zone

from . import SINK
from .calls import google_errors, request, retrying
from .settings import BigQuerySettings, bigquery_client, storage_client

if TYPE_CHECKING:
    from google.cloud import bigquery

BQ_TYPE = {
    Kind.CODE: "STRING",
    Kind.INT: "INT64",
    Kind.TIMESTAMP: "TIMESTAMP",
    Kind.FLOAT: "FLOAT64",
    Kind.TEXT: "STRING",
    Kind.COUNT: "INT64",
    Kind.INSTANT: "TIMESTAMP",
}
_LEDGER_KIND = {c.name: c.kind for c in LEDGER_COLUMNS}
log = get_logger("taxi_loader")


def schema(columns: Sequence[Column]) -> list[bigquery.SchemaField]:
    """The BigQuery schema of a table of the contract (names as the files spell them)."""
    from google.cloud import bigquery

    return [
        bigquery.SchemaField(c.name, BQ_TYPE[c.kind], mode="REQUIRED" if c.required else "NULLABLE") for c in columns
    ]


@dataclass
class BqResult:
    """What bq-load did: the rows staged from the object, inserted, already present; the rejects loaded."""

    taxi: str
    month: str
    table: str
    job_id: str
    rows_staged: int
    rows_inserted: int
    rows_present: int
    rows_rejected: int


def bq_load(taxi: TaxiType, month: Month, settings: BigQuerySettings, retry: RetryPolicy = RetryPolicy()) -> BqResult:
    """Load the month's object into its staging table (deterministic job id), MERGE new rows, drop staging.

    The whole step is retried on a transient failure: the load job and the MERGE have ids of their own that a
    retry finds and adopts (a MERGE whose wait timed out may have run), so nothing runs twice. Staging is
    dropped afterwards, best effort (cleanup drops it too).
    """
    settings.need("project", "bucket", "dataset")
    with _bigquery_errors(settings, f"bq-load of {taxi.name} {month}", retry):
        for attempt in retrying(retry, f"bq-load of {taxi.name} {month}"):
            with attempt:
                result = _bq_load(taxi, month, settings)
    staging = f"{settings.dataset_id}.{taxi.staging_table(month)}"
    try:
        bigquery_client(settings).delete_table(staging, not_found_ok=True, **request(settings))
    except Exception as exc:  # noqa: BLE001 (the month is loaded: a staging table left is cleanup's)
        log.warning("staging table not dropped", table=staging, error=str(exc), taxi=taxi.name, month=str(month))
    return result


def _bq_load(taxi: TaxiType, month: Month, settings: BigQuerySettings) -> BqResult:
    from google.cloud import bigquery, storage  # type: ignore[attr-defined]

    client, call = bigquery_client(settings), request(settings)
    ds = settings.dataset_id
    main, staging = f"{ds}.{taxi.table}", f"{ds}.{taxi.staging_table(month)}"
    uri = f"gs://{settings.bucket}/{settings.object_name(taxi, month)}"
    tags = {"taxi": taxi.name, "month": str(month)}
    started = datetime.now(UTC)
    log.info("preparing the dataset", dataset=ds, at=settings.endpoint("bigquery"), **tags)
    _ensure_dataset(client, settings, call)
    table = bigquery.Table(main, schema=schema(main_columns(taxi)))
    table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field=taxi.pickup)
    _add_later_columns(client, client.create_table(table, exists_ok=True, **call), taxi, call)
    blob = storage.Blob.from_uri(uri, client=storage_client(settings))
    blob.reload(**call)
    log.info("loading the object into staging", object=uri, table=staging, **tags)
    # A 400 here is the object's data (BigQuery refused it): running the step again cannot help. Elsewhere it
    # is configuration (calls.google_errors).
    with _bigquery_errors(settings, f"loading {uri}", bad_request_is_data=True):
        job = _load_job(client, uri, staging, blob.md5_hash, taxi, month, call)
    staged = client.get_table(staging, **call).num_rows or 0
    log.info("merging new rows", table=main, rows_staged=staged, **tags)
    inserted = _merge(client, settings, taxi, month, f"{job}_merge", call)
    rejected = _load_rejects(client, settings, taxi, month, call)
    meta = blob.metadata or {}
    row = ledger_row(
        SINK,
        taxi,
        str(month),
        SUCCEEDED,
        source=meta.get("source") or uri,
        source_size=_int(meta.get("source_size")),
        source_sha256=meta.get("source_sha256"),
        rows_read=_int(meta.get("rows_read")),
        rows_rejected=_int(meta.get("rows_rejected")),
        rows_repeated=_int(meta.get("rows_repeated")),
        rows_inserted=inserted,
        rows_present=staged - inserted,
        rows_after=staged,
        started_at=started,
        finished_at=datetime.now(UTC),
    )
    _record(client, settings, row, call)
    return BqResult(taxi.name, str(month), main, job, staged, inserted, staged - inserted, rejected)


def _merge(
    client: bigquery.Client, settings: BigQuerySettings, taxi: TaxiType, month: Month, job_id: str, call: dict[str, Any]
) -> int:
    """Run (or adopt, when a retried step finds it) the MERGE of the staged month; return the rows inserted."""
    from google.api_core import exceptions as gexc

    statement, config = _merge_statement(client, settings, taxi, month, call)
    try:
        job: Any = client.query(statement, job_config=config, job_id=job_id, job_retry=None, **call)
    except gexc.Conflict:  # this step ran it before it was cut short: its count is the load's
        job = client.get_job(job_id, **call)
    return _finished(job, call).num_dml_affected_rows or 0


# Out-of-month pickups named one by one in the MERGE's filter; a file with more scans the whole table.
MAX_OUTSIDE_PICKUPS = 1000


def _merge_statement(
    client: bigquery.Client, settings: BigQuerySettings, taxi: TaxiType, month: Month, call: dict[str, Any]
) -> tuple[str, bigquery.QueryJobConfig]:
    """The MERGE of the staged month, and its parameters.

    Its ON clause limits the main table to the pickups the staged rows have: the month's days, and each
    out-of-month pickup by name. A row's id is a function of its pickup among other fields, so a row already
    loaded has the staged row's pickup: the filter loses no match, and as constants (parameters) on the
    partitioning column it lets BigQuery read the month's partitions only, not the whole table, which it bills.
    """
    from google.cloud import bigquery

    pickup = f"`{taxi.pickup}`"
    bounds = [
        bigquery.ScalarQueryParameter("first", "TIMESTAMP", datetime.combine(month.first_day, time_of_day.min, UTC)),
        bigquery.ScalarQueryParameter(
            "after", "TIMESTAMP", datetime.combine(month.next().first_day, time_of_day.min, UTC)
        ),
    ]
    outside_query = (
        f"SELECT DISTINCT {pickup} AS p FROM {settings.quoted(taxi.staging_table(month))} "
        f"WHERE {pickup} IS NULL OR NOT ({pickup} >= @first AND {pickup} < @after) LIMIT {MAX_OUTSIDE_PICKUPS + 1}"
    )
    job = client.query(outside_query, job_config=bigquery.QueryJobConfig(query_parameters=bounds), **call)
    outside = [row["p"] for row in _finished(job, call).result(**call, job_retry=None)]
    params = list(bounds)
    within = f"(T.{pickup} >= @first AND T.{pickup} < @after"
    if len(outside) > MAX_OUTSIDE_PICKUPS:
        log.warning(
            "the MERGE reads the whole table: too many pickups outside the month",
            taxi=taxi.name,
            month=str(month),
            outside=f">{MAX_OUTSIDE_PICKUPS}",
        )
        within = "(TRUE"
    else:
        named = [p for p in outside if p is not None]
        params += [bigquery.ScalarQueryParameter(f"o{i}", "TIMESTAMP", p) for i, p in enumerate(named)]
        if named:
            within += f" OR T.{pickup} IN ({', '.join(f'@o{i}' for i in range(len(named)))})"
        if None in outside:
            within += f" OR T.{pickup} IS NULL"
    cols = [f"`{c.name}`" for c in main_columns(taxi)]
    statement = (
        f"MERGE {settings.quoted(taxi.table)} T USING {settings.quoted(taxi.staging_table(month))} S "
        f"ON T.unique_row_id = S.unique_row_id AND {within}) "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join('S.' + c for c in cols)})"
    )
    return statement, bigquery.QueryJobConfig(query_parameters=params)


def _ensure_dataset(client: bigquery.Client, settings: BigQuerySettings, call: dict[str, Any]) -> None:
    from google.cloud import bigquery

    dataset = bigquery.Dataset(settings.dataset_id)
    dataset.location = settings.location
    client.create_dataset(dataset, exists_ok=True, **call)


def _bigquery_errors(
    settings: BigQuerySettings, what: str, retry: RetryPolicy = RetryPolicy(attempts=1), bad_request_is_data=False
) -> Any:
    """`google_errors` with what to do about a missing object, dataset or permission on the BigQuery side."""
    return google_errors(
        what,
        settings.endpoint("bigquery"),
        not_found="run upload-gcs first, or check GCP_BUCKET_NAME / GCP_DATASET",
        forbidden=f"give the service account BigQuery Data Editor and BigQuery Job User on {settings.dataset_id}",
        bad_request_is_data=bad_request_is_data,
        attempts=retry.attempts,
    )


def _finished(job: Any, call: dict[str, Any]) -> Any:
    """Wait for a BigQuery job, however long it runs, with each poll bounded by the request timeout (the
    client's own wait makes one unbounded request); raise the job's error if it failed."""
    from google.cloud.bigquery import QueryJob

    pause = 0.1
    while not job.done(**call):
        time.sleep(pause)
        pause = min(pause * 2, 5.0)
    # a query job would otherwise re-run itself on some errors (job_retry): retries are the step's to make
    job.result(**call, **({"job_retry": None} if isinstance(job, QueryJob) else {}))
    return job


def _add_later_columns(client: bigquery.Client, table: bigquery.Table, taxi: TaxiType, call: dict[str, Any]) -> None:
    """Give a main table created before the TLC added a column (`Column.optional`) that column, at its end
    (NULL for the rows it holds): a schema update, which BigQuery allows for a new NULLABLE field."""
    missing = columns_to_add(taxi, (f.name for f in table.schema), table.full_table_id, "choose another GCP_DATASET")
    added = schema(missing)
    if added:
        table.schema = [*table.schema, *added]
        client.update_table(table, ["schema"], **call)


def _int(text: str | None) -> int | None:
    return int(text) if text else None


def _load_rejects(
    client: bigquery.Client, settings: BigQuerySettings, taxi: TaxiType, month: Month, call: dict[str, Any]
) -> int:
    """Replace the month's rows in <taxi>_tripdata_rejects with those of its rejects object, if any."""
    from google.cloud import bigquery

    table = bigquery.Table(f"{settings.dataset_id}.{taxi.rejects_table}", schema=schema(REJECTS_COLUMNS))
    client.create_table(table, exists_ok=True, **call)
    param = bigquery.ScalarQueryParameter("filename", "STRING", taxi.filename(str(month)))
    delete = client.query(
        f"DELETE FROM {settings.quoted(taxi.rejects_table)} WHERE filename = @filename",
        job_config=bigquery.QueryJobConfig(query_parameters=[param]),
        **call,
    )
    _finished(delete, call)
    blob = storage_client(settings).bucket(settings.bucket).blob(settings.rejects_object_name(taxi, month))
    if not blob.exists(**call):
        return 0
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET, write_disposition=bigquery.WriteDisposition.WRITE_APPEND
    )
    uri = f"gs://{settings.bucket}/{settings.rejects_object_name(taxi, month)}"
    job = _finished(client.load_table_from_uri(uri, str(table), job_config=config, **call), call)
    return job.output_rows or 0


def _load_job(
    client: bigquery.Client,
    uri: str,
    staging: str,
    md5: str | None,
    taxi: TaxiType,
    month: Month,
    call: dict[str, Any],
) -> str:
    """Run (or adopt) the load job of this object into the staging table; return its id.

    The id is a function of the object's content, so a retried step finds the job already running or done
    and waits for it instead of loading twice. A job done earlier whose staging table is gone (a finished
    load's cleanup) is not adopted: the next numbered id runs afresh.
    """
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    digest = hashlib.sha1(f"{uri}|{md5}|{staging}".encode()).hexdigest()[:16]
    base = f"taxi_loader_{taxi.name}_{month.year:04d}_{month.mm}_{digest}"
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        schema=schema(main_columns(taxi)),
    )
    for n in range(100):
        job_id = base if n == 0 else f"{base}_{n}"
        job: Any
        try:
            job = client.load_table_from_uri(uri, staging, job_id=job_id, job_config=config, **call)
        except gexc.Conflict:
            job = client.get_job(job_id, **call)
            if job.state == "DONE":
                try:
                    client.get_table(staging, **call)
                except gexc.NotFound:
                    continue
        _finished(job, call)
        return job_id
    raise ConfigError(
        f"{taxi.name} {month}: 100 load jobs of this object already ran and none left a staging table; "
        "look at the dataset's jobs"
    )


def _ensure_ledger(client: bigquery.Client, settings: BigQuerySettings, call: dict[str, Any]) -> None:
    """Create the dataset's ledger with the contract's columns, or add the columns a ledger of an earlier
    taxi-loader lacks (it kept the rows of the file as `rows_staged`: they are copied to `rows_after`)."""
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    ledger = f"{settings.dataset_id}.{LEDGER_TABLE}"
    table = client.create_table(bigquery.Table(ledger, schema=schema(LEDGER_COLUMNS)), exists_ok=True, **call)
    have = {f.name for f in table.schema}
    missing = [c for c in LEDGER_COLUMNS if c.name not in have]
    if not missing:
        return
    table.schema = [*table.schema, *(bigquery.SchemaField(c.name, BQ_TYPE[c.kind]) for c in missing)]  # NULLABLE
    try:
        client.update_table(table, ["schema"], **call)
    except (gexc.PreconditionFailed, gexc.Conflict, gexc.BadRequest):
        # Another month of the same backfill added them first; anything else shows below.
        if {c.name for c in LEDGER_COLUMNS} - {f.name for f in client.get_table(ledger, **call).schema}:
            raise
    if "rows_staged" in have:
        update = f"UPDATE {settings.quoted(LEDGER_TABLE)} SET rows_after = rows_staged WHERE rows_after IS NULL"
        _finished(client.query(update, **call), call)


def _record(client: bigquery.Client, settings: BigQuerySettings, values: dict[str, Any], call: dict[str, Any]) -> None:
    """Append one row to the dataset's ledger (created with the contract's columns when missing)."""
    from google.cloud import bigquery

    _ensure_ledger(client, settings, call)
    params = [bigquery.ScalarQueryParameter(k, BQ_TYPE[_LEDGER_KIND[k]], v) for k, v in values.items()]
    insert = client.query(
        f"INSERT INTO {settings.quoted(LEDGER_TABLE)} ({', '.join(values)}) "
        f"VALUES ({', '.join('@' + k for k in values)})",
        job_config=bigquery.QueryJobConfig(query_parameters=params),
        **call,
    )
    _finished(insert, call)


def record_failure(
    settings: BigQuerySettings, taxi: TaxiType, month: Month, source: str | None, status: str, error: str
) -> None:
    """Note a failed or interrupted load in the dataset's ledger, as the PostgreSQL sink does: one attempt,
    bounded (the failure being recorded may be the very network that is gone)."""
    if not (settings.project and settings.dataset):
        return
    now = datetime.now(UTC)
    row = ledger_row(SINK, taxi, str(month), status, source=source, error=error[:ERROR_CHARS], started_at=now)
    call = {"retry": None, "timeout": min(settings.request_timeout, 15.0)}
    try:
        client = bigquery_client(settings)
        _ensure_dataset(client, settings, call)  # a month can fail before its first bq-load made the dataset
        _record(client, settings, {**row, "finished_at": now}, call)
    except Exception as exc:  # noqa: BLE001 (bookkeeping must not mask the failure it records)
        log.debug("could not record the failure in the BigQuery ledger", error=str(exc))


def drop_staging(settings: BigQuerySettings, taxi: TaxiType, month: Month) -> bool:
    """Drop the month's staging table when the dataset is configured; return whether that was tried."""
    if not (settings.project and settings.dataset):
        return False
    staging = f"{settings.dataset_id}.{taxi.staging_table(month)}"
    with _bigquery_errors(settings, f"dropping {staging}"):
        bigquery_client(settings).delete_table(staging, not_found_ok=True, **request(settings))
    return True


def last_loads(
    settings: BigQuerySettings,
    taxis: Sequence[TaxiType],
    month: Month | None = None,
    retry: RetryPolicy = RetryPolicy(),
) -> list[LoadRecord]:
    """The last load of every (taxi, month) of `taxis` (of just `month` when given) from the dataset's ledger."""
    from google.cloud import bigquery

    settings.need("project", "dataset")
    client, call = bigquery_client(settings), request(settings)
    params: list[Any] = [bigquery.ArrayQueryParameter("taxis", "STRING", [t.name for t in taxis])]
    where = "taxi IN UNNEST(@taxis)"
    if month:
        params.append(bigquery.ScalarQueryParameter("month", "STRING", str(month)))
        where += " AND month = @month"
    with _bigquery_errors(settings, f"reading the ledger of {settings.dataset_id}", retry):
        for attempt in retrying(retry, "reading the BigQuery ledger"):
            with attempt:
                return _last_loads(client, call, settings, params, where)
    raise AssertionError("unreachable: retrying either returns or raises")


def _last_loads(
    client: bigquery.Client, call: dict[str, Any], settings: BigQuerySettings, params: list[Any], where: str
) -> list[LoadRecord]:
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    try:
        have = {f.name for f in client.get_table(f"{settings.dataset_id}.{LEDGER_TABLE}", **call).schema}
    except gexc.NotFound:  # no dataset or no ledger yet: nothing loaded
        return []
    # A ledger of an earlier taxi-loader kept the rows as rows_staged: read it as it is (a load updates it).
    if "rows_after" not in have:
        rows_after = "rows_staged"
    elif "rows_staged" in have:
        rows_after = "COALESCE(rows_after, rows_staged)"
    else:
        rows_after = "rows_after"
    source = "source" if "source" in have else "CAST(NULL AS STRING) AS source"
    query = (
        f"SELECT taxi, month, status, {rows_after} AS rows_after, source_size, source_sha256, finished_at, {source} "
        "FROM ("
        "  SELECT *, ROW_NUMBER() OVER (PARTITION BY taxi, month ORDER BY finished_at DESC) AS rn"
        f"  FROM {settings.quoted(LEDGER_TABLE)} WHERE {where}) WHERE rn = 1"
    )
    job = client.query(query, job_config=bigquery.QueryJobConfig(query_parameters=params), **call)
    rows = _finished(job, call).result(**call, job_retry=None)
    return [
        LoadRecord(
            r["taxi"],
            r["month"],
            r["status"],
            r["rows_after"],
            r["source_size"],
            r["source_sha256"],
            r["finished_at"].isoformat(timespec="seconds") if r["finished_at"] else None,
            r["source"],
        )
        for r in rows
    ]


def replace_zones(settings: BigQuerySettings, zones: Sequence[Zone], retry: RetryPolicy = RetryPolicy()) -> str:
    """Make `zones` the whole of <dataset>.taxi_zone_lookup: a Parquet object in the bucket, loaded with
    WRITE_TRUNCATE (one job: a reader sees the old table or the new one). Returns the table's name."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from google.cloud import bigquery

    from taxi_loader.batches import arrow_schema

    settings.need("project", "bucket", "dataset")
    client = bigquery_client(settings)
    table = f"{settings.dataset_id}.{ZONES_TABLE}"
    name = f"{settings.prefix}/misc/{ZONES_TABLE}.parquet"
    buf = io.BytesIO()
    columns = list(zip(*zones, strict=True))
    pq.write_table(pa.Table.from_arrays([pa.array(c) for c in columns], schema=arrow_schema(ZONE_COLUMNS)), buf)
    call = request(settings)
    with _bigquery_errors(settings, f"loading the zones into {table}", retry):
        for attempt in retrying(retry, "loading the zones"):
            with attempt:
                _ensure_dataset(client, settings, call)
                storage_client(settings).bucket(settings.bucket).blob(name).upload_from_string(buf.getvalue(), **call)
                config = bigquery.LoadJobConfig(
                    source_format=bigquery.SourceFormat.PARQUET,
                    write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
                    schema=schema(ZONE_COLUMNS),
                )
                uri = f"gs://{settings.bucket}/{name}"
                _finished(client.load_table_from_uri(uri, table, job_config=config, **call), call)
    return table


def zone_count(settings: BigQuerySettings, retry: RetryPolicy = RetryPolicy()) -> int | None:
    """The rows of <dataset>.taxi_zone_lookup; None when there is no such table."""
    from google.api_core import exceptions as gexc

    settings.need("project", "dataset")
    table = f"{settings.dataset_id}.{ZONES_TABLE}"
    with _bigquery_errors(settings, f"looking for {table}", retry):
        for attempt in retrying(retry, "looking for the zone lookup"):
            with attempt:
                try:
                    return bigquery_client(settings).get_table(table, **request(settings)).num_rows or 0
                except gexc.NotFound:
                    return None
    raise AssertionError("unreachable: retrying either returns or raises")
