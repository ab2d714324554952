"""The GCS side of the BigQuery sink: the month as a typed Parquet object with final ids (its stage step).

Object: gs://<bucket>/<prefix>/<taxi>/<taxi>_tripdata_YYYY-MM.parquet, the raw zone (kept after a load), and
beside it the month's rejected rows when there are any. Ids are final in the object (computed once, the
twin of PostgreSQL's), so every sink holds the same unique_row_id for the same row.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taxi_loader.months import Month
from taxi_loader.reader import Rejects
from taxi_loader.source import RetryPolicy
from taxi_loader.taxis import TaxiType

from .calls import google_errors, request, retrying
from .parquet import ParquetResult, rejects_table, write_month_parquet
from .settings import BigQuerySettings, storage_client


@dataclass
class UploadResult:
    """What upload-gcs wrote: the object, the file's rows and what became of them."""

    taxi: str
    month: str
    object: str
    uploaded: bool  # False when an identical object was already there
    rows_read: int
    rows_written: int
    rows_repeated: int
    rows_dropped: int
    rows_rejected: int
    source_sha256: str


def _md5_b64(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


def _local_parquet(data_dir: Path, taxi: TaxiType, month: Month) -> Path:
    # Not the object's own name: a month downloaded from the TLC is a .parquet file of that name already.
    return data_dir / f"{taxi.name}_tripdata_{month}.typed.parquet"


def upload_gcs(
    source: Path,
    taxi: TaxiType,
    month: Month,
    settings: BigQuerySettings,
    data_dir: Path,
    max_rejects: str,
    drop_duplicates: bool = False,
    retry: RetryPolicy = RetryPolicy(),
    origin: str = "",
) -> UploadResult:
    """Write the month as typed Parquet and upload it (resumable); an identical object is not uploaded again.

    The object's metadata carries where the file came from (`origin`), its size and checksum and the file's
    counts, which bq-load records in the ledger.
    """
    settings.need("bucket")
    data_dir.mkdir(parents=True, exist_ok=True)
    local = _local_parquet(data_dir, taxi, month)
    result: ParquetResult = write_month_parquet(source, taxi, str(month), local, max_rejects, drop_duplicates)
    name = settings.object_name(taxi, month)
    md5 = _md5_b64(local)
    client = storage_client(settings)
    call = request(settings)
    uploaded = False
    with _storage_errors(settings, f"upload of gs://{settings.bucket}/{name}", retry):
        for attempt in retrying(retry, "upload to GCS"):
            with attempt:
                bucket = client.bucket(settings.bucket)
                blob = bucket.get_blob(name, **call)
                if blob is None or blob.md5_hash != md5:
                    blob = bucket.blob(name, chunk_size=8 << 20)  # resumable, in 8 MiB chunks
                    blob.metadata = {
                        "source": origin,
                        "source_sha256": result.source_sha256,
                        "source_size": str(result.source_size),
                        "rows": str(result.rows_written),
                        "rows_read": str(result.rows_read),
                        "rows_rejected": str(len(result.rejects)),
                        "rows_repeated": str(result.rows_repeated),
                    }
                    blob.upload_from_filename(str(local), checksum="md5", **call)
                    uploaded = True
                _upload_rejects(bucket, settings.rejects_object_name(taxi, month), result.rejects, taxi, month, call)
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


def _storage_errors(settings: BigQuerySettings, what: str, retry: RetryPolicy = RetryPolicy(attempts=1)) -> Any:
    """`google_errors` with what to do about a missing bucket or a missing permission on it."""
    return google_errors(
        what,
        settings.endpoint("storage"),
        not_found=f"is there a bucket gs://{settings.bucket}? create it (flow 04_gcp_setup, or `gcloud storage "
        f"buckets create gs://{settings.bucket}`) or fix GCP_BUCKET_NAME",
        forbidden=f"give the service account Storage Object Admin on gs://{settings.bucket}",
        attempts=retry.attempts,
    )


def _upload_rejects(
    bucket: Any, name: str, rejects: Rejects, taxi: TaxiType, month: Month, call: dict[str, Any]
) -> None:
    """The month's rejected rows as a small Parquet object beside the data (removed when there are none)."""
    import pyarrow.parquet as pq

    blob = bucket.blob(name)
    if not rejects:
        if blob.exists(**call):
            blob.delete(**call)
        return
    buf = io.BytesIO()
    pq.write_table(rejects_table(taxi.filename(str(month)), rejects), buf)
    blob.upload_from_string(buf.getvalue(), content_type="application/octet-stream", **call)


def remove_object(settings: BigQuerySettings, taxi: TaxiType, month: Month) -> bool:
    """Delete the month's Parquet object; return whether there was one."""
    settings.need("bucket")
    name = settings.object_name(taxi, month)
    call = request(settings)
    with _storage_errors(settings, f"removing gs://{settings.bucket}/{name}"):
        blob = storage_client(settings).bucket(settings.bucket).blob(name)
        if not blob.exists(**call):
            return False
        blob.delete(**call)
    return True


def remove_local(data_dir: Path, taxi: TaxiType, month: Month) -> list[str]:
    """Delete the month's local Parquet file (and partial ones a killed run left); return what was removed."""
    local = _local_parquet(data_dir, taxi, month)
    removed = []
    # .arrow.part: the temporary file of versions before 2026-12, which wrote an Arrow file first
    for p in (local, local.with_name(local.name + ".part"), local.with_name(local.name + ".arrow.part")):
        if p.exists():
            p.unlink()
            removed.append(str(p))
    return removed
