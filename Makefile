# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# pytest-xdist workers: most process tests wait on their daemons, so two workers halve the suite's time on
# two cores. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

.PHONY: run test test-matrix test-adopter install install-dev bench bench-quick chaos clean

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

# Start every daemon of the showcase under one supervisor (detached), serve the site in the
# foreground; on exit (Ctrl-C included) stop them all so nothing is left behind. DEBUG=1:
# this is the development server (production refuses to start without its settings).
run: export DEBUG ?= 1
run: install .env
	$(PY) manage.py migrate --no-input
	@# Daemons left running by an earlier session are reused, not started twice.
	$(PY) manage.py daemonstatus >/dev/null 2>&1 || $(PY) manage.py rundaemon --all --detach
	@trap '$(PY) manage.py stopdaemon --all' EXIT; \
	trap 'exit 0' INT TERM; \
	$(PY) manage.py runserver $(HOST):$(PORT)

# The development settings of this checkout, for `make run` and every command run in any other terminal:
# written once (never over an existing .env), readable by its owner only, with a secret key of its own.
.env:
	@key="$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" && umask 077 && \
	printf '%s\n' "# Development settings, written by the first make run. .env.example lists every variable." \
	    "DEBUG=1" "SECRET_KEY=$$key" >$@.tmp && mv $@.tmp $@
	@echo "make run: wrote .env for development (DEBUG=1 and a generated SECRET_KEY); every command of this checkout reads it"

# ruff and mypy (configured in pyproject.toml) check the whole repository first; either failing fails
# the target before any test runs. The suite then runs in a test environment of its own
# (scripts/test-env.d/run.py): a fresh PostgreSQL cluster and temporary directory for this run, all
# stopped and removed afterwards, whether the tests pass, fail or are interrupted. PYTEST_ARGS picks
# tests: make test PYTEST_ARGS="tests/daemons -x". Each worker has its own SQLite test database; the
# PostgreSQL tests each make a database of their own on the run's cluster.
test: install-dev
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) scripts/test-env.d/run.py $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The interpreters pyenv installed (3.11 to 3.13), ahead of its shims, which run only the global one.
PYENV_ROOT ?= $(HOME)/.pyenv
empty :=
PYENV_PATH := $(subst $(empty) $(empty),:,$(wildcard $(PYENV_ROOT)/versions/3.1[1-3].*/bin))

# The framework's own tests against the built wheel, on every supported Django and Python (noxfile.py), in a
# test environment of their own as `make test` has. NOX_ARGS picks sessions:
# make test-matrix NOX_ARGS="-s 'framework(3.12-django6.1)'".
test-matrix: export PATH := $(PYENV_PATH):$(PATH)
test-matrix: install-dev
	$(PY) scripts/test-env.d/run.py $(PY) -m nox --no-color $(NOX_ARGS)

# The adopter test (tests/test_adopter.py) on another Python and Django line, e.g.
# make test-adopter ADOPTER_PY=3.12 ADOPTER_DJANGO=6.1 (`make test` runs it on this venv's Python and Django 5.2).
test-adopter: export PATH := $(PYENV_PATH):$(PATH)
test-adopter: export ADOPTER_PY ?=
test-adopter: export ADOPTER_DJANGO ?=
test-adopter: install-dev
	$(PY) scripts/test-env.d/run.py $(PY) -m pytest -p no:cacheprovider tests/test_adopter.py

# Ours against the peers (python -m bench.run). The peers are installed for the benchmark only.
$(VENV)/.installed-bench: bench/requirements.txt $(VENV)/.installed-dev
	$(PY) -m pip install --quiet -r bench/requirements.txt
	touch $@

# BENCH_ARGS passes options through, e.g. make bench BENCH_ARGS="--customers 1000 --runs 5".
bench: $(VENV)/.installed-bench
	$(PY) -m bench.run --docs $(BENCH_ARGS)

bench-quick: $(VENV)/.installed-bench
	$(PY) -m bench.run --quick $(BENCH_ARGS)

# A chaos run (bench/chaos.py, docs/reliability.md): daemons on two hosts, signups through gunicorn, a fault
# every few seconds for CHAOS_MINUTES, then the onboarding promise checked; report in var/chaos/.
# CHAOS_SEED repeats a run's faults: make chaos CHAOS_MINUTES=60 CHAOS_SEED=123456
CHAOS_MINUTES ?= 10
chaos: install-dev
	CHAOS_SEED=$(CHAOS_SEED) $(PY) -m bench.chaos --minutes $(CHAOS_MINUTES)

clean:
	rm -rf $(VENV) var
