# Quick start:  make run   (server on 127.0.0.1:2525 with etc/mx.yaml)
#               make test  (installs what the tests need, runs the whole suite)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= etc/mx.yaml

.PHONY: run test lint check-config clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/twistd --nodaemon --pidfile= mxbackup --config $(CONFIG)

check-config: $(STAMP)
	$(VENV)/bin/mxbackup check-config $(CONFIG)

test: $(STAMP)
	bash tests/install-system-deps.sh
	$(PY) -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(VENV)/bin/ruff check mxbackup tests twisted bench packaging
	$(VENV)/bin/ruff format --check mxbackup tests twisted bench packaging

clean:
	rm -rf $(VENV) *.egg-info spool twisted/plugins/dropin.cache
