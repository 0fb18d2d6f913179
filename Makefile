# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_HOUSEHOLDS ?= 20000

.PHONY: install install-dev browser-deps pgbouncer-deps redis-deps drill-deps drill restore-deps drill-restore drill-faults soak demo test lint typecheck hadolint pytest wheel-check bench clean messages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"

## The browser tests' own needs: Debian's Chromium (Playwright drives /usr/bin/chromium; its
## own browser download is not used) and axe-core from npm (tests/web/package-lock.json).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }
	npm ci --prefix tests/web --no-audit --no-fund --silent

## The pgbouncer tests' own need: Debian's pgbouncer (tests/service/test_pgbouncer.py starts
## one of its own in transaction mode in front of the test PostgreSQL).
pgbouncer-deps:
	@test -x /usr/sbin/pgbouncer || command -v pgbouncer >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq pgbouncer >/dev/null; }

## The fault tests' own need: Debian's redis-server (tests/faults/test_fault_redis.py stops
## and stalls a Redis of its own on a free port; the shared Redis is never touched).
redis-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

## The failover drill's own needs: Debian's Patroni, etcd and HAProxy (the nodes run the
## machine's PostgreSQL 15, /usr/lib/postgresql/15/bin, which the tests need anyway).
drill-deps:
	@command -v patroni >/dev/null 2>&1 && command -v etcd >/dev/null 2>&1 && \
	  test -x /usr/sbin/haproxy || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq patroni etcd-server haproxy >/dev/null; }
	@test -x /usr/lib/postgresql/15/bin/postgres || { \
	  echo "the drill needs PostgreSQL 15's server binaries in /usr/lib/postgresql/15/bin" >&2; exit 1; }

## Kill, then freeze, the primary of a two-node Patroni cluster (deploy/) under look-ups,
## exports and update batches (tests/drill), check what clients saw, print the failover
## windows. Ports 5540-5599, data under /tmp/failover-*, everything stopped and removed after.
drill: install-dev drill-deps
	$(BIN)/pytest -q -s tests/drill

## The restore drill's own need: Debian's pgBackRest (it depends only on libraries and
## postgresql-common, which the machine's PostgreSQL already has: no server is installed
## or restarted). Its clusters run the machine's PostgreSQL 15, as the drill does.
restore-deps:
	@command -v pgbackrest >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends pgbackrest >/dev/null; }
	@test -x /usr/lib/postgresql/15/bin/postgres || { \
	  echo "the restore drill needs PostgreSQL 15's server binaries in /usr/lib/postgresql/15/bin" >&2; exit 1; }

## Back up a registry with pgBackRest (WAL archived), write update batches, note an instant
## T, write more, restore to T into a new data folder and check it (tests/restore). A
## cluster of its own on ports 5600-5649, everything under /tmp/restore-*, removed after.
drill-restore: install-dev restore-deps
	$(BIN)/pytest -q -s tests/restore

## The fault drill (tests/faults; CI runs it after `make test`), each test printing its
## figure: PostgreSQL stopped -m immediate under look-ups, exports and batches, a connection
## cut at COMMIT, an API worker killed, Redis stopped and stalled. Three to six minutes,
## most of it creating and seeding databases; its servers are its own, never the shared ones.
drill-faults: install-dev redis-deps
	$(BIN)/pytest -q -s tests/faults

## Soak: SOAK_MINUTES (10) of a realistic mix of callers (locust, headless) against `nser
## serve --workers 2` and a separate `nser worker` on a fresh registry of SOAK_HOUSEHOLDS
## (100,000; dropped after); fails on a 5xx, a lost update or memory that is not flat
## (bench/soak.py, bench/README.md). Not part of `make test`. More options: SOAK_ARGS, e.g.
## SOAK_ARGS="--reuse-db DB --users 40".
SOAK_MINUTES ?= 10
SOAK_HOUSEHOLDS ?= 100000
soak: install-dev
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES) --households $(SOAK_HOUSEHOLDS) $(SOAK_ARGS)

## Install, start the embedded PostgreSQL, seed a demo registry, print CNICs to try, serve.
demo: install
	$(BIN)/nser demo --households $(DEMO_HOUSEHOLDS)

lint:
	$(BIN)/ruff check app tests bench migrations scripts
	$(BIN)/ruff format --check app tests bench migrations scripts

typecheck:
	$(BIN)/mypy

hadolint:
	$(BIN)/hadolint Dockerfile

## The whole suite; it includes tests/service/test_wheel.py (see wheel-check). Modules run
## on PYTEST_WORKERS processes, each module whole on one of them (its fixtures built once).
## The failover drill (tests/drill) runs on its own: `make drill`; the restore drill
## (tests/restore) too: `make drill-restore`.
PYTEST_WORKERS ?= 2
pytest:
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --ignore=tests/drill --ignore=tests/restore --ignore=tests/faults

## The wheel on its own: build it, install it into a fresh venv, then from a temporary
## folder migrate, seed and serve a fresh PostgreSQL database (part of `make test` too).
wheel-check:
	$(BIN)/pytest -q tests/service/test_wheel.py

## Install with dev extras, the browser, pgbouncer and redis-server, then lint, type-check,
## hadolint and the test suite.
test: install-dev browser-deps pgbouncer-deps lint typecheck hadolint pytest

## The website's Urdu catalogues: add new messages to the .po files, then check and compile.
messages:
	$(BIN)/python -m app.web.catalogues update
	$(BIN)/python -m app.web.catalogues compile

clean:
	rm -rf $(VENV) .nser .pytest_cache .mypy_cache .ruff_cache
