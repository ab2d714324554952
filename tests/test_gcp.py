"""The Google Cloud path against emulators started by the suite itself on 127.0.0.1 (free ports):
gcp-storage-emulator in-process for GCS, local-bigquery (its own Python 3.13 venv, set up by
scripts/setup-emulators.sh) as a subprocess for BigQuery. Counts and ids are asserted after every load.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import http.server
import json
import socket
import threading
import time

import pytest

from taxi_loader.months import Month

from conftest import DATA, PROJECT, data_rows, free_port


def out(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_green_2019_01_loads_its_rows_with_the_ids_postgresql_gives(cloud, cli, db, mirror):
    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    result = cloud("load", "--sink", "bigquery", "--taxi", "green", "--month", "2019-01")
    assert result.exit_code == 0, result.output
    assert (out(result)["rows_inserted"], out(result)["rows_staged"]) == (99, 99)
    ids = cloud.rows("green")
    assert len(ids) == len(set(ids)) == data_rows(DATA / "green_tripdata_2019-01.head99.csv")
    assert cli("load", "--taxi", "green", "--month", "2019-01").exit_code == 0
    assert set(ids) == {r[0] for r in db.all("SELECT unique_row_id FROM green_tripdata")}
    assert cloud.tables() == {"green_tripdata", "green_tripdata_rejects", "taxi_loader_ledger"}  # staging dropped

    again = cloud("load", "--sink", "bigquery", "--taxi", "green", "--month", "2019-01")
    assert (out(again)["rows_inserted"], out(again)["rows_present"]) == (0, 99)
    assert len(cloud.rows("green")) == 99


def test_repeats_and_two_months_match_postgresql(cloud, cli, db, mirror):
    for m in (Month(2021, 1), Month(2021, 2)):
        mirror.put_generated("yellow", m, 3_000, repeat_rate=0.02)
    for m in ("2021-01", "2021-02"):
        assert cloud("load", "--sink", "bigquery", "--taxi", "yellow", "--month", m).exit_code == 0
        assert cli("load", "--taxi", "yellow", "--month", m).exit_code == 0
    ids = cloud.rows("yellow")
    assert len(ids) == len(set(ids)) == 6_000
    assert set(ids) == {r[0] for r in db.all("SELECT unique_row_id FROM yellow_tripdata")}


def test_a_load_killed_between_upload_and_merge_is_rerun_whole(cloud, mirror):
    mirror.put_sample("yellow", Month(2020, 12), "yellow_tripdata_2020-12.head1295.csv")
    up = cloud("upload-gcs", "--taxi", "yellow", "--month", "2020-12")
    assert up.exit_code == 0 and out(up)["uploaded"] is True
    # ... the process dies here; the next run finds the identical object and does not upload it again
    again = cloud("upload-gcs", "--taxi", "yellow", "--month", "2020-12")
    assert out(again)["uploaded"] is False
    first = cloud("bq-load", "--taxi", "yellow", "--month", "2020-12")
    assert first.exit_code == 0, first.output
    assert out(first)["rows_inserted"] == 1295 and len(cloud.rows("yellow")) == 1295
    rerun = cloud("bq-load", "--taxi", "yellow", "--month", "2020-12")
    assert out(rerun)["rows_inserted"] == 0 and len(cloud.rows("yellow")) == 1295


def test_a_retried_bq_load_adopts_its_load_job(cloud, emulators, mirror):
    from google.cloud import storage

    from taxi_loader.sinks.bigquery import bq
    from taxi_loader.sinks.bigquery.calls import request
    from taxi_loader.sinks.bigquery.settings import BigQuerySettings, storage_client
    from taxi_loader.taxis import YELLOW

    month = Month(2020, 7)
    mirror.put_sample("yellow", month, "yellow_tripdata_2020-07.head266.rides.csv")
    assert cloud("upload-gcs", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    settings = BigQuerySettings(
        project=PROJECT,
        bucket=cloud.bucket,
        dataset=cloud.dataset,
        storage_endpoint=emulators["STORAGE_EMULATOR_HOST"],
        bigquery_endpoint=emulators["BIGQUERY_EMULATOR_HOST"],
    )
    # A step that ran its load job and died before the MERGE:
    cloud.client.create_dataset(f"{PROJECT}.{cloud.dataset}", exists_ok=True)
    uri = f"gs://{cloud.bucket}/{settings.object_name(YELLOW, month)}"
    blob = storage.Blob.from_uri(uri, client=storage_client(settings))
    blob.reload()
    staging = f"{PROJECT}.{cloud.dataset}.yellow_tripdata_staging_2020_07"
    first_job = bq._load_job(cloud.client, uri, staging, blob.md5_hash, YELLOW, month, request(settings))
    # Its retry adopts that job (same id, no second load) and finishes the month.
    result = cloud("bq-load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 0, result.output
    assert out(result)["job_id"] == first_job and out(result)["rows_inserted"] == 266
    assert len(cloud.rows("yellow")) == 266 and "yellow_tripdata_staging_2020_07" not in cloud.tables()


def test_a_missing_bucket_says_which_and_what_to_do(cloud, mirror):
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    result = cloud("upload-gcs", "--taxi", "yellow", "--month", "2020-07", env_overrides={"GCP_BUCKET_NAME": "nope-x"})
    assert result.exit_code == 3
    assert "is there a bucket gs://nope-x?" in result.stderr and "04_gcp_setup" in result.stderr


def test_a_missing_setting_is_named(cloud, mirror):
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    result = cloud("bq-load", "--taxi", "yellow", "--month", "2020-07", env_overrides={"GCP_DATASET": ""})
    assert result.exit_code == 3 and "GCP_DATASET" in result.stderr


def test_cleanup_can_remove_the_object(cloud, mirror):
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    assert cloud("upload-gcs", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    done = cloud("cleanup", "--sink", "bigquery", "--taxi", "yellow", "--month", "2020-07", "--remove-object")
    assert done.exit_code == 0 and out(done)["object_removed"] is True


def test_parquet_fast_and_validated_paths_give_the_same_ids(tmp_path):
    """Arrow's typed parse and the shared Python validation must agree on every id, repeats included."""
    import pyarrow.parquet as pq

    from taxi_loader import batches
    from taxi_loader.sinks.bigquery import parquet
    from taxi_loader.synthetic import write_month
    from taxi_loader.taxis import YELLOW

    source = write_month(tmp_path / "y.csv.gz", "yellow", Month(2021, 1), 5_000, repeat_rate=0.02)
    fast = parquet.write_month_parquet(source, YELLOW, "2021-01", tmp_path / "fast.parquet")
    original = batches._typed_batches
    batches._typed_batches = lambda *a: (_ for _ in ()).throw(batches.pa.ArrowInvalid("force the Python path"))
    try:
        slow = parquet.write_month_parquet(source, YELLOW, "2021-01", tmp_path / "slow.parquet")
    finally:
        batches._typed_batches = original
    a = pq.read_table(tmp_path / "fast.parquet")
    b = pq.read_table(tmp_path / "slow.parquet")
    # The repeats, counted independently: rows whose key fields (as written) an earlier row had.
    with gzip.open(source, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [tuple(r[k] for k in YELLOW.key_fields) for r in rows]
    expected_repeats = len(keys) - len(set(keys))
    assert expected_repeats > 50  # 2% of 5,000
    assert (
        (fast.rows_written, fast.rows_repeated) == (slow.rows_written, slow.rows_repeated) == (5_000, expected_repeats)
    )
    assert a.column("unique_row_id").to_pylist() == b.column("unique_row_id").to_pylist()
    assert a.equals(b)


def test_parquet_repeats_far_apart_get_their_kth_ids(tmp_path, monkeypatch):
    """Rows are written as the file streams, but for those that may repeat an earlier one, held to the end:
    a row repeated across batches and row groups (three times) gets the same ids as identity.py gives it, and
    --drop-duplicates keeps exactly its first occurrence; so it does when every row is held."""
    import pyarrow.parquet as pq

    from taxi_loader.identity import key_text, row_id
    from taxi_loader.sinks.bigquery import parquet
    from taxi_loader.synthetic import write_month
    from taxi_loader.taxis import YELLOW

    from conftest import twin_ids

    with gzip.open(write_month(tmp_path / "g.csv.gz", "yellow", Month(2021, 1), 80_000, repeat_rate=0), "rt") as f:
        original = f.read()
    lines = original.splitlines()
    for at, row in ((30_000, 10), (79_000, 10), (70_000, 40_000)):  # row 10 three times, row 40,000 twice
        lines.insert(at, lines[row])
    text = "\n".join(lines) + "\n"
    (tmp_path / "y.csv").write_text(text)
    kept = parquet.write_month_parquet(tmp_path / "y.csv", YELLOW, "2021-01", tmp_path / "y.parquet")
    ids = pq.read_table(tmp_path / "y.parquet").column("unique_row_id").to_pylist()

    def repeats(csv_text: str) -> int:
        keys = [tuple(r[k] for k in YELLOW.key_fields) for r in csv.DictReader(csv_text.splitlines())]
        return len(keys) - len(set(keys))

    before = repeats(original)  # the generator's own (refund pairs can share a key)
    assert repeats(text) == before + 3
    assert (kept.rows_written, kept.rows_repeated, kept.rows_dropped) == (80_003, before + 3, 0)
    assert sorted(ids) == sorted(twin_ids(text, "yellow")) and len(set(ids)) == 80_003
    dropped = parquet.write_month_parquet(
        tmp_path / "y.csv", YELLOW, "2021-01", tmp_path / "d.parquet", drop_duplicates=True
    )
    ids = pq.read_table(tmp_path / "d.parquet").column("unique_row_id").to_pylist()
    assert (dropped.rows_written, dropped.rows_repeated, dropped.rows_dropped) == (
        80_000 - before,
        before + 3,
        before + 3,
    )
    rows = csv.DictReader(text.splitlines())
    firsts = {row_id(key_text(YELLOW, {k: v or None for k, v in r.items()})) for r in rows}  # each key's first id
    assert sorted(ids) == sorted(firsts)

    class HoldsAll:  # a filter that vouches for no row: first occurrences are held too, and spilled in batches
        def add(self, digests: bytes):
            import numpy as np

            return np.ones(len(digests) // 16, bool)

    monkeypatch.setattr(parquet, "MaybeSeen", HoldsAll)
    held = parquet.write_month_parquet(tmp_path / "y.csv", YELLOW, "2021-01", tmp_path / "h.parquet")
    ids = pq.read_table(tmp_path / "h.parquet").column("unique_row_id").to_pylist()
    assert (held.rows_written, held.rows_repeated) == (80_003, before + 3)
    assert ids == twin_ids(text, "yellow")  # all held, so in file order


def test_parquet_rejects_bad_rows_like_the_postgresql_path(tmp_path):
    from taxi_loader.errors import BadData
    from taxi_loader.sinks.bigquery.parquet import write_month_parquet
    from taxi_loader.taxis import YELLOW

    lines = (DATA / "yellow_tripdata_2020-07.head266.rides.csv").read_text().splitlines()
    fields = lines[5].split(",")
    fields[4] = "lots"
    lines[5] = ",".join(fields)
    (tmp_path / "y.csv").write_text("\n".join(lines) + "\n")
    result = write_month_parquet(tmp_path / "y.csv", YELLOW, "2020-07", tmp_path / "y.parquet", max_rejects="1")
    assert (result.rows_written, len(result.rejects)) == (265, 1)
    assert result.rejects.first()[0].line == 6 and result.rejects.first()[0].column == "trip_distance"
    with pytest.raises(BadData, match="more than 0 rows rejected .--max-rejects 0., the last at line 6"):
        write_month_parquet(tmp_path / "y.csv", YELLOW, "2020-07", tmp_path / "z.parquet", max_rejects="0")
    assert not (tmp_path / "z.parquet").exists()


def test_rejected_rows_land_in_the_bigquery_rejects_table(cloud, mirror):
    lines = (DATA / "yellow_tripdata_2020-07.head266.rides.csv").read_text().splitlines()
    for i in (5, 9):
        fields = lines[i].split(",")
        fields[4] = "lots"
        lines[i] = ",".join(fields)
    mirror.put_csv("yellow", Month(2020, 7), "\n".join(lines) + "\n")
    result = cloud("load", "--sink", "bigquery", "--taxi", "yellow", "--month", "2020-07", "--max-rejects", "10")
    assert result.exit_code == 0, result.output
    assert (out(result)["rows_inserted"], out(result)["rows_rejected"]) == (264, 2)
    query = f"SELECT line, column_name FROM `test-project.{cloud.dataset}.yellow_tripdata_rejects` ORDER BY line"
    assert [tuple(r.values()) for r in cloud.client.query(query).result()] == [
        (6, "trip_distance"),
        (10, "trip_distance"),
    ]
    again = cloud("load", "--sink", "bigquery", "--taxi", "yellow", "--month", "2020-07", "--max-rejects", "10")
    assert again.exit_code == 0 and len(list(cloud.client.query(query).result())) == 2  # replaced, not doubled


def test_backfill_and_status_on_bigquery(cloud, mirror):
    for m in (Month(2021, 1), Month(2021, 2)):
        mirror.put_generated("green", m, 1_500)
    args = ("backfill", "--sink", "bigquery", "--taxi", "green", "--from", "2021-01", "--to", "2021-03")
    first = cloud(*args)
    assert first.exit_code == 0, first.output
    months = [json.loads(x) for x in first.stdout.splitlines() if "backfill-month" in x]
    assert [m["status"] for m in months] == ["loaded", "loaded", "not published"]
    assert out(first)["not_published"] == 1
    again = cloud(*args)
    assert [json.loads(x)["status"] for x in again.stdout.splitlines() if "backfill-month" in x][:2] == [
        "skipped",
        "skipped",
    ]
    assert len(cloud.rows("green")) == 3_000
    report = cloud("status", "--sink", "bigquery", "--format", "json")
    data = json.loads(report.stdout)
    assert data["totals"] == {"green": {"2021": 3_000}} and data["gaps"] == {"green": []}


def test_a_ledger_of_an_earlier_version_is_brought_up_to_the_contract(cloud, mirror):
    from google.cloud import bigquery

    # The ledger as taxi-loader 0.1 wrote it: rows_staged instead of rows_after, no rows_read.
    old = [("sink", "STRING"), ("taxi", "STRING"), ("month", "STRING"), ("status", "STRING")]
    old += [("rows_staged", "INT64"), ("source_size", "INT64"), ("source_sha256", "STRING")]
    old += [("finished_at", "TIMESTAMP"), ("object_md5", "STRING")]
    cloud.client.create_dataset(f"{PROJECT}.{cloud.dataset}", exists_ok=True)
    table = f"{PROJECT}.{cloud.dataset}.taxi_loader_ledger"
    cloud.client.create_table(bigquery.Table(table, schema=[bigquery.SchemaField(n, t) for n, t in old]))
    cloud.client.query(
        f"INSERT INTO `{table}` (sink, taxi, month, status, rows_staged, finished_at) "
        "VALUES ('bigquery', 'yellow', '2020-12', 'succeeded', 1295, CURRENT_TIMESTAMP())"
    ).result()
    status = cloud("status", "--sink", "bigquery", "--format", "json")
    assert status.exit_code == 0, status.output
    assert [(m["month"], m["rows"]) for m in json.loads(status.stdout)["months"]] == [("2020-12", 1295)]
    source = mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    loaded = cloud("load", "--sink", "bigquery", "--taxi", "yellow", "--month", "2020-07")
    assert loaded.exit_code == 0, loaded.output
    row = cloud.client.query(
        f"SELECT rows_read, rows_after, source_size FROM `{table}` WHERE month = '2020-07'"
    ).result()
    assert [tuple(r.values()) for r in row] == [(266, 266, source.stat().st_size)]


# ---------------------------------------------------------------- endpoints that fail or never answer


class GoogleFault(http.server.BaseHTTPRequestHandler):
    """Answers every request with one status and a Google-style error body (a real HTTP server standing in
    for a failing Google endpoint: neither emulator can be told to fail)."""

    status = 500
    reason = "backendError"
    requests: list[str] = []

    def _answer(self):
        type(self).requests.append(f"{self.command} {self.path}")
        body = json.dumps(
            {"error": {"code": self.status, "message": f"fault {self.status}", "errors": [{"reason": self.reason}]}}
        ).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def google_fault(status: int, reason: str = ""):
    handler = type("Fault", (GoogleFault,), {"status": status, "reason": reason, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()


@contextlib.contextmanager
def silent_endpoint():
    """A port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_an_unreachable_gcs_fails_fast_as_transient_and_says_where(cloud, mirror):
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    endpoint = closed_endpoint()
    started = time.monotonic()
    result = cloud(
        "load",
        "--sink",
        "bigquery",
        "--taxi",
        "yellow",
        "--month",
        "2020-07",
        "--retries",
        "2",
        env_overrides={"STORAGE_EMULATOR_HOST": endpoint},
    )
    assert time.monotonic() - started < 60  # the clients' own retries took >10 minutes
    assert result.exit_code == 6, result.output
    assert f"GCS at {endpoint} did not answer (connection refused) after 2 attempt(s)" in result.stderr
    assert "upload to GCS failed, retrying" in result.stderr and "2 of 2" in result.stderr
    assert "yellow_tripdata" not in cloud.tables()


def test_a_silent_bigquery_is_given_up_after_the_request_timeout(cloud, mirror):
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    assert cloud("upload-gcs", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    with silent_endpoint() as endpoint:
        started = time.monotonic()
        result = cloud(
            "bq-load",
            "--taxi",
            "yellow",
            "--month",
            "2020-07",
            "--request-timeout",
            "1",
            env_overrides={"BIGQUERY_EMULATOR_HOST": endpoint},
        )
        took = time.monotonic() - started
    assert result.exit_code == 6, result.output
    assert f"BigQuery at {endpoint} did not answer (no answer within the request timeout)" in result.stderr
    assert took < 30  # 5 attempts of 1 s, and the backoff between them
    assert "preparing the dataset" in result.stderr  # what it was waiting for


def test_status_with_a_silent_bigquery_ends_as_transient(cloud):
    with silent_endpoint() as endpoint:
        result = cloud(
            "status", "--sink", "bigquery", "--request-timeout", "1", env_overrides={"BIGQUERY_EMULATOR_HOST": endpoint}
        )
    assert result.exit_code == 6 and "did not answer" in result.stderr, result.output


@pytest.mark.parametrize(
    ("status", "reason", "code", "retried", "says"),
    [
        (503, "backendError", 6, True, "run the command again"),
        (429, "rateLimitExceeded", 6, True, "run the command again"),
        (403, "rateLimitExceeded", 6, True, "run the command again"),  # BigQuery's rate limit comes as a 403
        (403, "accessDenied", 3, False, "Storage Object Admin"),
        (401, "authError", 3, False, "check GCP_CREDS"),  # the client asks for a new token, which fails
        (409, "conflict", 3, False, "fault 409"),
        (400, "invalid", 3, False, "fault 400"),
        (408, "timeout", 6, True, "run the command again"),  # a request timeout, as storage's own retry sees it
    ],
)
def test_google_answers_are_classified(cloud, mirror, status, reason, code, retried, says):
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    with google_fault(status, reason) as (endpoint, fault):
        result = cloud(
            "upload-gcs",
            "--taxi",
            "yellow",
            "--month",
            "2020-07",
            "--retries",
            "2",
            env_overrides={"STORAGE_EMULATOR_HOST": endpoint},
        )
    assert result.exit_code == code, result.output
    assert ("retrying" in result.stderr) is retried
    # (the client also fetches the bucket's metadata in the background, for tracing: not counted)
    object_requests = [r for r in fault.requests if "/o" in r.split("?")[0]]
    assert len(object_requests) == (2 if retried else 1), fault.requests
    assert says in result.stderr


def test_a_bigquery_error_in_the_merge_step_is_classified(cloud, mirror):
    mirror.put_sample("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv")
    assert cloud("upload-gcs", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    with google_fault(403, "accessDenied") as (endpoint, _):
        result = cloud(
            "bq-load", "--taxi", "yellow", "--month", "2020-07", env_overrides={"BIGQUERY_EMULATOR_HOST": endpoint}
        )
    assert result.exit_code == 3
    assert "BigQuery Data Editor and BigQuery Job User" in result.stderr


def test_a_failed_cloud_load_is_in_the_bigquery_ledger(cloud, mirror):
    mirror.put_csv("yellow", Month(2020, 7), "not,a,taxi,header\n1,2,3,4\n")
    result = cloud("load", "--sink", "bigquery", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 5, result.output
    query = f"SELECT status, error FROM `{PROJECT}.{cloud.dataset}.taxi_loader_ledger` WHERE month = '2020-07'"
    ((status, error),) = [tuple(r.values()) for r in cloud.client.query(query).result()]
    assert status == "failed" and "lacks yellow column(s) VendorID" in error
    shown = cloud("status", "--sink", "bigquery", "--taxi", "yellow", "--format", "json")
    assert '"failed"' in shown.stdout
    assert "yellow_tripdata" not in cloud.tables()  # nothing half-written


def test_the_merge_reads_only_the_partitions_the_month_can_touch(cloud, emulators, mirror):
    """The MERGE's ON clause names the month's days and each out-of-month pickup, so BigQuery prunes the
    main table to those partitions (what it bills); rows out of the month and without a pickup still merge
    exactly once."""
    from taxi_loader.sinks.bigquery import bq
    from taxi_loader.sinks.bigquery.calls import request
    from taxi_loader.sinks.bigquery.settings import BigQuerySettings
    from taxi_loader.taxis import YELLOW

    lines = (DATA / "yellow_tripdata_2020-07.head266.rides.csv").read_text().splitlines()
    for i, pickup in ((1, "2009-01-01 00:10:00"), (2, "2020-06-30 23:59:59"), (3, "")):
        fields = lines[i].split(",")
        fields[1] = pickup
        lines[i] = ",".join(fields)
    mirror.put_csv("yellow", Month(2020, 7), "\n".join(lines) + "\n")
    assert cloud("load", "--sink", "bigquery", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    assert len(cloud.rows("yellow")) == 266

    assert cloud("upload-gcs", "--taxi", "yellow", "--month", "2020-07").exit_code == 0
    settings = BigQuerySettings(
        project=PROJECT,
        bucket=cloud.bucket,
        dataset=cloud.dataset,
        storage_endpoint=emulators["STORAGE_EMULATOR_HOST"],
        bigquery_endpoint=emulators["BIGQUERY_EMULATOR_HOST"],
    )
    month = Month(2020, 7)
    uri = f"gs://{cloud.bucket}/{settings.object_name(YELLOW, month)}"
    staging = f"{PROJECT}.{cloud.dataset}.{YELLOW.staging_table(month)}"
    bq._load_job(cloud.client, uri, staging, None, YELLOW, month, request(settings))
    statement, config = bq._merge_statement(cloud.client, settings, YELLOW, month, request(settings))
    on = statement.split(" ON ", 1)[1].split(" WHEN ", 1)[0]
    outside = {f.split(",")[1] for f in lines[1:]} - {""}
    outside = sorted(p for p in outside if not p.startswith("2020-07"))  # the sample's own and the two above
    named = ", ".join(f"@o{i}" for i in range(len(outside)))
    assert on == (
        "T.unique_row_id = S.unique_row_id AND (T.`tpep_pickup_datetime` >= @first AND "
        f"T.`tpep_pickup_datetime` < @after OR T.`tpep_pickup_datetime` IN ({named}) "
        "OR T.`tpep_pickup_datetime` IS NULL)"
    )
    values = {p.name: str(p.value) for p in config.query_parameters}
    assert (values["first"], values["after"]) == ("2020-07-01 00:00:00+00:00", "2020-08-01 00:00:00+00:00")
    assert {"2009-01-01 00:10:00+00:00", "2020-06-30 23:59:59+00:00"} <= set(values.values())
    assert len(values) == 2 + len(outside)
    cloud.client.delete_table(staging)

    again = cloud("bq-load", "--taxi", "yellow", "--month", "2020-07")
    assert again.exit_code == 0, again.output
    assert (out(again)["rows_inserted"], out(again)["rows_present"]) == (0, 266)
    assert len(cloud.rows("yellow")) == 266


@pytest.mark.parametrize("endpoint", ["not a url", "localhost:9050", "ftp://127.0.0.1:9"])
def test_an_endpoint_that_is_no_url_is_named_as_configuration(cloud, endpoint):
    result = cloud("status", "--sink", "bigquery", env_overrides={"BIGQUERY_EMULATOR_HOST": endpoint})
    assert result.exit_code == 3
    assert f"--bigquery-endpoint (BIGQUERY_EMULATOR_HOST) {endpoint!r} is not a URL" in result.stderr
