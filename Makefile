# One obvious way to run each thing. Every target sets up what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup run test lint bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

# Start the proxy on the embedded store with the built-in demo provider.
run: setup
	$(BIN)/lunos-proxy serve --config config/lunos.yaml

# Tests start their own redis-server and PostgreSQL processes (initdb in a
# temp dir, tests/pg_servers.py), check the dashboards with promtool and
# drive Debian's chromium with axe-core (npm, pinned in
# tests/console/package-lock.json) for the console's browser test;
# install them when missing.
test: setup
	@command -v redis-server >/dev/null || scripts/install-system-packages.sh redis-server
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| scripts/install-system-packages.sh postgresql
	@command -v promtool >/dev/null || scripts/install-system-packages.sh prometheus
	@command -v chromium >/dev/null || scripts/install-system-packages.sh chromium
	@command -v npm >/dev/null || scripts/install-system-packages.sh npm
	@cmp -s tests/console/package-lock.json tests/console/node_modules/.installed-lock || \
		(cd tests/console && npm ci --no-audit --no-fund --silent && cp package-lock.json node_modules/.installed-lock)
	$(BIN)/ruff check lunos_proxy plugins tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check lunos_proxy plugins tests bench
	$(BIN)/mypy

bench: setup
	@command -v wrk >/dev/null || scripts/install-system-packages.sh wrk
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
