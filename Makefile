# The two commands: `make demo` (the main job on a throwaway "gaming PC" container)
# and `make test` (every set-up step the tests need, then the whole suite).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test lint demo testbed venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

testbed:
	bash docker/testbed.sh

lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

test: venv testbed lint
	$(PY) -m pytest

demo: venv testbed
	$(PY) -m tests.demo

bench: venv testbed
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache
