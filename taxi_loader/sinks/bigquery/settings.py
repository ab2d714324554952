"""Where the BigQuery sink writes, and the Google clients for it.

The Google libraries are imported inside the functions: the other sinks do not pay for them in start-up
time or memory.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taxi_loader.errors import ConfigError, UsageError
from taxi_loader.months import Month
from taxi_loader.taxis import TaxiType

if TYPE_CHECKING:
    from google.cloud import bigquery


def _setting(help: str, *env: str, **more: Any) -> Any:
    """A setting's command-line description (metadata the CLI turns into an option); its env vars are the
    names Kestra users keep in the KV store."""
    return field(default=more.pop("default", None), metadata={"help": help, "envvar": list(env), **more})


_PROJECT = re.compile(r"([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")  # domain-scoped ids too
_DATASET = re.compile(r"[A-Za-z0-9_]{1,1024}")
_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[^\s]*)?")  # what the clients can send a request to
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class BigQuerySettings:
    """Where the cloud path writes; each setting also reads the variable named in brackets."""

    project: str | None = _setting("GCP project id.", "TAXI_LOADER_PROJECT", "GCP_PROJECT_ID")
    location: str | None = _setting("BigQuery location, e.g. EU.", "TAXI_LOADER_LOCATION", "GCP_LOCATION")
    bucket: str | None = _setting("GCS bucket for the Parquet objects.", "TAXI_LOADER_BUCKET", "GCP_BUCKET_NAME")
    dataset: str | None = _setting("BigQuery dataset.", "TAXI_LOADER_DATASET", "GCP_DATASET")
    prefix: str = _setting("Object prefix in the bucket.", "TAXI_LOADER_PREFIX", default="taxi", show_default=True)
    credentials_json: str | None = _setting(
        "The service-account JSON itself (else Application Default Credentials).",
        "TAXI_LOADER_CREDENTIALS_JSON",
        "GCP_CREDS",
    )
    storage_endpoint: str | None = _setting(
        "GCS API endpoint (an emulator or a private endpoint); anonymous credentials then.",
        "TAXI_LOADER_STORAGE_ENDPOINT",
        "STORAGE_EMULATOR_HOST",
    )
    bigquery_endpoint: str | None = _setting(
        "BigQuery API endpoint (an emulator or a private endpoint); anonymous credentials then.",
        "TAXI_LOADER_BIGQUERY_ENDPOINT",
        "BIGQUERY_EMULATOR_HOST",
    )
    request_timeout: float = _setting(
        "Seconds one GCS or BigQuery request may wait for its answer (a load job may run longer: it is polled).",
        "TAXI_LOADER_REQUEST_TIMEOUT",
        default=60.0,
        type=float,
        show_default=True,
    )

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

    def __post_init__(self) -> None:
        # Google's naming rules, checked where the settings are read: the names are pasted into SQL as
        # backquoted identifiers (`quoted`), which nothing but a valid name may reach.
        for setting, value, rule, what in (
            ("GCP_PROJECT_ID", self.project, _PROJECT, "6-30 lower-case letters, digits and hyphens"),
            ("GCP_DATASET", self.dataset, _DATASET, "letters, digits and underscores, at most 1,024"),
            ("GCP_BUCKET_NAME", self.bucket, _BUCKET, "3-63 lower-case letters, digits, '-', '_' and '.'"),
        ):
            if value is not None and not rule.fullmatch(value):
                raise ConfigError(f"{setting} {value!r} is not a valid name: {what}")
        for setting, endpoint in (
            ("--storage-endpoint (STORAGE_EMULATOR_HOST)", self.storage_endpoint),
            ("--bigquery-endpoint (BIGQUERY_EMULATOR_HOST)", self.bigquery_endpoint),
        ):
            if endpoint and not _URL.fullmatch(endpoint):
                raise ConfigError(f"{setting} {endpoint!r} is not a URL: give http(s)://host[:port]")
        if not 1 <= self.request_timeout <= 3600:  # NaN too
            raise UsageError(f"--request-timeout {self.request_timeout}: give seconds from 1 to 3600")

    def endpoint(self, service: str) -> str:
        """Where requests to `service` (storage or bigquery) go, as messages name it."""
        if service == "storage":
            return f"GCS at {self.storage_endpoint or 'storage.googleapis.com'}"
        return f"BigQuery at {self.bigquery_endpoint or 'bigquery.googleapis.com'}"

    def quoted(self, table: str) -> str:
        """`project.dataset.table` as BigQuery SQL names a table (the names were checked when read)."""
        return f"`{self.project}.{self.dataset}.{table}`"

    @property
    def dataset_id(self) -> str:
        """project.dataset"""
        return f"{self.project}.{self.dataset}"

    def object_name(self, taxi: TaxiType, month: Month) -> str:
        """The month's Parquet object in the bucket."""
        return f"{self.prefix}/{taxi.name}/{taxi.parquet_name(month)}"

    def rejects_object_name(self, taxi: TaxiType, month: Month) -> str:
        """The month's rejected rows, as a small Parquet object beside the data."""
        return f"{self.prefix}/{taxi.name}/{taxi.name}_tripdata_{month}.rejects.parquet"


def _credentials(settings: BigQuerySettings, endpoint: str | None) -> Any:
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


def storage_client(settings: BigQuerySettings) -> Any:  # google.cloud.storage.Client (untyped)
    """A GCS client for these settings."""
    from google.cloud import storage  # type: ignore[attr-defined]

    options = {"api_endpoint": settings.storage_endpoint} if settings.storage_endpoint else None
    return storage.Client(
        project=settings.project, credentials=_credentials(settings, settings.storage_endpoint), client_options=options
    )


def bigquery_client(settings: BigQuerySettings) -> bigquery.Client:
    """A BigQuery client for these settings."""
    from google.cloud import bigquery

    options = {"api_endpoint": settings.bigquery_endpoint} if settings.bigquery_endpoint else None
    return bigquery.Client(
        project=settings.project,
        location=settings.location,
        credentials=_credentials(settings, settings.bigquery_endpoint),
        client_options=options,
    )
