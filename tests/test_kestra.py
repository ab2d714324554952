"""The Kestra flows, the image's recipe and the compose stack, checked without a Kestra server (its images are
out of reach here).

Every flow parses and matches the project's schema of the task types it uses; lint rules catch what would
break on Kestra 1.3 or 2.x; image and network names agree with the compose file; and the contract tests
render each taxi flow's task commands, as Kestra would for a manual and a scheduled run, and run them in
order with the real CLI against the test PostgreSQL. `test_container.py` runs the same tasks in the image.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import os
import re
import subprocess
import sys
import threading
import venv
from datetime import date
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from taxi_loader.cli import main
from taxi_loader.months import Month

from pebble import render

ROOT = Path(__file__).resolve().parent.parent
FLOWS = sorted((ROOT / "kestra" / "flows").glob("*.yaml"))
SCHEMA = json.loads((ROOT / "kestra" / "schema" / "flow.schema.json").read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
BIN = Path(sys.executable).parent
ZONES_CSV = ROOT / "tests" / "data" / "taxi_zone_lookup.csv"
# The flows that load months, and which of them load one month chosen by taxi, year and month inputs.
MONTH_FLOWS = [
    "02_postgres_data_pipeline.yaml",
    "03_postgres_taxi_pipeline_scheduled.yaml",
    "05_gcp_taxi_pipeline.yaml",
    "06_gcp_taxi_pipeline_scheduled.yaml",
    "07_postgres_backfill.yaml",
]
TAXI_FLOWS = [n for n in MONTH_FLOWS if n != "07_postgres_backfill.yaml"]
POSTGRES_FLOWS = [n for n in MONTH_FLOWS if "postgres" in n]


def env_example() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def flow(name: str) -> dict:
    return yaml.safe_load((ROOT / "kestra" / "flows" / name).read_text())


def all_tasks(tasks: list) -> list[dict]:
    out = []
    for task in tasks or []:
        out.append(task)
        for key in ("tasks", "then", "else", "errors", "finally"):
            out.extend(all_tasks(task.get(key)))
    return out


def flow_tasks(f: dict) -> list[dict]:
    return all_tasks(f.get("tasks")) + all_tasks(f.get("errors")) + all_tasks(f.get("finally"))


def test_the_seven_flows_of_the_design_are_there():
    assert {p.name for p in FLOWS} == {
        "01_getting_started.yaml",
        "02_postgres_data_pipeline.yaml",
        "03_postgres_taxi_pipeline_scheduled.yaml",
        "04_gcp_setup.yaml",
        "05_gcp_taxi_pipeline.yaml",
        "06_gcp_taxi_pipeline_scheduled.yaml",
        "07_postgres_backfill.yaml",
    }


@pytest.mark.parametrize("path", FLOWS, ids=[p.name for p in FLOWS])
def test_flow_matches_the_project_schema(path):
    jsonschema.validate(yaml.safe_load(path.read_text()), SCHEMA)


def test_the_schema_rejects_a_misspelt_property():
    f = copy.deepcopy(flow("02_postgres_data_pipeline.yaml"))
    f["tasks"][1]["comands"] = f["tasks"][1].pop("commands")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(f, SCHEMA)
    f = copy.deepcopy(flow("03_postgres_taxi_pipeline_scheduled.yaml"))
    f["triggers"][0]["conditions"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(f, SCHEMA)


@pytest.mark.parametrize("path", FLOWS, ids=[p.name for p in FLOWS])
def test_flow_lints(path):
    text = path.read_text()
    f = yaml.safe_load(text)
    ids = [t["id"] for t in flow_tasks(f)] + [t["id"] for t in f.get("triggers", [])]
    assert len(ids) == len(set(ids)), f"duplicate task ids in {path.name}"
    assert f["id"] not in {
        "pause",
        "resume",
        "force-run",
        "change-status",
        "kill",
        "executions",
        "search",
        "source",
        "disable",
        "enable",
    }
    # Kestra 2.0 removed these: a flow using them would stop loading.
    for blocker in (
        "pluginDefaults",
        "taskDefaults",
        "core.flow.ForEach",
        "ForEachItem",
        "runIf",
        "| json",
        "json(",
        "conditions:",
        "CANCELED",
        "type: BOOLEAN",
    ):
        assert blocker not in text, f"{path.name} uses {blocker}, which Kestra 2.0 removed"
    for i in f.get("inputs", []):
        assert not ("defaults" in i and i.get("required") is False), f"input {i['id']}: defaults with required false"
    for expr in re.findall(r"\{\{(.*?)\}\}", text):
        assert expr.count("(") == expr.count(")"), expr
        # `a ?? b | f` formats only b: the left side must be parenthesised
        assert not re.search(r"\?\?\s*[\w.]+\s*\|", expr), f"Pebble precedence trap in {expr!r}"
    env = env_example()
    for name in re.findall(r"secret\('(\w+)'\)", text):
        assert f"SECRET_{name}" in env, f"secret {name} is not in .env.example"
    for name in re.findall(r"envs\.(\w+)", text):
        assert f"ENV_{name.upper()}" in env, f"envs.{name} is not in .env.example"
    for name in re.findall(r"kv\('(\w+)'\)", text):
        assert any(
            t.get("type") == "io.kestra.plugin.core.kv.Set" and t.get("key") == name
            for p in FLOWS
            for t in flow_tasks(yaml.safe_load(p.read_text()))
        ), f"no flow sets KV {name}"


@pytest.mark.parametrize("path", FLOWS, ids=[p.name for p in FLOWS])
def test_docker_tasks_use_the_compose_image_and_network(path):
    image = COMPOSE["services"]["taxi-loader"]["image"]
    network = COMPOSE["networks"]["default"]["name"]
    for task in flow_tasks(yaml.safe_load(path.read_text())):
        if task["type"] == "io.kestra.plugin.docker.Run":
            assert (task["containerImage"], task["networkMode"], task["pullPolicy"]) == (image, network, "NEVER")
            assert task["commands"][:2] == ["--log-format", "kestra"]


def test_compose_file_is_valid_and_wired():
    result = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", ROOT / "docker-compose.yaml"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    services = COMPOSE["services"]
    assert services["kestra"]["image"].startswith("kestra/kestra:v1.3")
    assert "--flow-path /app/flows" in services["kestra"]["command"]
    assert "./kestra/flows:/app/flows:ro" in services["kestra"]["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in services["kestra"]["volumes"]
    assert "/tmp/kestra-wd:/tmp/kestra-wd" in services["kestra"]["volumes"]
    config = yaml.safe_load(services["kestra"]["environment"]["KESTRA_CONFIGURATION"])
    assert "kestra_postgres:5432" in config["datasources"]["postgres"]["url"]
    assert config["kestra"]["tasks"]["tmp-dir"]["path"].startswith("/tmp/kestra-wd")
    assert config["kestra"]["server"]["basic-auth"]["username"]
    assert services["pgdatabase"]["ports"] == ["5432:5432"] and services["pgadmin"]["ports"] == ["8085:80"]
    assert services["taxi-loader"]["profiles"] == ["build"] and services["taxi-loader"]["build"] == "."
    servers = json.loads((ROOT / "kestra" / "pgadmin" / "servers.json").read_text())["Servers"]
    assert servers["1"]["Host"] == "pgdatabase"
    for name, service in services.items():
        if name != "taxi-loader" and name != "pgadmin":
            assert "healthcheck" in service, f"{name} has no health check"


def test_kestra_gets_only_its_secrets_and_envs_and_survives_odd_passwords():
    """Kestra needs SECRET_* and ENV_* only (no env_file: PGPASSWORD and POSTGRES_PASSWORD stay out); the passwords
    pasted into its YAML configuration are quoted, so '#', ':' or a leading '*' cannot change its meaning."""
    kestra = COMPOSE["services"]["kestra"]
    assert "env_file" not in kestra
    assert all(k.startswith(("SECRET_", "ENV_")) or k == "KESTRA_CONFIGURATION" for k in kestra["environment"])
    assert {k for k in env_example() if k.startswith(("SECRET_", "ENV_"))} <= set(kestra["environment"])
    assert "env_file" not in COMPOSE["services"]["taxi-loader"]  # `docker compose build` needs no .env
    template = kestra["environment"]["KESTRA_CONFIGURATION"]
    odd = {"KESTRA_DB_PASSWORD": "*x#y: z", "KESTRA_USER": "me@example.com", "KESTRA_PASSWORD": "#Secret1: *"}

    def substitute(m: re.Match) -> str:
        return odd.get(m[1], m[2])

    config = yaml.safe_load(re.sub(r"\$\{(\w+):-([^}]*)\}", substitute, template))
    assert config["datasources"]["postgres"]["password"] == odd["KESTRA_DB_PASSWORD"]
    assert config["kestra"]["server"]["basic-auth"]["password"] == odd["KESTRA_PASSWORD"]


def test_env_example_secrets_are_single_line_base64_of_the_passwords():
    env = env_example()
    assert base64.b64decode(env["SECRET_PG_PASSWORD"]).decode() == env["POSTGRES_PASSWORD"]
    assert env["PGPASSWORD"] == env["POSTGRES_PASSWORD"] and env["ENV_PG_USER"] == env["POSTGRES_USER"]


def test_dockerfile_passes_hadolint():
    result = subprocess.run([BIN / "hadolint", ROOT / "Dockerfile"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["taxi-loader"]' in text and "USER 10001" in text and "PYTHONUNBUFFERED=1" in text


def test_the_image_install_step_gives_a_working_command(tmp_path):
    """What the Dockerfile does, without Docker: build the wheel, install it with the pinned runtime
    requirements into a clean environment, run the entry point."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp_path / "w", ROOT],
        check=True,
        capture_output=True,
    )
    venv.create(tmp_path / "venv", with_pip=True)
    pip = tmp_path / "venv" / "bin" / "pip"
    wheel = next((tmp_path / "w").glob("taxi_loader-*.whl"))
    subprocess.run(
        [pip, "install", "--quiet", "--no-cache-dir", "-r", ROOT / "requirements.txt", wheel],
        check=True,
        capture_output=True,
    )
    result = subprocess.run([tmp_path / "venv" / "bin" / "taxi-loader", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "backfill" in result.stdout and "dedup-merge" in result.stdout


# ---------------------------------------------------------------- contract: the flows' commands, run


def docker_tasks(f: dict) -> list[dict]:
    return [
        t for t in all_tasks(f["tasks"]) + all_tasks(f.get("finally")) if t["type"] == "io.kestra.plugin.docker.Run"
    ]


class InProcess:
    """Runs a task's rendered commands with the real CLI in this process, as the image's ENTRYPOINT would, with
    the task's env plus the test's own servers: its database and schema, the local mirror (the course's
    layout; the TLC's is its /tlc/ directory, empty unless a test fills it), tests/data's zone lookup, the
    cloud emulators. `tests/test_container.py` runs the same commands in the image itself."""

    def __init__(self, db, mirror, cloud_env: dict | None = None, env_overrides: dict | None = None):
        self.db, self.mirror, self.cloud_env, self.env_overrides = db, mirror, cloud_env or {}, env_overrides or {}

    envs = {"pg_user": "postgres", "pg_database": "x"}  # Kestra's ENV_* values, as the flows read them

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        mirror = self.mirror
        return {
            **env,
            "TAXI_LOADER_DB_URL": self.db.url,
            "TAXI_LOADER_SCHEMA": self.db.schema,
            "TAXI_LOADER_MIRROR_URL": mirror.template,
            "TAXI_LOADER_TLC_URL": f"{mirror.url}/tlc/{{taxi}}_tripdata_{{year}}-{{month}}.parquet",
            "TAXI_LOADER_ZONES_URL": str(ZONES_CSV),
            "TAXI_LOADER_DATA_DIR": str(mirror.root / "work"),
            **self.env_overrides,
            **{k: v for k, v in self.cloud_env.items() if k.endswith("EMULATOR_HOST")},
        }

    def __call__(self, argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
        """Run one task: its exit code, stdout, and stdout with stderr."""
        result = CliRunner(env=self.environment(env)).invoke(main, argv)
        return result.exit_code, result.stdout, result.output


def run_flow(
    f: dict,
    context: dict,
    db,
    mirror,
    cloud_env: dict | None = None,
    fails: str | None = None,
    env_overrides: dict | None = None,
    runner=None,
) -> dict[str, dict]:
    """Render and run each Docker task of `f` in order (finally last), as Kestra would; return their outputs.

    Inputs the context leaves out take the flow's defaults. `runner` runs a task (default: `InProcess`). Only
    the task `fails` may fail (the test says it must): the tasks after it are skipped and `finally` still
    runs, as in Kestra; its exit code and output are in the result.
    """
    runner = runner or InProcess(db, mirror, cloud_env, env_overrides)
    settings = ("GCP_PROJECT_ID", "GCP_LOCATION", "GCP_BUCKET_NAME", "GCP_DATASET")
    defaults = {i["id"]: i["defaults"] for i in f.get("inputs", []) if "defaults" in i}
    context = {
        **context,
        "inputs": {**defaults, **context["inputs"]},
        "secrets": {"PG_PASSWORD": "", "GCP_CREDS": ""},
        "kvs": {k: (cloud_env or {}).get(k, "unused") for k in settings},
        "envs": runner.envs,
        "vars": f.get("variables", {}),
    }
    outputs: dict[str, dict] = {}
    failed = None
    final = {t["id"] for t in all_tasks(f.get("finally"))}
    for task in docker_tasks(f):
        if failed and task["id"] not in final:
            continue
        argv = [render(arg, context) for arg in task["commands"]]
        env = {k: render(v, context) for k, v in task["env"].items()}
        if "PGHOST" in env:  # the compose service's name
            assert env["PGHOST"] == "pgdatabase"
        exit_code, stdout, output = runner(argv, env)
        lines = [json.loads(x[2:-2]) for x in stdout.splitlines() if x.startswith("::{")]
        outputs[task["id"]] = {
            "vars": {k: v for x in lines if "outputs" in x for k, v in x["outputs"].items()},
            "exitCode": exit_code,
            "output": output,
        }
        if exit_code and task["id"] == fails:
            failed = task["id"]
            continue
        if exit_code and task.get("allowFailure"):  # Kestra goes on; the execution ends WARNING
            continue
        assert exit_code == 0, f"{task['id']}: {' '.join(argv)}\n{output}"
    assert failed == fails, f"{fails} was expected to fail"
    if failed:
        return outputs
    for out in f.get("outputs", []):  # every output the flow reads is one the loader emits
        task_id, key = re.search(r"outputs\.(\w+)\.vars\.(\w+)", out["value"]).groups()
        assert key in outputs[task_id]["vars"], f"{task_id} does not emit {key}"
    return outputs


def test_manual_run_of_the_postgres_flow_loads_the_month(db, mirror):
    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    context = {"inputs": {"taxi": "green", "year": "2019", "month": "01"}, "execution": {"startDate": "2026-11-26"}}
    outputs = run_flow(flow("02_postgres_data_pipeline.yaml"), context, db, mirror)
    assert outputs["dedup_merge"]["vars"]["rows_inserted"] == 99
    assert db.count("green_tripdata") == 99 and not any("staging" in t for t in db.tables())
    assert db.count("taxi_zone_lookup") == 265
    again = run_flow(flow("02_postgres_data_pipeline.yaml"), context, db, mirror)
    assert again["dedup_merge"]["vars"]["rows_inserted"] == 0 and db.count("green_tripdata") == 99


def test_scheduled_and_manual_runs_of_the_scheduled_flow(db, mirror):
    f = flow("03_postgres_taxi_pipeline_scheduled.yaml")
    yellow = next(t for t in f["triggers"] if t["inputs"]["taxi"] == "yellow")
    assert yellow["cron"] == "0 10 1 * *"
    assert next(t for t in f["triggers"] if t["inputs"]["taxi"] == "green")["cron"] == "0 9 1 * *"
    mirror.put_sample("yellow", Month(2021, 1), "yellow_tripdata_2021-01.head22792.csv")
    mirror.put_sample("yellow", Month(2020, 12), "yellow_tripdata_2020-12.head1295.csv")
    # The 1 Feb 2021 10:00 tick (or its replay by a Kestra backfill) loads January.
    scheduled = {
        "inputs": yellow["inputs"],
        "trigger": {"date": "2021-02-01T10:00:00Z"},
        "execution": {"startDate": "2026-11-26T08:00:00Z"},
    }
    assert run_flow(f, scheduled, db, mirror)["dedup_merge"]["vars"]["rows_inserted"] == 22792
    assert (
        render(f["tasks"][0]["labels"]["file"], {**scheduled, "vars": f["variables"]}) == "yellow_tripdata_2021-01.csv"
    )
    # A manual run on 3 January 2021 loads December.
    manual = {"inputs": {"taxi": "yellow"}, "execution": {"startDate": "2021-01-03T12:00:00Z"}}
    assert run_flow(f, manual, db, mirror)["dedup_merge"]["vars"]["rows_inserted"] == 1295
    assert db.count("yellow_tripdata") == 22792 + 1295


def test_the_backfill_flow_runs_the_backfill_command(db, mirror):
    for m in (Month(2021, 1), Month(2021, 2)):
        mirror.put_generated("yellow", m, 2000)
    f = flow("07_postgres_backfill.yaml")
    context = {"inputs": {"taxis": "yellow", "from": "2021-01", "to": "2021-03", "jobs": 2}}
    outputs = run_flow(f, context, db, mirror)
    assert outputs["backfill"]["vars"]["loaded"] == 2 and outputs["backfill"]["vars"]["failed_months"] == []
    assert db.count("yellow_tripdata") == 4000


def test_getting_started_installs_what_its_python_imports():
    task = flow("01_getting_started.yaml")["tasks"][0]
    # Kestra's own install, cached across executions: no pip in beforeCommands (its root warning was an ERROR)
    assert "beforeCommands" not in task and task["dependencyCacheEnabled"] is True
    installed = {p.split("==")[0] for p in task["dependencies"]}
    lines = [
        *(ROOT / "requirements-dev.txt").read_text().splitlines(),
        *(ROOT / "requirements.txt").read_text().splitlines(),
    ]
    dev = {line.split("==")[0].lower() for line in lines}
    assert {"polars", "duckdb", "pyarrow"} <= installed <= dev  # duckdb reads a Polars frame through Arrow


def test_getting_started_python_against_a_local_products_api(tmp_path):
    script = flow("01_getting_started.yaml")["tasks"][0]["script"]
    data = ROOT / "tests" / "data"

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(data), **kw)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "PRODUCTS_URL": f"http://127.0.0.1:{server.server_address[1]}/products.json"}
        result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1][2:-2])["outputs"]
    products = json.loads((data / "products.json").read_text())["products"]
    brands = {p.get("brand", "(no brand)") for p in products}
    assert summary["products"] == len(products) and summary["brands"] == len(brands)
    table = (tmp_path / "brands.csv").read_text().splitlines()
    assert table[0] == "brand,products,avg_price,avg_rating" and len(table) == len(brands) + 1
    priciest = max(
        brands,
        key=lambda b: (
            sum(p["price"] for p in products if p.get("brand", "(no brand)") == b)
            / sum(1 for p in products if p.get("brand", "(no brand)") == b)
        ),
    )
    assert summary["top_brand"] == priciest


