# taxi-loader: common tasks. `make install` once, then `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TAXI ?= yellow
MONTH ?= 2021-01
SINK ?= postgres

.PHONY: install test lint bench bench-big load clean

install: $(BIN)/taxi-loader  ## create .venv with the pinned tools and the package

$(BIN)/taxi-loader: setup.cfg pyproject.toml requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -e .
	touch $@

test: install  ## the test suite, against the PostgreSQL at TAXI_LOADER_TEST_SERVER (default 127.0.0.1:5432)
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check taxi_loader tests bench

bench: install  ## the loader against PostgreSQL's own COPY, for a 1,369,765-row month
	$(BIN)/python bench/bench.py

bench-big: install  ## the same for a 7,667,792-row month (yellow 2019-01 size)
	$(BIN)/python bench/bench.py --rows 7667792 --runs 1

load: install  ## one month: make load TAXI=green MONTH=2019-01
	$(BIN)/taxi-loader load --sink $(SINK) --taxi $(TAXI) --month $(MONTH)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache bench/out data
