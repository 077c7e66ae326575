# The two commands a new user runs: `make run` and `make test` (both start with `make install`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA_LIBS := $(VENV)/kafka/libs

.PHONY: install browser haproxy console-assets run test unit lint lock bench docs clean

# what `make lint` checks: ruff (lint + format) and mypy, with the settings of pyproject.toml
# (mypy strict on actors/, streams/, schemas/ and the example clients, checked on the rest:
# tests and bench leniently, as pyproject.toml says).
LINT_PATHS := actors streams schemas examples infra tests bench

install: $(VENV)/.installed

# Debian's chromium, for the web console's tests in a real headless browser (root, as in CI)
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# the web console's third-party front-end code, from npm at the versions and checksums of
# infra/api/console/package-lock.json (`npm ci`), copied where the API serves it (/console/vendor):
# the Monaco editor (the definitions' JSON editor) and axe-core (the console tests' accessibility check)
CONSOLE := infra/api/console
console-assets: $(CONSOLE)/vendor/.copied

$(CONSOLE)/vendor/.copied: $(CONSOLE)/package.json $(CONSOLE)/package-lock.json
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq npm)
	npm ci --prefix $(CONSOLE) --ignore-scripts --no-audit --no-fund --loglevel=error
	rm -rf $(CONSOLE)/vendor && mkdir -p $(CONSOLE)/vendor/monaco $(CONSOLE)/vendor/axe-core
	cp -r $(CONSOLE)/node_modules/monaco-editor/min/vs $(CONSOLE)/node_modules/monaco-editor/LICENSE $(CONSOLE)/vendor/monaco/
	cp $(CONSOLE)/node_modules/axe-core/axe.min.js $(CONSOLE)/node_modules/axe-core/LICENSE $(CONSOLE)/vendor/axe-core/
	touch $@

# Debian's HAProxy (2.6: Runtime API `add server` / `del server`), for `stratos lb` and its tests
haproxy:
	command -v haproxy >/dev/null || (apt-get update -qq && apt-get install -y -qq haproxy)

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt $(KAFKA_LIBS)/.fetched
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# Apache Kafka (KRaft) for the embedded broker: pinned in infra/broker/pom.xml, fetched from
# Maven Central by the machine's Maven (which checks every jar's checksum) into the venv
$(KAFKA_LIBS)/.fetched: infra/broker/pom.xml
	@command -v java >/dev/null || { echo "make install: java is missing (Java 17+: apt-get install -y openjdk-17-jre-headless)" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "make install: mvn is missing (Maven: apt-get install -y maven)" >&2; exit 1; }
	rm -rf $(KAFKA_LIBS)
	mvn --batch-mode --quiet --strict-checksums -f infra/broker/pom.xml dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory=$(abspath $(KAFKA_LIBS))
	touch $@

run: install console-assets
	$(BIN)/stratos up

# three workers, one test file each at a time: most tests wait on a broker, a process or a
# browser, so two cores run three files at once (each worker has its own embedded broker)
test: install browser haproxy console-assets docs lint
	$(BIN)/python -m pytest -q -n 3 --dist loadfile

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy $(LINT_PATHS)

# constraints.txt pins every third-party package `make install` takes (the project's own
# requirements and the test extras, with everything they pull in). Refresh it after changing a
# requirement in setup.cfg, or to move to newer releases: a fresh venv resolves setup.cfg from
# scratch (no pins), then its `pip freeze` (less the project itself) becomes constraints.txt.
# Then `make install` (it reinstalls when constraints.txt changes) and `make test`.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet -e '.[test]'
	{ echo "# third-party pins for make install, written by make lock ($$($(LOCK_VENV)/bin/python --version)): do not edit by hand"; \
		$(LOCK_VENV)/bin/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)

unit: install
	$(BIN)/python -m pytest -q -m "not integration"

# every benchmark (slow); each one's last stdout line, a JSON object, stamped with the date and
# commit into bench/results/<name>.json (its whole output in bench/results/<name>.out, not in git);
# `make docs` renders them on the Benchmarks page
bench: install
	@mkdir -p bench/results
	@for b in bench/*.py; do n=$$(basename $$b .py); [ $$n = common ] && continue; echo "== $$b"; \
		$(BIN)/python $$b | tee bench/results/$$n.out; \
		tail -n 1 bench/results/$$n.out | $(BIN)/python docs/gen_benchmarks.py stamp > bench/results/$$n.json.new \
			&& mv bench/results/$$n.json.new bench/results/$$n.json \
			|| { rm -f bench/results/$$n.json.new; echo "$$b: no result line (bench/results/$$n.out)" >&2; exit 1; }; \
	done

# the documentation site into site/: the reference pages generated from the code, then MkDocs
docs: install
	$(BIN)/python docs/gen_reference.py && $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info $(CONSOLE)/node_modules $(CONSOLE)/vendor
