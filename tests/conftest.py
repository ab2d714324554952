"""Fixtures: a throwaway PostgreSQL database, a fresh schema per test, a local HTTP mirror with faults.

Everything is real: the tests talk to the PostgreSQL server at TAXI_LOADER_TEST_SERVER (default
postgresql://postgres@127.0.0.1:5432) and download over HTTP from a server on 127.0.0.1. They create a
database of their own and drop it afterwards; a user's tables are never touched.
"""

from __future__ import annotations

import gzip
import http.server
import os
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from taxi_loader.cli import main
from taxi_loader.months import Month
from taxi_loader.synthetic import write_month

DATA = Path(__file__).parent / "data"
SERVER = os.environ.get("TAXI_LOADER_TEST_SERVER", "postgresql://postgres@127.0.0.1:5432")
URL_TEMPLATE = "{taxi}/{taxi}_tripdata_{year}-{month}.csv.gz"

# The real samples, as the mirror serves them: (taxi, month, sample file)
SAMPLES = [
    ("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv"),
    ("yellow", Month(2020, 1), "yellow_tripdata_2020-01.head499_tail500.crlf.csv"),
    ("yellow", Month(2020, 7), "yellow_tripdata_2020-07.head266.rides.csv"),
    ("yellow", Month(2020, 12), "yellow_tripdata_2020-12.head1295.csv"),
    ("yellow", Month(2021, 1), "yellow_tripdata_2021-01.head22792.csv"),
]


def data_rows(path: Path) -> int:
    """Data rows of a CSV (gzip or not): its non-empty lines minus the header."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return sum(1 for line in f if line.strip()) - 1


def corrupt_block(data: bytes) -> bytes:
    """A gzip file with 200 bytes of its deflate stream garbled, mid-file."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle : middle + 200]) + data[middle + 200 :]


def wrong_checksum(data: bytes) -> bytes:
    """A gzip file whose trailer's CRC-32 is one byte off."""
    return data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]


@pytest.fixture(scope="session")
def test_database():
    """A database of our own for the whole session, dropped at the end."""
    name = f"taxi_loader_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        admin = psycopg2.connect(f"{SERVER}/postgres", connect_timeout=5)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    except psycopg2.Error as exc:
        pytest.exit(
            f"the tests need a PostgreSQL server where they may create a database: TAXI_LOADER_TEST_SERVER={SERVER} "
            f"answered: {' '.join(str(exc).split())}\n"
            "Start one (sudo service postgresql start, or `docker compose up -d pgdatabase` with "
            "TAXI_LOADER_TEST_SERVER=postgresql://root:root@127.0.0.1:5432), or point TAXI_LOADER_TEST_SERVER "
            "at one whose role may CREATEDB.",
            returncode=2,
        )
    admin.close()
    yield f"{SERVER}/{name}"
    admin = psycopg2.connect(f"{SERVER}/postgres")  # a fresh one: a test may have restarted the server
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@dataclass
class Db:
    """The test's database URL and schema, with helpers to query them."""

    url: str
    schema: str
    conn: psycopg2.extensions.connection = field(repr=False)

    def one(self, query: str, params=None):
        with self.conn.cursor() as cur:
            cur.execute(f'SET search_path TO "{self.schema}"')
            cur.execute(query, params)
            return cur.fetchone()

    def all(self, query: str, params=None):
        with self.conn.cursor() as cur:
            cur.execute(f'SET search_path TO "{self.schema}"')
            cur.execute(query, params)
            return cur.fetchall()

    def run(self, statements: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f'SET search_path TO "{self.schema}"')
            cur.execute(statements)

    def count(self, table: str) -> int:
        if not self.exists(table):
            return 0
        return self.one(f'SELECT count(*) FROM "{table}"')[0]

    def exists(self, table: str) -> bool:
        return self.one("SELECT to_regclass(%s) IS NOT NULL", (f'"{self.schema}"."{table}"',))[0]

    def tables(self) -> set[str]:
        return {r[0] for r in self.all("SELECT tablename FROM pg_tables WHERE schemaname = %s", (self.schema,))}


