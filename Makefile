# `make demo` runs the main job on the shipped settings; `make test` runs every check;
# `make install-check` walks a user's first steps from a wheel in a fresh environment.
# Each creates the virtual environment it needs; nothing but Python 3.11+ and make is assumed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install-check lint format golden clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/newsletter build issues/2024-05-03-example.md --tier paid
	$(BIN)/newsletter build issues/2024-05-03-example.md --tier free --out build/free
	$(BIN)/newsletter check issues/2024-05-03-example.md
	bash samples/demo.sh

test: $(STAMP) lint
	$(BIN)/python -m pytest

install-check: $(STAMP)
	bash tests/install_walk.sh $(BIN)/python

lint: $(STAMP)
	$(BIN)/ruff format --check composer tests bench
	$(BIN)/ruff check composer tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format composer tests bench
	$(BIN)/ruff check --fix composer tests bench

golden: $(STAMP)
	UPDATE_GOLDEN=1 $(BIN)/python -m pytest tests/test_golden.py

clean:
	rm -rf $(VENV) build outbox subscribers.db
