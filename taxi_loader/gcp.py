"""The Google Cloud sink: upload-gcs (typed Parquet object) and bq-load (load job, staging table, MERGE).

Object: gs://<bucket>/<prefix>/<taxi>/<taxi>_tripdata_YYYY-MM.parquet, the raw zone (kept after a load).
Main table <dataset>.<taxi>_tripdata, partitioned by the pickup day; no clustering: the loader's own MERGE
joins on unique_row_id over the whole table, which clustering does not prune, and queries filter by date,
which the partitioning already serves. Ids are final in the object (computed once, in Python, the twin of
PostgreSQL's), so both sinks hold the same unique_row_id for the same row.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from taxi_loader import __version__
from taxi_loader.errors import ConfigError, TransientError
from taxi_loader.months import Month
from taxi_loader.parquet import ARROW_TYPE, ParquetResult, write_month_parquet
from taxi_loader.source import RetryPolicy
from taxi_loader.taxis import Kind, TaxiType

BQ_TYPE = {
    Kind.CODE: "STRING",
    Kind.INT: "INT64",
    Kind.TIMESTAMP: "TIMESTAMP",
    Kind.FLOAT: "FLOAT64",
    Kind.TEXT: "STRING",
}
assert set(BQ_TYPE) == set(ARROW_TYPE)
LEDGER = "taxi_loader_ledger"


@dataclass(frozen=True)
class GcpSettings:
    """Where the cloud path writes; the names in brackets are the settings users keep in Kestra's KV store."""

    project: str | None = None  # GCP_PROJECT_ID
    location: str | None = None  # GCP_LOCATION
    bucket: str | None = None  # GCP_BUCKET_NAME
    dataset: str | None = None  # GCP_DATASET
    prefix: str = "taxi"
    credentials_json: str | None = None  # GCP_CREDS: the service-account JSON itself
    storage_endpoint: str | None = None  # STORAGE_EMULATOR_HOST
    bigquery_endpoint: str | None = None  # BIGQUERY_EMULATOR_HOST
    max_rejects: str = "0.1%"
    drop_duplicates: bool = False

    def need(self, *names: str) -> None:
        """Raise ConfigError naming every missing setting among `names`."""
        env = {
            "project": "GCP_PROJECT_ID",
            "location": "GCP_LOCATION",
            "bucket": "GCP_BUCKET_NAME",
            "dataset": "GCP_DATASET",
        }
        missing = [env[n] for n in names if not getattr(self, n)]
        if missing:
            raise ConfigError(
                f"missing setting(s) {', '.join(missing)}: set them in the environment (or Kestra's KV "
                "store) or pass --project / --location / --bucket / --dataset"
            )

    def object_name(self, taxi: TaxiType, month: Month) -> str:
        return f"{self.prefix}/{taxi.name}/{taxi.parquet_name(month)}"

    def rejects_object_name(self, taxi: TaxiType, month: Month) -> str:
        return f"{self.prefix}/{taxi.name}/{taxi.name}_tripdata_{month}.rejects.parquet"


def _credentials(settings: GcpSettings, endpoint: str | None):
    from google.auth.credentials import AnonymousCredentials

    if endpoint:
        return AnonymousCredentials()
    if settings.credentials_json:
        from google.oauth2 import service_account

        try:
            return service_account.Credentials.from_service_account_info(json.loads(settings.credentials_json))
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"GCP_CREDS is not a service-account JSON key ({exc.__class__.__name__})") from None
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return google.auth.default()[0]
    except DefaultCredentialsError:
        raise ConfigError(
            "no Google Cloud credentials: set GCP_CREDS to the service-account JSON or "
            "GOOGLE_APPLICATION_CREDENTIALS to its file"
        ) from None


def storage_client(settings: GcpSettings):
    from google.cloud import storage

    options = {"api_endpoint": settings.storage_endpoint} if settings.storage_endpoint else None
    return storage.Client(
        project=settings.project, credentials=_credentials(settings, settings.storage_endpoint), client_options=options
    )


def bigquery_client(settings: GcpSettings):
    from google.cloud import bigquery

    options = {"api_endpoint": settings.bigquery_endpoint} if settings.bigquery_endpoint else None
    return bigquery.Client(
        project=settings.project,
        location=settings.location,
        credentials=_credentials(settings, settings.bigquery_endpoint),
        client_options=options,
    )