def test_the_gcp_setup_flow_stores_the_four_settings_its_pipelines_read():
    setup = flow("04_gcp_setup.yaml")
    stored = {t["key"] for t in setup["tasks"] if t["type"] == "io.kestra.plugin.core.kv.Set"}
    assert stored == {"GCP_PROJECT_ID", "GCP_LOCATION", "GCP_BUCKET_NAME", "GCP_DATASET"}
    for name in ("04_gcp_setup.yaml", "05_gcp_taxi_pipeline.yaml", "06_gcp_taxi_pipeline_scheduled.yaml"):
        for task in docker_tasks(flow(name)):
            assert set(task["env"]) == stored | {"GCP_CREDS"}


def test_manual_run_of_the_gcp_flow_loads_the_month(cloud, db, mirror):
    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    env = cloud.settings
    context = {"inputs": {"taxi": "green", "year": "2019", "month": "01"}, "execution": {"startDate": "2026-11-26"}}
    outputs = run_flow(flow("05_gcp_taxi_pipeline.yaml"), context, db, mirror, env)
    assert outputs["bq_load"]["vars"]["rows_inserted"] == 99 and len(cloud.rows("green")) == 99
    again = run_flow(flow("05_gcp_taxi_pipeline.yaml"), context, db, mirror, env)
    assert again["bq_load"]["vars"]["rows_inserted"] == 0


