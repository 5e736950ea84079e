# The two commands: `make run` and `make test`. Everything else is an extra.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALL_STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint install test-quick bench bench-retrieval bench-hybrid bench-engine api ui clean

run: $(INSTALL_STAMP)  ## install on first use, ingest docs/, start the API and the UI
	@bash scripts/run.sh

test: lint  ## install the test extras, lint and type-check, and run the whole suite (what CI runs)
	$(PY) -m pytest

test-quick: lint  ## the suite without the slow and browser tests
	$(PY) -m pytest -m "not slow and not browser"

lint: $(TEST_STAMP)  ## ruff (style, import order, no print) and mypy, as configured in pyproject.toml
	$(PY) -m ruff check .
	$(PY) -m mypy

install: $(INSTALL_STAMP)

$(INSTALL_STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	@touch $@

$(TEST_STAMP): $(INSTALL_STAMP)
	bash scripts/install.sh --test
	@touch $@

bench-retrieval: $(INSTALL_STAMP)  ## dense retrieval quality per embedder on ../shared/data
	$(PY) bench/embedders.py --json

bench-hybrid: $(INSTALL_STAMP)  ## BM25 vs dense (e5) vs hybrid on ../shared/data; passage vectors cached in /tmp
	$(PY) bench/hybrid.py --max-queries 300

bench-engine: $(INSTALL_STAMP)  ## continuous batching vs one-after-another vs llama-server (same llama.cpp, built into /tmp once)
	LS=$$(bash bench/setup_llama_server.sh --matched 2>/dev/null | tail -n 1); \
	$(PY) bench/engine.py --json $${LS:+--llama-server-bin $$LS}

bench: bench-retrieval bench-hybrid bench-engine

api: $(INSTALL_STAMP)
	$(VENV)/bin/consulta serve

ui: $(INSTALL_STAMP)
	$(VENV)/bin/consulta ui

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