def _cloud_errors(retry: RetryPolicy):
    """tenacity retrying for transient Google API errors; others pass through."""
    from google.api_core import exceptions as gexc

    return retry.retrying(
        (
            gexc.ServiceUnavailable,
            gexc.InternalServerError,
            gexc.TooManyRequests,
            gexc.GatewayTimeout,
            ConnectionError,
            TimeoutError,
        )
    )


def _md5_b64(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


@dataclass
class UploadResult:
    taxi: str
    month: str
    object: str
    uploaded: bool
    rows_read: int
    rows_written: int
    rows_repeated: int
    rows_dropped: int
    rows_rejected: int
    source_sha256: str


def upload_gcs(
    source: Path,
    taxi: TaxiType,
    month: Month,
    settings: GcpSettings,
    data_dir: Path,
    retry: RetryPolicy = RetryPolicy(),
) -> UploadResult:
    """Write the month as typed Parquet and upload it (resumable); an identical object is not uploaded again."""
    from google.api_core import exceptions as gexc

    settings.need("bucket")
    data_dir.mkdir(parents=True, exist_ok=True)
    local = data_dir / taxi.parquet_name(month)
    result: ParquetResult = write_month_parquet(
        source, taxi, str(month), local, settings.max_rejects, settings.drop_duplicates
    )
    name = settings.object_name(taxi, month)
    md5 = _md5_b64(local)
    client = storage_client(settings)
    uploaded = False
    try:
        for attempt in _cloud_errors(retry):
            with attempt:
                bucket = client.bucket(settings.bucket)
                blob = bucket.get_blob(name)
                if blob is None or blob.md5_hash != md5:
                    blob = bucket.blob(name, chunk_size=8 << 20)  # resumable, in 8 MiB chunks
                    blob.metadata = {
                        "source_sha256": result.source_sha256,
                        "source_size": str(result.source_size),
                        "rows": str(result.rows_written),
                    }
                    blob.upload_from_filename(str(local), checksum="md5")
                    uploaded = True
                _upload_rejects(bucket, settings.rejects_object_name(taxi, month), result.rejects, taxi, month)
    except gexc.NotFound:
        raise ConfigError(
            f"bucket gs://{settings.bucket} not found: create it (flow 04_gcp_setup, or "
            f"`gcloud storage buckets create gs://{settings.bucket}`) or fix GCP_BUCKET_NAME"
        ) from None
    except gexc.Forbidden as exc:
        raise ConfigError(
            f"no permission to write gs://{settings.bucket}/{name}: give the service account "
            f"Storage Object Admin on the bucket ({exc.message})"
        ) from None
    except gexc.GoogleAPICallError as exc:
        raise TransientError(f"upload of gs://{settings.bucket}/{name} failed: {exc}; run the command again") from None
    return UploadResult(
        taxi.name,
        str(month),
        f"gs://{settings.bucket}/{name}",
        uploaded,
        result.rows_read,
        result.rows_written,
        result.rows_repeated,
        result.rows_dropped,
        len(result.rejects),
        result.source_sha256,
    )


REJECTS_SCHEMA = [
    ("filename", "STRING"),
    ("line", "INT64"),
    ("column_name", "STRING"),
    ("reason", "STRING"),
    ("raw_line", "STRING"),
]


def _upload_rejects(bucket, name: str, rejects: list, taxi: TaxiType, month: Month) -> None:
    """The month's rejected rows as a small Parquet object beside the data (removed when there are none)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    blob = bucket.blob(name)
    if not rejects:
        if blob.exists():
            blob.delete()
        return
    filename = taxi.filename(str(month))
    table = pa.table(
        {
            "filename": [filename] * len(rejects),
            "line": [r.line for r in rejects],
            "column_name": [r.column for r in rejects],
            "reason": [r.reason for r in rejects],
            "raw_line": [r.raw for r in rejects],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    blob.upload_from_string(buf.getvalue(), content_type="application/octet-stream")


@dataclass
class BqResult:
    taxi: str
    month: str
    table: str
    job_id: str
    rows_staged: int
    rows_inserted: int
    rows_present: int
    rows_rejected: int


def bq_schema(taxi: TaxiType):
    from google.cloud import bigquery

    fields = [
        bigquery.SchemaField("unique_row_id", "STRING", mode="REQUIRED"),
        bigquery.SchemaField("filename", "STRING"),
    ]
    return fields + [bigquery.SchemaField(c.name, BQ_TYPE[c.kind]) for c in taxi.columns]


def bq_load(taxi: TaxiType, month: Month, settings: GcpSettings, retry: RetryPolicy = RetryPolicy()) -> BqResult:
    """Load the month's object into its staging table (deterministic job id), MERGE new rows, drop staging."""
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery, storage

    settings.need("project", "bucket", "dataset")
    client = bigquery_client(settings)
    ds = f"{settings.project}.{settings.dataset}"
    main, staging = f"{ds}.{taxi.table}", f"{ds}.{taxi.staging_table(month)}"
    uri = f"gs://{settings.bucket}/{settings.object_name(taxi, month)}"
    started = datetime.now(UTC)
    try:
        dataset = bigquery.Dataset(ds)
        dataset.location = settings.location
        client.create_dataset(dataset, exists_ok=True)
        table = bigquery.Table(main, schema=bq_schema(taxi))
        table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field=taxi.pickup)
        client.create_table(table, exists_ok=True)
        blob = storage.Blob.from_uri(uri, client=storage_client(settings))
        blob.reload()
        job = _load_job(client, uri, staging, blob.md5_hash, taxi, month, settings)
        staged = client.get_table(staging).num_rows
        cols = ", ".join(f"`{c}`" for c in ["unique_row_id", "filename", *[c.name for c in taxi.columns]])
        merge = client.query(
            f"MERGE `{main}` T USING `{staging}` S ON T.unique_row_id = S.unique_row_id "
            f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({', '.join('S.' + c for c in cols.split(', '))})"
        )
        merge.result()
        inserted = merge.num_dml_affected_rows or 0
        rejected = _load_rejects(client, settings, ds, taxi, month)
        _record(client, ds, taxi, month, uri, staged, inserted, started, blob.md5_hash, blob.metadata or {})
        client.delete_table(staging, not_found_ok=True)
    except gexc.NotFound as exc:
        raise ConfigError(
            f"{taxi.name} {month}: {exc.message}; run upload-gcs first, or check GCP_BUCKET_NAME / GCP_DATASET"
        ) from None
    except gexc.Forbidden as exc:
        raise ConfigError(
            f"no permission in BigQuery dataset {ds}: give the service account BigQuery Data Editor "
            f"and Job User ({exc.message})"
        ) from None
    except (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.TooManyRequests) as exc:
        raise TransientError(f"BigQuery failed for {taxi.name} {month}: {exc}; run the command again") from None
    return BqResult(taxi.name, str(month), main, job, staged, inserted, staged - inserted, rejected)