def test_scheduled_run_of_the_gcp_flow_loads_the_month_before_the_tick(cloud, db, mirror):
    f = flow("06_gcp_taxi_pipeline_scheduled.yaml")
    green = next(t for t in f["triggers"] if t["inputs"]["taxi"] == "green")
    assert green["cron"] == "0 9 1 * *"
    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    env = cloud.settings
    context = {
        "inputs": green["inputs"],
        "trigger": {"date": "2019-02-01T09:00:00Z"},
        "execution": {"startDate": "2026-11-26T08:00:00Z"},
    }
    assert run_flow(f, context, db, mirror, env)["bq_load"]["vars"]["rows_inserted"] == 99


# ---------------------------------------------------------------- sources, taxi types, the zone lookup


def cli_choices(command: str, param: str) -> list[str]:
    return list(next(p for p in main.commands[command].params if p.name == param).type.choices)


def inputs_of(name: str) -> dict[str, dict]:
    return {i["id"]: i for i in flow(name)["inputs"]}


@pytest.mark.parametrize("name", TAXI_FLOWS)
def test_taxi_inputs_offer_every_taxi_type(name):
    assert inputs_of(name)["taxi"]["values"] == cli_choices("stage", "taxi") == ["yellow", "green", "fhv", "fhvhv"]


