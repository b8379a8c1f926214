# Two commands set everything up on a fresh machine: `make serve` and `make test`.
# Both create .venv and install the project into it the first time.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8080

.PHONY: serve test browser fuzz bench clean

# flock: `make serve` and `make test` started together must not install into .venv at once.
# uv resolves, downloads and installs in parallel: a fresh set-up takes about 30 s, where
# pip took 110-130 s. Bytecode is compiled at install, as pip does, so that no process
# compiles modules on import where PYTHONDONTWRITEBYTECODE is set.
$(STAMP): pyproject.toml
	flock .venv.lock sh -c '$(PYTHON) -m venv $(VENV) \
	  && $(BIN)/pip install --quiet uv==0.13.9 \
	  && $(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -e ".[dev]" \
	  && touch $(STAMP)'

# Webhooks may go to receivers on this machine (the tour runs one); `modelyard serve` itself
# sends only over https to public addresses unless told otherwise.
serve: $(STAMP)  ## start the registry on http://127.0.0.1:$(PORT) (SQLite + ./modelyard-data)
	$(BIN)/modelyard serve --port $(PORT) --webhook-allow-hosts 127.0.0.1

test: $(STAMP) browser  ## lint, type-check and run the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2

browser:  ## Debian's chromium for the browser tests, installed when missing (root + apt)
	@sh tests/ensure_chromium.sh

fuzz: $(STAMP)  ## Schemathesis on every operation, a long campaign (FUZZ_SECONDS per run)
	MODELYARD_FUZZ_SEED=random MODELYARD_FUZZ_SECONDS=$(or $(FUZZ_SECONDS),600) $(BIN)/pytest tests/test_fuzz.py -v

bench: $(STAMP)  ## the benchmark, side by side with MLflow (see docs/benchmarks.md)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) modelyard-data .pytest_cache .mypy_cache .ruff_cache