@pytest.fixture
def db(test_database):
    """A fresh schema for one test, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(test_database)
    conn.autocommit = True
    db = Db(test_database, schema, conn)
    yield db
    db.conn.close()
    with psycopg2.connect(test_database) as conn, conn.cursor() as cur:  # fresh: the test may have replaced it
        cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class MirrorHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the mirror directory with Range support, and the faults a test asks for."""

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802
        mirror: Mirror = self.server.mirror  # type: ignore[attr-defined]
        mirror.requests.append((self.path, self.headers.get("Range")))
        fault = mirror.faults.get(self.path)
        if fault:
            action = fault.pop(0)
            if not fault:
                del mirror.faults[self.path]
            if isinstance(action, int):
                self.send_error(action)
                return
            if action.startswith("drop:"):
                return self._send(int(action.split(":")[1]))
            if action.startswith("unannounced-drop:"):  # no Content-Length, then the connection closes early
                return self._send(int(action.split(":")[1]), announce=False)
            if action.startswith("drip:"):  # 64 bytes every so many seconds: never a read timeout, never done
                return self._send(None, drip=float(action.split(":")[1]))
            if action == "redirect-loop":  # to itself, again and again
                self.send_response(302)
                self.send_header("Location", self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if action.startswith("short-length:"):  # announces fewer bytes than it sends
                return self._send(None, short=int(action.split(":")[1]))
            if action == "no-range":
                return self._send(None, honour_range=False)
            if action == "garbled-length":  # a Content-Length that is not a number, then the whole body
                return self._send(None, announce=False, garbled=True)
        return self._send(None)

    def _send(
        self,
        cut: int | None,
        honour_range: bool = True,
        announce: bool = True,
        short: int = 0,
        drip: float = 0,
        garbled: bool = False,
    ):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if announce:
            self.send_header("Content-Length", str(len(body) - short))
        else:
            self.close_connection = True
            if garbled:
                self.send_header("Content-Length", f"{len(body)} bytes")
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)  # a dropped connection, mid-body
            return
        if drip:
            for i in range(0, len(body), 64):
                try:
                    self.wfile.write(body[i : i + 64])
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return
                time.sleep(drip)
            return
        self.wfile.write(body)


@dataclass
class Mirror:
    """A local HTTP mirror of the course's release layout: /<taxi>/<taxi>_tripdata_YYYY-MM.csv.gz."""

    root: Path
    url: str = ""
    faults: dict[str, list] = field(default_factory=dict)
    requests: list = field(default_factory=list)

    @property
    def template(self) -> str:
        return f"{self.url}/{URL_TEMPLATE}"

    def path(self, taxi: str, month: Month) -> Path:
        return self.root / taxi / f"{taxi}_tripdata_{month}.csv.gz"

    def url_path(self, taxi: str, month: Month) -> str:
        return f"/{taxi}/{taxi}_tripdata_{month}.csv.gz"

    def put_bytes(self, taxi: str, month: Month, data: bytes) -> Path:
        p = self.path(taxi, month)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    def put_csv(self, taxi: str, month: Month, text: str | bytes) -> Path:
        raw = text.encode() if isinstance(text, str) else text
        return self.put_bytes(taxi, month, gzip.compress(raw))

    def put_sample(self, taxi: str, month: Month, sample: str) -> Path:
        return self.put_csv(taxi, month, (DATA / sample).read_bytes())

    def put_generated(self, taxi: str, month: Month, rows: int, **kw) -> Path:
        return write_month(self.path(taxi, month), taxi, month, rows, **kw)

    # The TLC's layout beside the course's: /trip-data/<taxi>_tripdata_YYYY-MM.parquet
    @property
    def tlc_template(self) -> str:
        return f"{self.url}/trip-data/{{taxi}}_tripdata_{{year}}-{{month}}.parquet"

    def tlc_path(self, taxi: str, month: Month) -> Path:
        return self.root / "trip-data" / f"{taxi}_tripdata_{month}.parquet"

    def put_parquet(self, taxi: str, month: Month, data: bytes | pa.Table) -> Path:
        p = self.tlc_path(taxi, month)
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            pq.write_table(data, p)
        return p

    # How the runners below point the loader at this mirror: by default one --source-url template for every
    # month (the course's layout); `both_sources()` serves each source's own layout and lets --source choose.
    source_args: list[str] = field(default_factory=list)

    def both_sources(self) -> None:
        self.source_args = ["--mirror-url", self.template, "--tlc-url", self.tlc_template]

    def args(self) -> list[str]:
        return self.source_args or ["--source-url", self.template]

    def fail(self, taxi: str, month: Month, *actions) -> None:
        """Answer the next requests for that month with these actions: an HTTP status, 'drop:<bytes>'."""
        self.faults[self.url_path(taxi, month)] = list(actions)


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    m = Mirror(root)

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

    handler = lambda *a, **kw: MirrorHandler(*a, directory=str(root), **kw)  # noqa: E731
    server = Server(("127.0.0.1", 0), handler)
    server.mirror = m  # type: ignore[attr-defined]
    m.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield m
    server.shutdown()
    server.server_close()