def test_the_backfill_flow_accepts_every_taxi_type():
    validator = re.compile(inputs_of("07_postgres_backfill.yaml")["taxis"]["validator"])
    for good in [*cli_choices("stage", "taxi"), "yellow,green", "fhvhv,fhv", "yellow,green,fhv,fhvhv"]:
        assert validator.fullmatch(good), good
    for bad in ("", "fhvh", "fhvhvx", "yellow,", "yellow green", "FHVHV"):
        assert not validator.fullmatch(bad), bad


@pytest.mark.parametrize("name", [n for n in TAXI_FLOWS if "year" in inputs_of(n)])
def test_year_inputs_offer_2009_to_2026(name):
    year = inputs_of(name)["year"]
    assert year["values"] == [str(y) for y in range(2009, 2027)] and year["allowCustomValue"] is True
    assert year["defaults"] in year["values"]


@pytest.mark.parametrize("name", MONTH_FLOWS)
def test_month_flows_offer_the_source_input(name):
    source = inputs_of(name)["source"]
    assert source["type"] == "SELECT" and source["values"] == cli_choices("stage", "source") == [
        "auto",
        "mirror",
        "tlc",
    ]
    assert source["defaults"] == "auto" and source["displayName"]
    assert all(f"{choice}:" in source["description"] for choice in source["values"])


