# One-command entry points (see README.md). Each target creates .venv and installs the
# project on first use; later calls reuse it until pyproject.toml changes.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Kedro and kedro-viz must never try to send telemetry (CI and offline machines).
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: install run test viz benchmark clean-data

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: install  ## the main job on the embedded default
	$(BIN)/kedro run

test: install  ## the test suite
	$(BIN)/python -m pytest

viz: install  ## build the kedro-viz lineage into build/ (open with `kedro viz run`)
	$(BIN)/kedro viz build

benchmark: install  ## throughput tables on the current device
	$(BIN)/python benchmarks/train_throughput.py

clean-data:  ## delete every generated artefact under data/ (keeps the folder skeleton)
	find data -type f ! -name .gitkeep -delete
