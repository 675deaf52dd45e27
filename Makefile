# pymate-relay: `make run` serves on 127.0.0.1:2222 with keys in ./keys; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
KEYS   ?= keys
HOST   ?= 127.0.0.1
PORT   ?= 2222

.PHONY: install run lint test bench clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-system-packages
	./scripts/install-system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: install
	$(BIN)/pymate-relay keygen -k $(KEYS) -h $(HOST) -p $(PORT)
	$(BIN)/pymate-relay -k $(KEYS) -b $(HOST) -p $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/host_session.py
	$(BIN)/python bench/viewer.py
	$(BIN)/python bench/terminal_ingest.py
	$(BIN)/python bench/render.py
	$(BIN)/python bench/codec.py

clean:
	rm -rf $(VENV) build *.egg-info
