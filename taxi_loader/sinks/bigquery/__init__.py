"""The BigQuery sink: the month as a typed Parquet object in GCS, loaded into a staging table and MERGEd.

settings (where, and the Google clients), parquet (file -> typed Parquet with ids), gcs (the object: the
stage step), bq (load job, MERGE, ledger, rejects: the merge step). `BigQuerySink` is the Sink of
`sinks/base.py` over them. The Google libraries load only when a step runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

from taxi_loader.contract import LoadRecord
from taxi_loader.job import Cancellation, Job
from taxi_loader.logs import get_logger
from taxi_loader.months import Month
from taxi_loader.source import RetryPolicy
from taxi_loader.taxis import TaxiType
from taxi_loader.zones import Zone

from .settings import BigQuerySettings

SINK = "bigquery"
log = get_logger("taxi_loader")


class BigQueryMonth:
    """One month's load on GCS + BigQuery."""

    def __init__(self, settings: BigQuerySettings, job: Job):
        self.settings, self.job = settings, job
        self.target = f"{settings.dataset_id}, bucket gs://{settings.bucket}"

    def stage(self, path: Path) -> dict[str, Any]:
        from . import gcs

        job = self.job
        log.info(
            "writing typed Parquet, then uploading it",
            bucket=f"gs://{self.settings.bucket}",
            at=self.settings.endpoint("storage"),
            **job.tags,
        )
        result = gcs.upload_gcs(
            path,
            job.taxi,
            job.month,
            self.settings,
            job.data_dir,
            job.max_rejects,
            job.drop_duplicates,
            job.retry,
            job.source_label,
        )
        log.info("uploaded" if result.uploaded else "identical object already there", object=result.object, **job.tags)
        return asdict(result)

    def merge(self) -> dict[str, Any]:
        from . import bq

        return asdict(bq.bq_load(self.job.taxi, self.job.month, self.settings, self.job.retry))

    def cleanup(self, remove_object: bool = False) -> dict[str, Any]:
        from . import bq, gcs

        job = self.job
        return {
            "staging_dropped": bq.drop_staging(self.settings, job.taxi, job.month),
            "files_removed": gcs.remove_local(job.data_dir, job.taxi, job.month),
            "object_removed": remove_object and gcs.remove_object(self.settings, job.taxi, job.month),
        }

    def record_failure(self, status: str, message: str) -> None:
        from . import bq

        job = self.job
        bq.record_failure(self.settings, job.taxi, job.month, job.source_label, status, message)


class BigQuerySink:
    """The BigQuery sink (see the package's docstring)."""

    name: ClassVar[str] = SINK
    title: ClassVar[str] = "BigQuery"
    Settings: ClassVar[type[BigQuerySettings]] = BigQuerySettings

    def __init__(self, settings: BigQuerySettings = BigQuerySettings()):
        self.settings = settings

    @contextmanager
    def open(self, job: Job, cancel: Cancellation, whole_load: bool = False) -> Iterator[BigQueryMonth]:
        # Each step is a request or a job of its own; a second load of the month is made harmless by the
        # deterministic load job id and the MERGE on unique_row_id, not by a lock. Every month step works on the
        # bucket and the dataset: all missing settings are named at once, before any download.
        self.settings.need("project", "bucket", "dataset")
        yield BigQueryMonth(self.settings, job)

    def last_loads(
        self, taxis: Sequence[TaxiType], month: Month | None = None, retry: RetryPolicy = RetryPolicy()
    ) -> list[LoadRecord]:
        from . import bq

        return bq.last_loads(self.settings, taxis, month, retry)

    def target_options(self) -> list[str]:
        return []

    def replace_zones(self, zones: Sequence[Zone], retry: RetryPolicy = RetryPolicy()) -> str:
        from . import bq

        return bq.replace_zones(self.settings, zones, retry)

    def zone_count(self, retry: RetryPolicy = RetryPolicy()) -> int | None:
        from . import bq

        return bq.zone_count(self.settings, retry)
