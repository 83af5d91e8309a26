# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-dev bench bench-quick clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Start the onboarding daemon detached, serve the site in the foreground; on exit
# (Ctrl-C included) stop the daemon so nothing is left behind.
run: install
	$(PY) manage.py migrate --no-input
	@# A daemon left running by an earlier session is reused, not started twice.
	$(PY) manage.py daemonstatus onboarding >/dev/null || $(PY) manage.py rundaemon onboarding --detach
	@trap '$(PY) manage.py stopdaemon onboarding' EXIT; \
	trap 'exit 0' INT TERM; \
	$(PY) manage.py runserver $(HOST):$(PORT)

test: install-dev
	@# Each script in scripts/test-env.d/ readies one thing the tests need (a server, a browser).
	@for script in scripts/test-env.d/*.sh; do [ -e "$$script" ] || continue; bash "$$script" || exit 1; done
	$(PY) -m pytest

# Ours against the peers (bench/run.py). The peers are installed for the benchmark only.
$(VENV)/.installed-bench: bench/requirements.txt $(VENV)/.installed-dev
	$(PY) -m pip install --quiet -r bench/requirements.txt
	touch $@

# BENCH_ARGS passes options through, e.g. make bench BENCH_ARGS="--customers 1000 --runs 5".
bench: $(VENV)/.installed-bench
	$(PY) bench/run.py --docs $(BENCH_ARGS)

bench-quick: $(VENV)/.installed-bench
	$(PY) bench/run.py --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
