# Parley: the two quick-start commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test fresh-install testbed testbed-down venv venv-test lint bench clean

run: venv
	$(BIN)/parley up

test: venv-test testbed
	$(BIN)/pytest

# `pip install .` (no extras) into an empty temporary venv: every deployable imports, and
# `parley up` / `parley signaling` serve a page and a WebSocket (.ci/run runs it first).
fresh-install:
	$(PYTHON) .ci/fresh_install.py

venv: $(VENV)/.run-installed
$(VENV)/.run-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e .
	touch $@

venv-test: $(VENV)/.test-installed
$(VENV)/.test-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.run-installed

testbed:
	$(PYTHON) testbed/provision.py up

testbed-down:
	$(PYTHON) testbed/provision.py down

lint: venv-test
	$(BIN)/ruff check .

bench: venv-test testbed
	$(BIN)/python -m bench                    # call-server forwarding vs Janus
	ulimit -n 20000 && $(BIN)/python -m bench.signaling   # 5,000 WebSocket clients
	$(BIN)/python -m bench.join_time          # page load to first decoded frame
	$(BIN)/python -m bench.recording_bench    # file creator speed vs real time
	$(BIN)/python -m bench.operator_meetings 500     # operator: 500 Meetings to Ready

clean:
	rm -rf $(VENV) var
