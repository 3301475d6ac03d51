# QMTL developer commands. `make test` and `make run` work on a fresh machine: they install uv
# with pip when it is missing, then create the workspace environment from uv.lock.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")

.PHONY: uv sync test run bench dist lint

uv:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv

sync: uv
	$(UV) sync --all-packages --locked

# Every test, unit and integration, with a throwaway redis-server and Kafka broker.
test: sync
	$(UV) run --no-sync python scripts/services.py --redis --kafka -- $(UV) run --no-sync pytest

run: sync
	$(UV) run --no-sync python examples/moving_average.py

bench: sync
	$(UV) run --no-sync python scripts/services.py --redis --kafka -- $(UV) run --no-sync python benchmarks/run.py

lint: sync
	$(UV) run --no-sync ruff check .

# -- Release checks ------------------------------------------------------------------------------
.PHONY: isolation

# Five sdists and five wheels in dist/, each checked: metadata, license files, sibling pins,
# changelog entry, wheel contents (scripts/dist_check.py), then `twine check --strict`.
dist: sync
	rm -rf dist
	$(UV) build --all-packages --out-dir dist
	$(UV) run --no-sync python scripts/dist_check.py dist
	$(UV) tool run --from 'twine>=6.1' twine check --strict dist/*

# Each distribution's own tests in a fresh environment holding only that distribution, what it
# declares and pytest tooling, so an undeclared dependency fails (scripts/isolation.py).
isolation: sync
	UV="$(UV)" $(UV) run --no-sync python scripts/services.py --redis --kafka -- $(UV) run --no-sync python scripts/isolation.py