@pytest.mark.parametrize("name", MONTH_FLOWS)
def test_every_month_command_carries_the_source_input(name):
    """Every Docker task whose command takes a month and a source gets --source from the input, once, in every
    task alike (cleanup finds the downloaded file by the name the source gave it); the others take none."""
    f = flow(name)
    inputs = {i["id"]: i["defaults"] for i in f["inputs"]} | {"source": "tlc"}
    context = {"inputs": inputs, "vars": f.get("variables", {}), "execution": {"startDate": "2026-11-26"}}
    context |= {"envs": {"pg_user": "u", "pg_database": "d"}, "secrets": {"PG_PASSWORD": ""}, "kvs": {}}
    carrying = set()
    for task in docker_tasks(f):
        command = task["commands"][2]
        params = {p.name for p in main.commands[command].params}
        if not params & {"month", "first"}:
            continue
        if "source" in params:
            carrying.add(command)
            assert task["commands"].count("--source") == 1, task["id"]
            assert task["commands"][task["commands"].index("--source") + 1] == "{{ inputs.source }}"
            argv = [render(arg, context) for arg in task["commands"]]
            assert argv[argv.index("--source") + 1] == "tlc"
        else:
            assert "--source" not in task["commands"], f"{command} takes no --source"
    if "backfill" in name:
        assert carrying == {"backfill"}
    else:
        assert carrying == {"stage" if "postgres" in name else "upload-gcs", "cleanup"}


