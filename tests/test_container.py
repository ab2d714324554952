"""The image and every Docker task of the flows, run for real in a container engine.

Kestra's docker.Run is `docker run` of the image with the task's rendered `commands` as arguments to the
ENTRYPOINT, the task's `env` and its network; that is what these tests do, with `--network host` (the engine
here has no bridge) and `--add-host pgdatabase:127.0.0.1` standing in for the compose network's name. A
Kestra server itself cannot run here (its images are out of reach).

They need an engine: `eval "$(bash scripts/docker-offline.sh)"` starts one on a machine without Docker Hub
(.ci/run does). Without one they are skipped, and `pytest -ra` prints why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from test_kestra import ZONES_CSV, flow, run_flow

from taxi_loader.months import Month

pytestmark = pytest.mark.container
ROOT = Path(__file__).resolve().parent.parent
TAG = "taxi-loader:test"


@dataclass
class Image:
    """The image built from the project's Dockerfile, and how to run it as Kestra's Docker runner does."""

    docker: str
    tag: str
    build_seconds: float

    def argv(self, args: list[str], env: dict[str, str], name: str | None = None) -> list[str]:
        run = [self.docker, "run", "--rm", "--network", "host", "--add-host", "pgdatabase:127.0.0.1"]
        if name:
            run += ["--name", name]
        for k, v in env.items():
            run += ["-e", f"{k}={v}"]
        return [*run, self.tag, *args]

    def run(self, args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(args, env), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def image() -> Image:
    """The image, built once per session (layers are cached by the engine)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip('no docker client: start an engine with eval "$(bash scripts/docker-offline.sh)"')
    info = subprocess.run([docker, "info"], capture_output=True, text=True)
    if info.returncode:
        where = os.environ.get("DOCKER_HOST", "the default socket")
        pytest.skip(f'no container engine answers at {where}: start one with eval "$(bash scripts/docker-offline.sh)"')
    started = time.perf_counter()
    build = subprocess.run(
        [docker, "build", "--network", "host", "--quiet", "-t", TAG, str(ROOT)], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    return Image(docker, TAG, time.perf_counter() - started)


def _source(mirror) -> dict[str, str]:
    return {"TAXI_LOADER_SOURCE_URL": mirror.template, "TAXI_LOADER_RETRY_WAIT": "0.01"}


def test_help_is_the_first_thing_to_try_and_the_loader_is_not_root(image):
    result = image.run(["--help"], {})
    assert result.returncode == 0 and "backfill" in result.stdout and "zones" in result.stdout
    who = subprocess.run(
        [image.docker, "run", "--rm", "--entrypoint", "id", image.tag, "-u"], capture_output=True, text=True
    )
    assert who.stdout.strip() == "10001"
    context = subprocess.run(
        [image.docker, "image", "inspect", image.tag, "--format", "{{.Size}}"], capture_output=True, text=True
    )
    assert int(context.stdout) < 1_000_000_000  # a slim image: no build tools, no tests, no virtualenvs


def test_a_load_into_postgresql_and_its_rerun(image, db, mirror):
    mirror.put_sample("yellow", Month(2021, 1), "yellow_tripdata_2021-01.head22792.csv")
    env = {"TAXI_LOADER_DB_URL": db.url, "TAXI_LOADER_SCHEMA": db.schema, **_source(mirror)}
    args = ["--log-format", "json", "load", "--sink", "postgres", "--taxi", "yellow", "--month", "2021-01"]
    first = image.run(args, env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["rows_inserted"] == 22792 == db.count("yellow_tripdata")
    again = image.run(args, env)
    assert again.returncode == 0 and json.loads(again.stdout)["rows_inserted"] == 0
    assert db.count("yellow_tripdata") == 22792


def test_a_load_into_bigquery_and_its_rerun(image, cloud, mirror):
    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    env = {**cloud.settings, **_source(mirror)}
    args = ["--log-format", "json", "load", "--sink", "bigquery", "--taxi", "green", "--month", "2019-01"]
    first = image.run(args, env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["rows_inserted"] == 99 and len(cloud.rows("green")) == 99
    again = image.run(args, env)
    assert again.returncode == 0 and json.loads(again.stdout)["rows_inserted"] == 0
    assert len(cloud.rows("green")) == 99


# ---------------------------------------------------------------- every flow's Docker tasks, in the image


class InContainer:
    """Runs a flow's task as Kestra's Docker runner would: the image, the rendered commands, the task's env (its
    PGHOST=pgdatabase resolving to this machine), plus where the test's servers are."""

    def __init__(self, image: Image, db, mirror, cloud_env: dict | None = None):
        self.image, self.db, self.mirror, self.cloud_env = image, db, mirror, cloud_env or {}
        zones = mirror.root / "misc" / "taxi_zone_lookup.csv"  # served over HTTP: the container sees no file here
        zones.parent.mkdir(exist_ok=True)
        shutil.copy(ZONES_CSV, zones)
        self.envs = {"pg_user": "postgres", "pg_database": db.url.rsplit("/", 1)[1]}

    def __call__(self, argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
        mirror = self.mirror
        env = {
            **env,
            "TAXI_LOADER_SCHEMA": self.db.schema,
            "TAXI_LOADER_MIRROR_URL": mirror.template,
            "TAXI_LOADER_TLC_URL": f"{mirror.url}/tlc/{{taxi}}_tripdata_{{year}}-{{month}}.parquet",
            "TAXI_LOADER_ZONES_URL": f"{mirror.url}/misc/taxi_zone_lookup.csv",
            **{k: v for k, v in self.cloud_env.items() if k.endswith("EMULATOR_HOST")},
        }
        result = self.image.run(argv, env)
        return result.returncode, result.stdout, result.stdout + result.stderr


def test_the_postgres_flow_in_the_image(image, db, mirror):
    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    context = {"inputs": {"taxi": "green", "year": "2019", "month": "01"}, "execution": {"startDate": "2026-11-26"}}
    runner = InContainer(image, db, mirror)
    outputs = run_flow(flow("02_postgres_data_pipeline.yaml"), context, db, mirror, runner=runner)
    assert outputs["dedup_merge"]["vars"]["rows_inserted"] == 99 and outputs["zones"]["vars"]["rows_zones"] == 265
    assert db.count("green_tripdata") == 99 and db.count("taxi_zone_lookup") == 265
    assert not any("staging" in t for t in db.tables())
    again = run_flow(flow("02_postgres_data_pipeline.yaml"), context, db, mirror, runner=runner)
    assert again["dedup_merge"]["vars"]["rows_inserted"] == 0 and db.count("green_tripdata") == 99


def test_the_scheduled_postgres_flow_in_the_image(image, db, mirror):
    f = flow("03_postgres_taxi_pipeline_scheduled.yaml")
    yellow = next(t for t in f["triggers"] if t["inputs"]["taxi"] == "yellow")
    mirror.put_sample("yellow", Month(2020, 12), "yellow_tripdata_2020-12.head1295.csv")
    tick = {
        "inputs": yellow["inputs"],
        "trigger": {"date": "2021-01-01T10:00:00Z"},
        "execution": {"startDate": "2026-11-26"},
    }
    outputs = run_flow(f, tick, db, mirror, runner=InContainer(image, db, mirror))
    assert outputs["dedup_merge"]["vars"]["rows_inserted"] == 1295 == db.count("yellow_tripdata")


def test_the_backfill_flow_in_the_image(image, db, mirror):
    for m in (Month(2021, 1), Month(2021, 2)):
        mirror.put_generated("yellow", m, 2000)
    context = {"inputs": {"taxis": "yellow", "from": "2021-01", "to": "2021-03", "jobs": 2}}
    outputs = run_flow(flow("07_postgres_backfill.yaml"), context, db, mirror, runner=InContainer(image, db, mirror))
    assert outputs["backfill"]["vars"]["loaded"] == 2 and outputs["backfill"]["vars"]["failed_months"] == []
    assert db.count("yellow_tripdata") == 4000


def test_the_gcp_flows_in_the_image(image, cloud, db, mirror):
    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    mirror.put_sample("yellow", Month(2020, 12), "yellow_tripdata_2020-12.head1295.csv")
    runner = InContainer(image, db, mirror, cloud.settings)
    run_flow(flow("04_gcp_setup.yaml"), {"inputs": {}}, db, mirror, cloud.settings, runner=runner)
    manual = {"inputs": {"taxi": "green", "year": "2019", "month": "01"}, "execution": {"startDate": "2026-11-26"}}
    outputs = run_flow(flow("05_gcp_taxi_pipeline.yaml"), manual, db, mirror, cloud.settings, runner=runner)
    assert outputs["bq_load"]["vars"]["rows_inserted"] == 99 and len(cloud.rows("green")) == 99
    f = flow("06_gcp_taxi_pipeline_scheduled.yaml")
    yellow = next(t for t in f["triggers"] if t["inputs"]["taxi"] == "yellow")
    tick = {
        "inputs": yellow["inputs"],
        "trigger": {"date": "2021-01-01T10:00:00Z"},
        "execution": {"startDate": "2026-11-26"},
    }
    outputs = run_flow(f, tick, db, mirror, cloud.settings, runner=runner)
    assert len(cloud.rows("yellow")) == 1295
    assert any("rows_inserted" in o["vars"] for o in outputs.values())


# ---------------------------------------------------------------- killed the way Kestra kills


def _wait_for(db, view: str, proc: subprocess.Popen, deadline: float = 120) -> None:
    """Poll the server until PostgreSQL's progress `view` shows work under way in the test database."""
    end = time.monotonic() + deadline
    conn = psycopg2.connect(db.url)
    conn.autocommit = True  # a fresh look at the server's state every time
    try:
        with conn.cursor() as cur:
            while time.monotonic() < end:
                if proc.poll() is not None:
                    raise AssertionError(f"the load ended ({proc.returncode}) before {view} showed it")
                cur.execute(f"SELECT count(*) FROM {view} WHERE datname = current_database()")
                if cur.fetchone()[0]:
                    return
                time.sleep(0.005)
    finally:
        conn.close()
    raise AssertionError(f"{view} showed nothing within {deadline} s")


@pytest.mark.parametrize(
    ("moment", "view"),
    [
        ("stage", "pg_stat_progress_copy"),  # the COPY into the staging table
        ("merge", "pg_stat_progress_create_index"),  # the month's first load: its partition being indexed
    ],
)
def test_a_sigkill_mid_load_leaves_nothing_and_the_next_run_is_exact(image, db, mirror, moment, view):
    """Kestra's Docker runner stops a task (kill, or its timeout) with SIGKILL, no grace: whatever the moment,
    no row of the month is in the table, no load counts as succeeded, and the next run loads it exactly."""
    rows = 400_000
    mirror.put_generated("yellow", Month(2021, 3), rows)
    env = {"TAXI_LOADER_DB_URL": db.url, "TAXI_LOADER_SCHEMA": db.schema, **_source(mirror)}
    args = ["--log-format", "json", "load", "--sink", "postgres", "--taxi", "yellow", "--month", "2021-03"]
    name = f"taxi-loader-kill-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(image.argv(args, env, name=name), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(db, view, proc)
        subprocess.run([image.docker, "kill", "--signal", "KILL", name], check=True, capture_output=True)
        assert proc.wait(timeout=60) == 137  # 128 + SIGKILL
    finally:
        subprocess.run([image.docker, "rm", "-f", name], capture_output=True)
    time.sleep(0.5)  # the server notices the closed connection and rolls its transaction back
    main = db.count("yellow_tripdata") if db.exists("yellow_tripdata") else 0
    assert main == 0
    if db.exists("taxi_loader_ledger"):
        assert db.one("SELECT count(*) FROM taxi_loader_ledger WHERE status = 'succeeded'")[0] == 0
    again = image.run(args, env)
    assert again.returncode == 0, again.stderr
    assert db.count("yellow_tripdata") == rows
    assert db.one("SELECT count(DISTINCT unique_row_id) FROM yellow_tripdata")[0] == rows
    assert not any("staging" in t for t in db.tables())
