# ragsite: `make run` to use it, `make test` to check it. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: run stop test test-fast bench lint mypy-baseline format install chromium oidc-provider clean vendor-pdfjs

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch first and exactly: 2.13.0 is the CPU build; letting the resolver pick pulls CUDA wheels.
$(STAMP): pyproject.toml packaging/en_core_web_sm/pyproject.toml | $(PY)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]" ./packaging/en_core_web_sm
	touch $(STAMP)

install: $(STAMP)

## Start the embedded database, a worker and the web server; prints the URL and admin login.
## Ctrl-C stops all of it; so does `make stop` from another terminal.
run: install
	$(PY) manage.py serve

## Stop what `make run` started from this data dir (also processes a killed run left behind).
stop:
	$(PY) manage.py serve --stop

## Install and run the whole suite (browser tests need Debian's chromium; installed when missing).
## The suite runs in a network namespace with only loopback (tests/netns_run.sh): nothing can leave.
test: install chromium oidc-provider
	PY=$(PY) tests/netns_run.sh

## The suite without the browser tests (marker e2e) and those with a real Celery worker (worker):
## tests/_markers.py marks them by the fixtures they use. Same no-egress guard as `make test`.
test-fast: install
	PY=$(PY) tests/netns_run.sh -m "not e2e and not worker"

chromium:
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || echo "chromium missing: browser tests will be skipped, and fail under CI=true (apt-get install chromium)"; }

# The OpenID Connect provider the SSO browser tests start on loopback (npm's oidc-provider, from the
# committed lock file): installed here, since the suite itself runs without a network.
OIDC_PROVIDER := tests/oidc/node_modules/.package-lock.json
oidc-provider:
	@[ $(OIDC_PROVIDER) -nt tests/oidc/package-lock.json ] || { command -v npm >/dev/null && (cd tests/oidc && npm ci --no-audit --no-fund --silent); } || echo "npm missing: the SSO browser tests will be skipped, and fail under CI=true (apt-get install nodejs npm)"

## Benchmarks: ingestion throughput, retrieval latency, retrieval quality on the dev set.
bench: install
	$(PY) bench/run.py

# Lint needs no database: importing the settings starts nothing (ragsite.bootstrap does, and these
# commands skip it), so makemigrations' history check only warns that it could not connect: silenced.
NO_HISTORY_WARNING := -W "ignore:Got an error checking a consistent migration history:RuntimeWarning"

## Style, import layers (pyproject [tool.importlinter]), types (new errors only: mypy-baseline.txt),
## migrations in step with the models. .pre-commit-config.yaml runs the same.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) tools/mypy_baseline.py check
	$(PY) $(NO_HISTORY_WARNING) manage.py makemigrations --check --dry-run

## Rewrite mypy-baseline.txt from mypy's errors now (after fixing some; never to hide new ones).
mypy-baseline: install
	$(PY) tools/mypy_baseline.py update

## pdf.js for the PDF citation viewer: the pinned pdfjs-dist's built files (legacy build), its
## licence and version into static/vendor/pdfjs/, which is committed: no CDN, no build at run time.
## Needs npm and the registry; run it only to change PDFJS_VERSION, then commit the folder.
PDFJS_VERSION := 6.5.438
vendor-pdfjs:
	tools/vendor_pdfjs.sh $(PDFJS_VERSION) static/vendor/pdfjs

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) tests/artifacts .pytest_cache tests/oidc/node_modules
