# The two commands: `make demo` (the main job on a throwaway "gaming PC" container)
# and `make test` (every set-up step the tests need, then the whole suite).
#
# Another Python: `make test PYTHON=~/.pyenv/versions/3.12.1/bin/python3` builds and uses
# its own venv (.venv-3.12), so versions never share installed packages.
# `make test-core` runs the core set only (unit, wire, golden frames, the stream core's model, relay, resume, what a supervisor leaves out,
# the packets a message costs):
# what CI runs on the Pythons other than its main one.
# `make test-quick` runs every test that needs no Docker engine (`pytest -m "not docker"`: tests/unit/,
# tests/contracts/; tests/e2e/ and every test that starts a container are marked docker), in under a
# minute, with the venv only: no test bed. It checks the stream core's properties on fewer examples;
# `make test` and `make test-core` run the full proof count (GT_REMOTE_FULL_PROOF=1).

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

CORE_TESTS := tests/unit/test_addresses.py tests/unit/test_config_policy.py tests/unit/test_wake.py tests/unit/test_wire.py \
              tests/contracts/test_golden_frames.py tests/unit/test_watchdog.py tests/unit/test_stream_core.py \
              tests/unit/test_resume.py tests/e2e/test_resume.py tests/e2e/test_resume_streams.py tests/unit/test_lean.py \
              tests/unit/test_ssh_packets.py tests/e2e/test_ssh_packets.py \
              $(wildcard tests/unit/test_relay*.py tests/contracts/test_relay*.py tests/e2e/test_relay*.py)
PYTEST_ARGS ?=

.PHONY: test test-core test-quick lint demo testbed testbed-demo venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

testbed:
	bash docker/testbed.sh

# Only what the demo needs: the Docker engine and the images, none of the laptop programs the tests drive.
testbed-demo:
	GT_REMOTE_TESTBED=demo bash docker/testbed.sh

lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# pytest exits 5 when it collected nothing: make fails on it like on any other failure.
test: venv testbed lint
	GT_REMOTE_FULL_PROOF=1 $(PY) -m pytest $(PYTEST_ARGS)

test-core: venv testbed
	GT_REMOTE_FULL_PROOF=1 $(PY) -m pytest $(PYTEST_ARGS) $(CORE_TESTS)

test-quick: venv
	$(PY) -m pytest -m "not docker" $(PYTEST_ARGS)

demo: venv testbed-demo
	$(PY) -m tests.demo

bench: venv testbed
	$(PY) -m bench.run

clean:
	rm -rf .venv .venv-* .pytest_cache
