# kdump-agent: `make demo` shows a real panic saved by the agent; `make test` runs everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BINARY := dist/kdump-agent
SOURCES := $(shell find agent/kdump_agent dracut-module build -type f -not -path '*/__pycache__/*' -not -path 'build/work/*')

.PHONY: all deps venv binary lint test test-unit test-e2e demo bench clean

all: binary

deps: .stamp-deps
.stamp-deps: tools/install-deps.sh
	sh tools/install-deps.sh
	touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

binary: $(BINARY)
$(BINARY): $(SOURCES) | deps venv
	$(VENV)/bin/pyinstaller --noconfirm --log-level WARN --distpath dist \
		--workpath build/work build/kdump-agent.spec
	@ls -l $(BINARY)

lint: venv
	$(VENV)/bin/ruff check agent --select F,E,W,I
	$(VENV)/bin/mypy --strict agent/kdump_agent

test: deps venv binary lint
	$(PY) -m pytest tests

test-unit: venv
	$(PY) -m pytest tests/unit

test-e2e: deps venv binary
	$(PY) -m pytest tests/e2e

demo: deps venv binary
	$(PY) tests/e2e/demo.py

bench: deps venv binary $(VENV)/.stamp-bench
	$(PY) bench/run.py

$(VENV)/.stamp-bench: requirements-bench.txt | venv
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

clean:
	rm -rf dist build/work .pytest_cache