@pytest.mark.parametrize("name", MONTH_FLOWS)
def test_descriptions_say_which_source_serves_which_months(name):
    text = " ".join(flow(name)["description"].split())
    assert "2019-01..2021-07" in text and "mirror" in text and "TLC" in text and "fhvhv" in text
    assert "two months after" in text and "not published yet" in text
    if "07" not in name:
        assert 'exit code 4 "not published yet"' in text


@pytest.mark.parametrize("name", POSTGRES_FLOWS)
def test_postgres_flows_load_the_zone_lookup_first(name):
    tasks = docker_tasks(flow(name))
    zones = tasks[0]
    assert zones["id"] == "zones"
    assert zones["commands"][:5] == ["--log-format", "kestra", "zones", "--sink", "postgres"]
    assert all(t["env"] == zones["env"] for t in tasks), "the zones task has the env of the other tasks"


def test_the_gcp_setup_flow_loads_the_zone_lookup_after_creating_the_dataset():
    setup = flow("04_gcp_setup.yaml")
    ids = [t["id"] for t in setup["tasks"]]
    (zones,) = docker_tasks(setup)
    assert zones["commands"] == ["--log-format", "kestra", "zones", "--sink", "bigquery"]
    assert ids.index("zones") > ids.index("create_dataset") > ids.index("gcp_dataset")
    assert zones["env"] == docker_tasks(flow("05_gcp_taxi_pipeline.yaml"))[0]["env"]


