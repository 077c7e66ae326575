# The two commands a new user runs: `make run` and `make test` (both start with `make install`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test unit bench clean

install: $(VENV)/.installed
	@# Debian's chromium for the web console's browser tests (as root, as in CI)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: install
	$(BIN)/stratos up

test: install
	$(BIN)/python -m pytest -q

unit: install
	$(BIN)/python -m pytest -q -m "not integration"

bench: install
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
