# The two set-up commands of the README: `make demo` and `make test`.
# Each creates the virtualenv, installs the project and checks Postgres, Redis and RabbitMQ first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test lint install services

demo: install services ## Dial a demo campaign end to end against the PBX simulator
	$(BIN)/dialer demo

test: install services ## Run the test suite on the local Postgres, Redis and RabbitMQ
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

services:
	@bash .ci/services
