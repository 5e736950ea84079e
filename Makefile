# The two commands: `make run` and `make test`. Everything else is an extra.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALL_STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test install test-quick bench bench-retrieval bench-hybrid bench-engine api ui clean

run: $(INSTALL_STAMP)  ## install on first use, ingest docs/, start the API and the UI
	@bash scripts/run.sh

test: $(TEST_STAMP)  ## install the test extras and run the whole suite (what CI runs)
	$(PY) -m pytest

test-quick: $(TEST_STAMP)  ## the suite without the slow and browser tests
	$(PY) -m pytest -m "not slow and not browser"

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
	rm -rf $(VENV) .pytest_cache test-artifacts
