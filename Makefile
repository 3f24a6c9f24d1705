# The two commands: `make run` and `make test`. Both build .venv from pyproject.toml when needed.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
STORE   ?= var/chipledger.db
HOST    ?= 127.0.0.1
PORT    ?= 8000

.PHONY: run test lint typecheck schemas bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/chipledger demo --store $(STORE) --dir var
	$(BIN)/chipledger serve --store $(STORE) --log-key var/log.key --host $(HOST) --port $(PORT) --open-reads

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

schemas: $(STAMP)
	$(BIN)/chipledger schemas --out schemas

bench: $(STAMP)
	$(BIN)/chipledger bench

clean:
	rm -rf $(VENV) var
