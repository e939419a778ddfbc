# One-command entry points (see README.md). Each target creates .venv and installs the
# project on first use; later calls reuse it until pyproject.toml changes.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Kedro and kedro-viz must never try to send telemetry (CI and offline machines).
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: install browser lint run test viz platform benchmark clean-data

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: install  ## the main job on the embedded default
	$(BIN)/kedro run

# The platform's browser tests drive the system's Chromium with Playwright (never a downloaded browser).
browser:  ## Debian's chromium, if missing
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; } || \
	  echo "no chromium: the browser tests will be skipped (CGD_REQUIRE_BROWSER=1 makes them fail instead)"

lint: install  ## ruff: lint and formatting (configured in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install browser lint  ## lint, then the test suite
	$(BIN)/python -m pytest

viz: install  ## build the kedro-viz lineage into build/ (open with `kedro viz run`)
	$(BIN)/kedro viz build

platform: install  ## the web platform on http://127.0.0.1:8000
	$(BIN)/kedro platform

benchmark: install  ## throughput tables on the current device
	$(BIN)/python benchmarks/train_throughput.py

clean-data:  ## delete every generated artefact under data/ (keeps the folder skeleton)
	find data -type f ! -name .gitkeep -delete