@pytest.mark.parametrize("name", POSTGRES_FLOWS)
def test_the_zones_command_of_the_postgres_flows_loads_the_lookup(name, db, tmp_path):
    zones = docker_tasks(flow(name))[0]
    context = {"inputs": {"source": "auto"}, "envs": {"pg_user": "postgres", "pg_database": "x"}}
    context["secrets"] = {"PG_PASSWORD": ""}
    argv = [render(arg, context) for arg in zones["commands"]]
    assert argv == ["--log-format", "kestra", "zones", "--sink", "postgres", "--source", "auto"]
    argv += ["--zones-url", str(ZONES_CSV)]
    env = {"TAXI_LOADER_DB_URL": db.url, "TAXI_LOADER_SCHEMA": db.schema}
    for _ in range(2):  # replaced, not appended to
        result = CliRunner(env=env).invoke(main, argv)
        assert result.exit_code == 0, result.output
        assert db.count("taxi_zone_lookup") == 265
    assert db.one("SELECT zone FROM taxi_zone_lookup WHERE locationid = 1")[0] == "Newark Airport"


def test_the_gcp_setup_flow_loads_the_zone_lookup(cloud, db, mirror):
    run_flow(flow("04_gcp_setup.yaml"), {"inputs": {}}, db, mirror, cloud.settings)
    table = f"{cloud.client.project}.{cloud.dataset}.taxi_zone_lookup"
    assert next(iter(cloud.client.query(f"SELECT count(*) FROM `{table}`").result()))[0] == 265