def _load_rejects(client, settings: GcpSettings, ds: str, taxi: TaxiType, month: Month) -> int:
    """Replace the month's rows in <taxi>_tripdata_rejects with those of its rejects object, if any."""
    from google.cloud import bigquery

    table = bigquery.Table(f"{ds}.{taxi.rejects_table}", schema=[bigquery.SchemaField(n, t) for n, t in REJECTS_SCHEMA])
    client.create_table(table, exists_ok=True)
    param = bigquery.ScalarQueryParameter("filename", "STRING", taxi.filename(str(month)))
    client.query(
        f"DELETE FROM `{table}` WHERE filename = @filename",
        job_config=bigquery.QueryJobConfig(query_parameters=[param]),
    ).result()
    blob = storage_client(settings).bucket(settings.bucket).blob(settings.rejects_object_name(taxi, month))
    if not blob.exists():
        return 0
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET, write_disposition=bigquery.WriteDisposition.WRITE_APPEND
    )
    uri = f"gs://{settings.bucket}/{settings.rejects_object_name(taxi, month)}"
    job = client.load_table_from_uri(uri, str(table), job_config=config)
    job.result()
    return job.output_rows or 0


def _load_job(client, uri: str, staging: str, md5: str, taxi: TaxiType, month: Month, settings: GcpSettings) -> str:
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
        schema=bq_schema(taxi),
    )
    for n in range(100):
        job_id = base if n == 0 else f"{base}_{n}"
        try:
            job = client.load_table_from_uri(uri, staging, job_id=job_id, job_config=config)
        except gexc.Conflict:
            job = client.get_job(job_id)
            if job.state == "DONE":
                try:
                    client.get_table(staging)
                except gexc.NotFound:
                    continue
        job.result()
        return job_id
    raise TransientError(f"{taxi.name} {month}: could not find a free load job id after 100 tries")