@dataclass
class Cli:
    """Runs taxi-loader through click's CliRunner with the test's database, schema, mirror and data dir."""

    db: Db
    mirror: Mirror
    data_dir: Path

    def __call__(
        self, *args: str, db_url: str | None = None, source: bool = True, pg: bool = True, log_format: str = "json"
    ):
        argv = ["--log-format", log_format, *args]
        command = args[0]
        if pg and command in ("stage", "dedup-merge", "cleanup", "load", "backfill", "status", "zones"):
            argv += ["--db-url", db_url or self.db.url, "--schema", self.db.schema]
        if source and command in ("download", "stage", "cleanup", "load", "backfill"):
            argv += [*self.mirror.args(), "--data-dir", str(self.data_dir), "--retry-wait", "0.01"]
        return CliRunner().invoke(main, argv, catch_exceptions=False)


@pytest.fixture
def cli(db, mirror, tmp_path):
    return Cli(db, mirror, tmp_path / "data")


@pytest.fixture(autouse=True)
def _no_user_env(monkeypatch):
    # Tests never pick up a developer's TAXI_LOADER_* settings or PG* variables.
    for k in list(os.environ):
        if k.startswith("TAXI_LOADER_") and k != "TAXI_LOADER_TEST_SERVER" or k.startswith("PG"):
            monkeypatch.delenv(k)


# ---------------------------------------------------------------- Google Cloud emulators

