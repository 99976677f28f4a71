# The two commands: `make demo` (the main job on a throwaway "gaming PC" container)
# and `make test` (every set-up step the tests need, then the whole suite).
#
# Another Python: `make test PYTHON=~/.pyenv/versions/3.12.1/bin/python3` builds and uses
# its own venv (.venv-3.12), so versions never share installed packages.
# `make test-core` runs the core set only (unit, wire, golden frames, the stream core's model, relay, resume, what a supervisor leaves out,
# the packets a message costs):
# what CI runs on the Pythons other than its main one.

PYTHON ?= python3
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
ifeq ($(PY_VERSION),)
$(error cannot run $(PYTHON): set PYTHON to a Python 3.11+ interpreter)
endif
ifeq ($(origin PYTHON),file)
VENV ?= .venv
else
VENV ?= .venv-$(PY_VERSION)
endif
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

CORE_TESTS := tests/test_addresses.py tests/test_config_policy.py tests/test_wake.py tests/test_wire.py \
              tests/test_golden_frames.py tests/test_watchdog.py tests/test_stream_core.py tests/test_resume.py tests/test_lean.py tests/test_ssh_packets.py $(wildcard tests/test_relay*.py)
PYTEST_ARGS ?=

.PHONY: test test-core lint demo testbed venv bench clean

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

# pytest exits 5 when it collected nothing: make fails on it like on any other failure.
test: venv testbed lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-core: venv testbed
	$(PY) -m pytest $(PYTEST_ARGS) $(CORE_TESTS)

demo: venv testbed
	$(PY) -m tests.demo

bench: venv testbed
	$(PY) -m bench.run

clean:
	rm -rf .venv .venv-* .pytest_cache