def _record(
    client,
    ds: str,
    taxi: TaxiType,
    month: Month,
    uri: str,
    staged: int,
    inserted: int,
    started: datetime,
    md5: str,
    source: dict,
) -> None:
    from google.cloud import bigquery

    ledger = bigquery.Table(
        f"{ds}.{LEDGER}",
        schema=[
            bigquery.SchemaField(n, t)
            for n, t in [
                ("sink", "STRING"),
                ("taxi", "STRING"),
                ("month", "STRING"),
                ("filename", "STRING"),
                ("source", "STRING"),
                ("object_md5", "STRING"),
                ("source_size", "INT64"),
                ("source_sha256", "STRING"),
                ("rows_staged", "INT64"),
                ("rows_inserted", "INT64"),
                ("rows_present", "INT64"),
                ("started_at", "TIMESTAMP"),
                ("finished_at", "TIMESTAMP"),
                ("status", "STRING"),
                ("loader_version", "STRING"),
            ]
        ],
    )
    client.create_table(ledger, exists_ok=True)
    params = [
        bigquery.ScalarQueryParameter("taxi", "STRING", taxi.name),
        bigquery.ScalarQueryParameter("month", "STRING", str(month)),
        bigquery.ScalarQueryParameter("filename", "STRING", taxi.filename(str(month))),
        bigquery.ScalarQueryParameter("source", "STRING", uri),
        bigquery.ScalarQueryParameter("md5", "STRING", md5),
        bigquery.ScalarQueryParameter(
            "size", "INT64", int(source["source_size"]) if source.get("source_size") else None
        ),
        bigquery.ScalarQueryParameter("sha", "STRING", source.get("source_sha256")),
        bigquery.ScalarQueryParameter("staged", "INT64", staged),
        bigquery.ScalarQueryParameter("inserted", "INT64", inserted),
        bigquery.ScalarQueryParameter("present", "INT64", staged - inserted),
        bigquery.ScalarQueryParameter("started", "TIMESTAMP", started),
        bigquery.ScalarQueryParameter("version", "STRING", __version__),
    ]
    client.query(
        f"INSERT INTO `{ds}.{LEDGER}` (sink, taxi, month, filename, source, object_md5, source_size, "
        "source_sha256, rows_staged, rows_inserted, rows_present, started_at, finished_at, status, loader_version) "
        "VALUES ('bigquery', @taxi, @month, @filename, @source, @md5, @size, @sha, @staged, @inserted, @present, "
        "@started, CURRENT_TIMESTAMP(), 'succeeded', @version)",
        job_config=bigquery.QueryJobConfig(query_parameters=params),
    ).result()


def cleanup(taxi: TaxiType, month: Month, settings: GcpSettings, data_dir: Path, remove_object: bool) -> dict:
    """Drop the month's staging table, delete its local Parquet, and with `remove_object` the GCS object."""
    removed = []
    local = data_dir / taxi.parquet_name(month)
    for p in (local, local.with_name(local.name + ".part")):
        if p.exists():
            p.unlink()
            removed.append(str(p))
    dropped = False
    if settings.project and settings.dataset:
        client = bigquery_client(settings)
        staging = f"{settings.project}.{settings.dataset}.{taxi.staging_table(month)}"
        client.delete_table(staging, not_found_ok=True)
        dropped = True
    object_removed = False
    if remove_object:
        settings.need("bucket")
        blob = storage_client(settings).bucket(settings.bucket).blob(settings.object_name(taxi, month))
        if blob.exists():
            blob.delete()
            object_removed = True
    return {
        "taxi": taxi.name,
        "month": str(month),
        "staging_dropped": dropped,
        "files_removed": removed,
        "object_removed": object_removed,
    }


def ledger_rows(settings: GcpSettings, taxis: list[TaxiType]) -> list[dict]:
    """The last load of every (taxi, month) from the dataset's ledger: status, rows, source, when."""
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    settings.need("project", "dataset")
    client = bigquery_client(settings)
    query = (
        "SELECT taxi, month, status, rows_staged, source_size, source_sha256, finished_at FROM ("
        "  SELECT *, ROW_NUMBER() OVER (PARTITION BY taxi, month ORDER BY finished_at DESC) AS rn"
        f"  FROM `{settings.project}.{settings.dataset}.{LEDGER}` WHERE taxi IN UNNEST(@taxis)) WHERE rn = 1"
    )
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter("taxis", "STRING", [t.name for t in taxis])]
    )
    try:
        rows = client.query(query, job_config=config).result()
    except gexc.NotFound:
        return []
    return [
        {
            "taxi": r["taxi"],
            "month": r["month"],
            "status": r["status"],
            "rows": r["rows_staged"],
            "source_size": r["source_size"],
            "source_sha256": r["source_sha256"],
            "finished_at": r["finished_at"].isoformat(timespec="seconds") if r["finished_at"] else None,
        }
        for r in rows
    ]