ROOT = Path(__file__).resolve().parent.parent
EMULATORS = Path(os.environ.get("TAXI_LOADER_EMULATORS", ROOT / ".emulators"))
PROJECT = "test-project"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def emulators(tmp_path_factory):
    """GCS and BigQuery emulators for the session: their endpoints."""
    from gcp_storage_emulator.server import create_server

    local_bigquery = EMULATORS / "venv" / "bin" / "local-bigquery"
    if not local_bigquery.exists():  # fail, never skip: CI must notice a missing emulator
        pytest.fail(f"the BigQuery emulator is not set up ({local_bigquery} missing): run scripts/setup-emulators.sh")
    gcs_dir = tmp_path_factory.mktemp("gcs")
    gcs_port, bq_port, grpc_port = free_port(), free_port(), free_port()
    gcs = create_server("127.0.0.1", gcs_port, in_memory=False, data_dir=str(gcs_dir))
    gcs.start()
    env = {**os.environ, "HOME": str(EMULATORS / "home"), "GCS_LOCAL_ROOT": str(gcs_dir / ".cloudstorage")}
    bq = subprocess.Popen(
        [
            local_bigquery,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(bq_port),
            "--grpc-port",
            str(grpc_port),
            "--project",
            PROJECT,
            "--data-dir",
            str(tmp_path_factory.mktemp("bq")),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", bq_port), 0.2).close()
            break
        except OSError:
            if bq.poll() is not None or time.monotonic() > deadline:
                gcs.stop()
                pytest.fail(f"the BigQuery emulator did not start: {bq.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
    yield {
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{gcs_port}",
        "BIGQUERY_EMULATOR_HOST": f"http://127.0.0.1:{bq_port}",
    }
    bq.terminate()
    bq.wait(10)
    gcs.stop()


@pytest.fixture
def cloud(emulators, mirror, tmp_path):
    """A fresh bucket and dataset, and a runner of the CLI pointed at them and at the mirror."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery, storage

    name = f"t{uuid.uuid4().hex[:10]}"
    gcs = storage.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulators["STORAGE_EMULATOR_HOST"]},
    )
    gcs.create_bucket(name)
    bq = bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulators["BIGQUERY_EMULATOR_HOST"]},
    )
    env = {**emulators, "GCP_PROJECT_ID": PROJECT, "GCP_LOCATION": "US", "GCP_BUCKET_NAME": name, "GCP_DATASET": name}

    class Cloud:
        bucket = dataset = name
        client = bq
        settings = env  # what the loader reads: the emulators and the four GCP settings

        def __call__(self, *args: str, env_overrides: dict | None = None):
            argv = ["--log-format", "json", *args]
            if args[0] in ("upload-gcs", "load", "cleanup", "backfill"):
                argv += [*mirror.args(), "--data-dir", str(tmp_path / "data"), "--retry-wait", "0.01"]
            return CliRunner(env={**env, **(env_overrides or {})}).invoke(main, argv, catch_exceptions=False)

        def rows(self, taxi: str) -> list[str]:
            query = f"SELECT unique_row_id FROM `{PROJECT}.{name}.{taxi}_tripdata`"
            return [r[0] for r in bq.query(query).result()]

        def tables(self) -> set[str]:
            from google.api_core.exceptions import NotFound

            try:
                return {t.table_id for t in bq.list_tables(f"{PROJECT}.{name}")}
            except NotFound:  # no dataset: no table
                return set()

    return Cloud()


# ---------------------------------------------------------------- DuckDB


@pytest.fixture
def duck(mirror, tmp_path):
    """A DuckDB file of the test's own, and a runner of the CLI pointed at it and at the mirror."""
    import duckdb

    path = tmp_path / "taxi.duckdb"

    class Duck:
        def __call__(self, *args: str, log_format: str = "json"):
            argv = ["--log-format", log_format, *args]
            if args[0] in ("load", "cleanup", "backfill", "status", "zones"):
                argv += ["--sink", "duckdb", "--duckdb-path", str(path)]
            if args[0] in ("load", "cleanup", "backfill"):
                argv += [*mirror.args(), "--data-dir", str(tmp_path / "data"), "--retry-wait", "0.01"]
            return CliRunner().invoke(main, argv, catch_exceptions=False)

        def query(self, sql: str, params=None) -> list[tuple]:
            conn = duckdb.connect(str(path), read_only=True)
            try:
                return conn.execute(sql, params or []).fetchall()
            finally:
                conn.close()

        def tables(self) -> set[str]:
            if not path.exists():
                return set()
            return {r[0] for r in self.query("SELECT table_name FROM information_schema.tables")}

    Duck.path = path
    return Duck()


@dataclass
class SinkUnderTest:
    """One sink under test, driven the same way whatever it is: the shared sink tests run on each."""

    name: str
    run: object  # (*args) -> click Result, with the sink's options added
    query_ids: object  # (taxi) -> list of unique_row_id
    tables: object  # () -> set of table names

    def ids(self, taxi: str) -> list[str]:
        return self.query_ids(taxi) if f"{taxi}_tripdata" in self.tables() else []


@pytest.fixture(params=["postgres", "duckdb", "bigquery"])
def sink(request, mirror, tmp_path):
    """Each sink in turn (bigquery starts the emulators)."""
    if request.param == "postgres":
        cli, db = request.getfixturevalue("cli"), request.getfixturevalue("db")

        def run(*args: str, **kw):
            sink = ["--sink", "postgres"] if args[0] in ("load", "backfill", "status", "zones") else []
            return cli(*args, *sink, **kw)

        return SinkUnderTest(
            "postgres", run, lambda t: [r[0] for r in db.all(f"SELECT unique_row_id FROM {t}_tripdata")], db.tables
        )
    if request.param == "duckdb":
        duck = request.getfixturevalue("duck")
        return SinkUnderTest(
            "duckdb", duck, lambda t: [r[0] for r in duck.query(f"SELECT unique_row_id FROM {t}_tripdata")], duck.tables
        )
    cloud = request.getfixturevalue("cloud")

    def run_cloud(*args: str, **kw):
        sink = ["--sink", "bigquery"] if args[0] in ("load", "backfill", "status", "cleanup", "zones") else []
        return cloud(*args, *sink)

    return SinkUnderTest("bigquery", run_cloud, cloud.rows, cloud.tables)


def twin_ids(csv_text: str, taxi_name: str) -> list[str]:
    """The ids of a CSV's rows by `identity.py`, the Python twin of the course's SQL (tested against PostgreSQL
    in test_units), from the values as the file spells them: the k-th repeat of a key gets its k-th id."""
    import csv
    import io

    from taxi_loader.identity import key_text, row_id
    from taxi_loader.taxis import TAXI_TYPES

    taxi, seen, ids = TAXI_TYPES[taxi_name], {}, []
    for row in csv.DictReader(io.StringIO(csv_text)):
        text = key_text(taxi, {k: v or None for k, v in row.items()})
        seen[text] = seen.get(text, 0) + 1
        ids.append(row_id(text, seen[text]))
    return ids
