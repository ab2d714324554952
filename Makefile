# taxi-loader: common tasks. `make install` once, then `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TAXI ?= yellow
MONTH ?= 2021-01
# Empty: postgres when a PostgreSQL is configured (TAXI_LOADER_DB_URL or PG*), else the embedded DuckDB file.
SINK ?=
FROM ?= 2019-01
TO ?= 2021-07
# As backfill's own --jobs default; JOBS=2 loads two months at once.
JOBS ?= 1
DOCKER ?= 0
IMAGE ?= taxi-loader:latest
# The compose stack's network; `host` where the engine has no bridge (then pgdatabase is this machine).
DOCKER_NETWORK ?= taxi-net
SINK_OPTION := $(if $(SINK),--sink $(SINK))
# With DOCKER=1 the commands run in the image, on DOCKER_NETWORK, with the settings of .env. Downloads stay in
# the container (they are temporary, and its user, uid 10001, need not own a directory of yours).
ifeq ($(DOCKER),1)
RUN := docker run --rm --network $(DOCKER_NETWORK) $(if $(filter host,$(DOCKER_NETWORK)),--add-host pgdatabase:127.0.0.1) --env-file .env $(IMAGE)
else
RUN := $(BIN)/taxi-loader
endif

.PHONY: install install-dev test lint bench bench-big load backfill status docker-ready build up down logs flows clean

install: $(BIN)/taxi-loader  ## .venv with the pinned tools and the package: enough to load
install-dev: install .emulators/venv/bin/local-bigquery  ## and the cloud emulators the tests need (Python 3.13)

.emulators/venv/bin/local-bigquery: scripts/setup-emulators.sh
	bash scripts/setup-emulators.sh .emulators

$(BIN)/taxi-loader: setup.cfg pyproject.toml requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -e .
	touch $@

test: install-dev  ## the test suite, against the PostgreSQL at TAXI_LOADER_TEST_SERVER (default 127.0.0.1:5432)
	$(BIN)/pytest

lint: install  ## ruff, and mypy on the package (settings in pyproject.toml)
	$(BIN)/ruff check taxi_loader tests bench
	$(BIN)/mypy

# The bench runs the loader as users install it (requirements.txt alone), not with the test tools beside it.
BENCH_VENV ?= .venv-bench

$(BENCH_VENV)/bin/taxi-loader: setup.cfg pyproject.toml requirements.txt
	$(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet -r requirements.txt -e .
	touch $@

bench: $(BENCH_VENV)/bin/taxi-loader  ## the loader against PostgreSQL's own COPY, for a 1,369,765-row month
	$(BENCH_VENV)/bin/python bench/bench.py

bench-big: $(BENCH_VENV)/bin/taxi-loader  ## the same for a 7,667,792-row month (yellow 2019-01 size)
	$(BENCH_VENV)/bin/python bench/bench.py --rows 7667792 --runs 1

load: $(if $(filter 1,$(DOCKER)),docker-ready,install)  ## one month: make load TAXI=green MONTH=2019-01
	$(RUN) load $(SINK_OPTION) --taxi $(TAXI) --month $(MONTH)

backfill: $(if $(filter 1,$(DOCKER)),docker-ready,install)  ## make backfill TAXI=yellow,green FROM=2019-01 TO=2021-07 JOBS=2
	$(RUN) backfill $(SINK_OPTION) --taxi $(TAXI) --from $(FROM) --to $(TO) --jobs $(JOBS)

status: $(if $(filter 1,$(DOCKER)),docker-ready,install)  ## what is loaded
	$(RUN) status $(SINK_OPTION)

docker-ready: .env
	@[ "$(DOCKER_NETWORK)" = host ] || docker network inspect $(DOCKER_NETWORK) >/dev/null 2>&1 || { \
	  echo "no Docker network $(DOCKER_NETWORK): start the stack first (make up), or DOCKER_NETWORK=host to reach" \
	       "a PostgreSQL on this machine as pgdatabase" >&2; exit 2; }

build:  ## the taxi-loader image Kestra runs (plain docker build: no compose, no .env needed)
	docker build $(if $(filter host,$(DOCKER_NETWORK)),--network host) -t $(IMAGE) .

up: .env  ## the local stack: PostgreSQL, pgAdmin, Kestra
	docker compose up -d

down:
	docker compose down

logs:
	docker compose logs -f --tail 100

.env:
	cp .env.example .env

flows: .env  ## push kestra/flows to the running Kestra (create or update, nothing deleted)
	. ./.env && for f in kestra/flows/*.yaml; do \
	  curl --fail --silent --show-error -u "$$KESTRA_USER:$$KESTRA_PASSWORD" \
	    -X POST http://localhost:8080/api/v1/main/flows/import -F fileUpload=@$$f >/dev/null && echo "$$f"; \
	done

clean:
	rm -rf $(VENV) $(BENCH_VENV) build dist *.egg-info .pytest_cache .ruff_cache bench/out data
