# QMTL developer commands. `make test` and `make run` work on a fresh machine: they install uv
# with pip when it is missing, then create the workspace environment from uv.lock.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")

.PHONY: uv sync test run bench dist lint typecheck docs

uv:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv

sync: uv
	$(UV) sync --all-packages --locked

# Every test, unit and integration, with a throwaway redis-server and Kafka broker.
test: sync
	UV="$(UV)" $(UV) run --no-sync python scripts/services.py --redis --kafka -- $(UV) run --no-sync pytest

# The example strategy, on the embedded default (local engine, memory state, no server): one-shot
# daily runs, then the streaming form over a generated minute-price stream.
run: sync
	$(UV) run --no-sync python examples/moving_average.py
	@echo
	$(UV) run --no-sync python examples/streaming_strategy.py

bench: sync
	UV="$(UV)" $(UV) run --no-sync python scripts/services.py --redis --kafka -- $(UV) run --no-sync python benchmarks/run.py

# The API reference from the docstrings (mkdocs + mkdocstrings, mkdocs.yml) into $(SITE); strict,
# so a broken cross-reference fails it (tests/test_docs.py builds it in make test, hence in CI).
SITE ?= site
docs: sync
	$(UV) run --no-sync mkdocs build --strict --site-dir "$(SITE)"

# ruff (lint and format) and mypy, all configured in pyproject.toml (tests/test_static_checks.py runs them too).
lint: sync
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .
	$(UV) run --no-sync mypy

typecheck: sync
	$(UV) run --no-sync mypy

# -- Release checks ------------------------------------------------------------------------------
.PHONY: isolation floors pythons release-check

# Five sdists and five wheels in $(DIST) (default dist/), each checked: metadata, license files,
# sibling pins, changelog entry, tested Python versions, wheel contents (scripts/dist_check.py),
# then `twine check --strict`. `make dist PACKAGE=qmtl-state-redis` builds and checks that
# distribution alone, leaving exactly its sdist and wheel in $(DIST) (RELEASING.md).
PACKAGE ?=
DIST ?= dist
dist: sync
	rm -rf "$(DIST)"
	$(UV) build $(if $(PACKAGE),--package $(PACKAGE),--all-packages) --out-dir "$(DIST)"
	rm -f "$(DIST)/.gitignore"  # uv's; dist/ is ignored by the root .gitignore
	$(UV) run --no-sync python scripts/dist_check.py "$(DIST)" $(if $(PACKAGE),--package $(PACKAGE))
	$(UV) run --no-sync twine check --strict "$(DIST)"/*

# Every distribution at the lowest versions it declares (uv --resolution lowest-direct, nothing
# compiled), running its unit tests (scripts/floors.py).
floors: sync
	UV="$(UV)" $(UV) run --no-sync python scripts/floors.py

# The unit tests on the other tested Python versions (3.12, 3.13), each in .venvs/py<X.Y> synced
# from uv.lock (scripts/pythons.py); `make test` covers 3.11.
pythons: sync
	UV="$(UV)" $(UV) run --no-sync python scripts/pythons.py

# Fails when a distribution's shipped files changed since its last release tag without a
# version bump (scripts/release.py --check; make test runs it too).
release-check: sync
	$(UV) run --no-sync python scripts/release.py --check

# Each distribution's own tests in a fresh environment holding only that distribution, what it
# declares and pytest tooling, so an undeclared dependency fails (scripts/isolation.py).
isolation: sync
	UV="$(UV)" $(UV) run --no-sync python scripts/services.py --redis --kafka -- $(UV) run --no-sync python scripts/isolation.py

.PHONY: audit
# Known-vulnerability audit (pip-audit, PyPI advisory data) of every locked third-party package:
# all workspace packages' dependencies and every dependency group, exactly as pinned in uv.lock.
# The workspace's own packages are not published yet and are left out. --strict makes a package
# that cannot be looked up fail the audit instead of silently passing it. Accepted findings and
# why: docs/reliability.md ("Dependency audit"); add one with --ignore-vuln ID next to its reason.
audit: uv
	@req=$$(mktemp) && trap 'rm -f "$$req"' EXIT && \
	$(UV) export --frozen --no-hashes --all-packages --no-emit-workspace --all-groups \
		--quiet --output-file "$$req" && \
	$(UV) tool run pip-audit@2.10.1 --requirement "$$req" --disable-pip --no-deps --strict \
		--progress-spinner off
