# Set-up is part of every target: a fresh machine needs nothing but python3 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test check pytest bench docs

setup: $(STAMP)

$(STAMP): pyproject.toml erp/tryton/pyproject.toml src/revbridge/formats/x12/_fast835.c \
		src/revbridge/normalise/_fast_x12_835.c src/revbridge/store/_plain_json.c \
		src/revbridge/_native/slot_shapes.h
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,erp]' -e erp/tryton
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/revbridge demo --workdir demo-work

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest

test: check pytest

bench: $(STAMP)
	$(BIN)/python bench/book.py

docs: $(STAMP)
	$(BIN)/revbridge docs --write docs/configuration.md

# The fault suite's long run (docs/faults.md): bigger counts, more iterations, real disk.
.PHONY: faults-long
faults-long: $(STAMP)
	REVBRIDGE_FAULTS_LONG=1 $(BIN)/pytest -p no:cacheprovider -m faults -rxX -s tests/faults
	$(BIN)/python -m tests.faults.restart_time --rounds 5