def test_a_tlc_run_reads_the_tlc_and_its_cleanup_removes_that_download(db, mirror):
    """--source tlc reaches stage and cleanup alike: the file downloaded from the TLC's template (named
    differently from the mirror's here) is the one cleanup deletes."""
    tlc = mirror.root / "tlc" / "green-2019-01.csv.gz"
    tlc.parent.mkdir()
    tlc.write_bytes(gzip.compress((ROOT / "tests" / "data" / "green_tripdata_2019-01.head99.csv").read_bytes()))
    context = {"inputs": {"taxi": "green", "year": "2019", "month": "01", "source": "tlc"}}
    env = {"TAXI_LOADER_TLC_URL": f"{mirror.url}/tlc/{{taxi}}-{{year}}-{{month}}.csv.gz"}
    outputs = run_flow(flow("02_postgres_data_pipeline.yaml"), context, db, mirror, env_overrides=env)
    assert outputs["dedup_merge"]["vars"]["rows_inserted"] == 99 and db.count("green_tripdata") == 99
    assert [path for path, _ in mirror.requests] == ["/tlc/green-2019-01.csv.gz"]
    assert not [p.name for p in (mirror.root / "work").iterdir() if p.is_file() and "green" in p.name]


def test_a_scheduled_run_for_last_month_fails_as_not_published_yet(db, mirror):
    """On the 1st the TLC has not published last month: stage fails with exit code 4 and says so, dedup-merge
    does not run, cleanup still does."""
    f = flow("03_postgres_taxi_pipeline_scheduled.yaml")
    yellow = next(t for t in f["triggers"] if t["inputs"]["taxi"] == "yellow")
    tick = date.today().replace(day=1).isoformat() + "T10:00:00Z"
    context = {"inputs": yellow["inputs"], "trigger": {"date": tick}, "execution": {"startDate": tick}}
    outputs = run_flow(f, context, db, mirror, fails="stage")
    assert outputs["stage"]["exitCode"] == 4 and "not published yet" in outputs["stage"]["output"]
    assert "dedup_merge" not in outputs and outputs["cleanup"]["exitCode"] == 0
    assert outputs["zones"]["exitCode"] == 0 and db.count("yellow_tripdata") == 0


def test_the_zone_lookup_failing_does_not_stop_the_month(db, mirror):
    """The zones task may fail (allowFailure): offline, with no lookup to fetch, the month still loads."""
    mirror.put_sample("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv")
    context = {"inputs": {"taxi": "green", "year": "2019", "month": "01"}, "execution": {"startDate": "2026-11-26"}}
    env = {"TAXI_LOADER_ZONES_URL": f"{mirror.url}/misc/no_such_lookup.csv"}
    outputs = run_flow(flow("02_postgres_data_pipeline.yaml"), context, db, mirror, env_overrides=env)
    assert outputs["zones"]["exitCode"] == 4 and outputs["dedup_merge"]["vars"]["rows_inserted"] == 99
    assert db.count("green_tripdata") == 99


def test_the_build_context_leaves_out_environments_and_data():
    """The context was 780 MB before .venv and .emulators were ignored."""
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".emulators", "data", "bench", "tests", ".git", "*.duckdb"} <= ignored


def test_make_docker_targets_work_without_compose_and_without_a_bind_mount():
    """make build is a plain docker build (no compose, no .env); DOCKER=1 runs mount nothing of the caller's
    (the image's user, uid 10001, owns no directory of theirs) and take the network from DOCKER_NETWORK."""

    def dry_run(*args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}  # not the make running the tests
        done = subprocess.run(["make", "-n", *args], cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "docker build --network host -t taxi-loader:latest ." in dry_run("build", "DOCKER_NETWORK=host")
    assert "compose" not in dry_run("build")
    load = dry_run("load", "DOCKER=1", "DOCKER_NETWORK=host", "TAXI=green", "MONTH=2019-01")
    assert "docker run --rm --network host --add-host pgdatabase:127.0.0.1 --env-file .env" in load
    assert " -v " not in load and "load  --taxi green --month 2019-01" in load
    assert "--network taxi-net" in dry_run("backfill", "DOCKER=1") and " -v " not in dry_run("backfill", "DOCKER=1")
