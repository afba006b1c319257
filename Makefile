# Two commands on a fresh machine: `make run` and `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
WAYBILL_PORT ?= 8000
export WAYBILL_PORT
# pytest-xdist workers; the suite's slow part (end-to-end against runplatform) runs beside the rest.
TEST_WORKERS ?= 2

.PHONY: venv run up down status reset test lint contracts-lock clean bench bench-quick chaos chaos-quick soak soak-quick

$(VENV)/.installed: requirements.txt
	@python=$$(bin/find-python) || exit 1; \
	  echo "Using $$python ($$($$python --version))"; \
	  [ -x $(PY) ] || $$python -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

# What tests need (pytest, Playwright, import-linter, ...) is installed only for them.
# The AsyncAPI specification's JSON Schema too, for the catalog's test (bin/fetch-asyncapi-spec).
ASYNCAPI_SCHEMA := $(VENV)/share/asyncapi/3.0.0.json
$(VENV)/.test-installed: requirements-test.txt $(VENV)/.installed bin/fetch-asyncapi-spec
	$(PY) -m pip install --quiet -r requirements-test.txt
	$(PY) bin/fetch-asyncapi-spec $(ASYNCAPI_SCHEMA)
	@touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) manage.py migrateall
	$(PY) manage.py load_demo
	$(PY) manage.py runplatform --port $(WAYBILL_PORT)

# Services mode; its data (databases, broker, secrets, logs) stays in var/services, or in
# $$WAYBILL_SERVICES_DIR, from one `make up` to the next.
up: venv
	bin/ensure-servers
	PYTHONPATH=platform $(PY) -m launcher.up

# Stop a running `make up` from another terminal (its data stays).
down:
	PYTHONPATH=platform $(PY) -m launcher.up down

status:
	PYTHONPATH=platform $(PY) -m launcher.up status

# Delete what `make up` keeps (refused while it runs).
reset:
	PYTHONPATH=platform $(PY) -m launcher.up reset

test: $(VENV)/.test-installed
	bin/ensure-servers
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup

$(VENV)/.bench-installed: requirements-bench.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-bench.txt
	@touch $@

bench: $(VENV)/.bench-installed
	bin/ensure-servers
	PYTHONPATH=platform:. $(PY) -m bench

bench-quick: $(VENV)/.bench-installed
	bin/ensure-servers
	PYTHONPATH=platform:. $(PY) -m bench --quick

# The chaos run (issue 16): 10,000 orders on services mode while a seeded fault schedule
# (printed at the start) kills processes, the broker and the database; every invariant
# checked, docs/chaos/results.{json,md} and the timeline chart written; fails if any
# invariant does. SEED=<n> repeats a run, ORDERS=<n> RATE=<per s> resize it. chaos-quick:
# a few hundred orders, each fault once, into var/chaos/ (the committed results stay).
CHAOS_ARGS = $(if $(SEED),--seed $(SEED)) $(if $(ORDERS),--orders $(ORDERS)) $(if $(RATE),--rate $(RATE))
chaos: $(VENV)/.bench-installed
	bin/ensure-servers
	PYTHONPATH=platform:. $(PY) -m chaos $(CHAOS_ARGS)

chaos-quick: $(VENV)/.bench-installed
	bin/ensure-servers
	PYTHONPATH=platform:. $(PY) -m chaos --quick $(CHAOS_ARGS)

# The soak (issue 16): half the saturation rate (measured first) for 30 minutes on services
# mode, every process's memory, file descriptors and the databases' connections sampled;
# docs/chaos/soak.{json,md,png}; fails if a process grows more than 10 % after minute 5 or
# a count does not stay flat. MINUTES=<n> RATE=<per s> resize it; soak-quick: 3 minutes,
# growth from minute 1, into var/chaos/.
SOAK_ARGS = $(if $(MINUTES),--minutes $(MINUTES)) $(if $(RATE),--rate $(RATE)) $(if $(SEED),--seed $(SEED))
soak: $(VENV)/.bench-installed
	bin/ensure-servers
	PYTHONPATH=platform:. $(PY) -m chaos.soak $(SOAK_ARGS)

soak-quick: $(VENV)/.bench-installed
	bin/ensure-servers
	PYTHONPATH=platform:. $(PY) -m chaos.soak --quick $(SOAK_ARGS)

lint: $(VENV)/.test-installed
	PYTHONPATH=platform $(VENV)/bin/lint-imports

# Regenerate contracts.lock.json after a compatible change to a message or a new version
# (a breaking change to a published version is refused: see README, "Changing a message").
contracts-lock: venv
	$(PY) manage.py contracts_lock

clean:
	rm -rf $(VENV) var
