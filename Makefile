# Two targets a new user needs: `make run` and `make test`. Each builds .venv when missing.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test test-postgres lint bench clean

# The PostgreSQL server test-postgres runs the whole suite against (a fresh database per module).
TEST_POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/openmps serve

# The SQLite suite: needs nothing running. The scale-out tests need PostgreSQL and Redis.
test: $(STAMP)
	$(VENV)/bin/pytest -m "not scale"

# The whole suite on PostgreSQL, with the scale-out tests (Redis at 127.0.0.1:6379 too).
test-postgres: $(STAMP)
	OPENMPS_TEST_DATABASE_URL=$(TEST_POSTGRES_URL) $(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/python bench/own_channel.py

clean:
	rm -rf $(VENV)
