# Quick start: `make run` (set-up, then the whole pipeline on the bundled real images)
#              `make test` (set-up, then every test and linter).
SHELL := /bin/bash
# The pins (numpy 1.26, torch) have wheels for Python 3.11 and 3.12 only: the first of these
# that is one, unless PYTHON is given.
SUPPORTED_PYTHON := import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python3.11 python3.12 python3; do \
	$$p -c '$(SUPPORTED_PYTHON)' 2>/dev/null && { echo $$p; break; }; done)
endif
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
REQS := requirements.txt requirements-serving.txt requirements-dev.txt
STAMP := $(VENV)/.installed
export ASL_WORKSPACE ?= $(CURDIR)/workspace
SHARED_DATA ?= $(CURDIR)/../shared/data

.PHONY: install hand-models system-deps run test test-fast lint format serve monitor dashboard bench clean demo \
	recipe-generalise

# A make stopped while the venv was made (ensurepip) or while pip upgraded itself leaves a python
# without a working pip, on which every later make failed: that venv is made again, same Python.
$(STAMP): $(REQS)
	@if [ -x $(PY) ] && ! $(PY) -c '$(SUPPORTED_PYTHON)' 2>/dev/null; then echo "make: $(VENV) \
	was made with $$($(PY) -V 2>&1), and the pinned requirements need Python 3.11 or 3.12: \
	remove $(VENV) and run make again" >&2; exit 2; fi
	@test -x $(PY) || $(PYTHON) -c '$(SUPPORTED_PYTHON)' 2>/dev/null || { echo "make: the pinned \
	requirements need Python 3.11 or 3.12, and none was found (PYTHON='$(PYTHON)'; tried \
	python3.11, python3.12, python3): install one, or run make PYTHON=/path/to/python3.11" >&2; \
	exit 2; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip --version >/dev/null 2>&1 || { echo "make: $(VENV) has no working pip (an \
	interrupted install?): making it again with $$(readlink -f $(PY))" >&2; \
	"$$(readlink -f $(PY))" -m venv --clear $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-serving.txt -r requirements-dev.txt
	@touch $@

install: $(STAMP)

# The sha256-pinned hand models (from the mediapipe wheel on PyPI); a no-op once verified.
hand-models: install
	$(PY) scripts/fetch_hand_models.py

# Debian packages the tests and `make monitor` need (prometheus, alertmanager, chromium).
system-deps:
	bash scripts/install_system_deps.sh

run: install hand-models
	$(PY) pipelines/asl_pipeline.py --mode local-executor --config configs/run.yaml
	$(PY) scripts/demo_serve.py

lint: install
	$(BIN)/black --check --diff --quiet .
	$(BIN)/isort --check-only --diff .
	$(BIN)/flake8
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/zizmor --offline .github/workflows
	$(BIN)/hadolint triton/*/Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec triton/docker-compose.yml

format: install
	$(BIN)/isort .
	$(BIN)/black .

# Two workers, a file each at a time: most tests wait on real processes and servers, so two
# files side by side fit two cores (each worker has its own workspace: tests/conftest.py).
# The clean-agent emulation (ten agent processes and their mock servers) runs alone first, on
# cores of its own. Its validate_raw stalls past 240 s had another cause, found later: two of its
# processes shared one task id, so one ClearML file lock (see CHAIN_IDS in the test).
CLEAN_AGENT_TESTS := tests/pipeline/test_clean_agent.py
test: install hand-models system-deps lint
	$(PY) -m pytest $(CLEAN_AGENT_TESTS)
	$(PY) -m pytest -n 2 --dist loadfile --ignore=$(CLEAN_AGENT_TESTS)

test-fast: install hand-models
	$(PY) -m pytest -m "not slow"

serve: install hand-models
	$(PY) tasks/build_triton_repo.py --model-id production
	$(PY) -m asl_recognition.serving.launcher --repo $(ASL_WORKSPACE)/triton_repo

# After `make run`: its model on the local Triton and the live recognition page (URL printed).
demo: install hand-models
	$(PY) -m asl_recognition.web.demo

monitor: install system-deps
	$(PY) -m asl_recognition.monitoring.stack

dashboard: install
	$(PY) -m asl_recognition.monitoring.dashboard

bench: install
	$(PY) bench/bench_validate.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_train.py --model landmarks
	$(PY) bench/bench_triton.py
	$(PY) bench/bench_hands_triton.py

# The generalisation recipe (configs/generalise.yaml): every shared source, Massey hands 4-5
# held out and scored per signer; then its report, leave-one-source-out on the ASL_landmarks
# version the pipeline just published (train on all sources but one, score on that one). Its
# own workspace, so its registry does not mix with `make run`'s.
GENERALISE_WS := $(CURDIR)/workspace/generalise
recipe-generalise: install hand-models
	ASL_WORKSPACE=$(GENERALISE_WS) $(PY) pipelines/asl_pipeline.py \
		--mode local-executor --config configs/generalise.yaml
	ASL_WORKSPACE=$(GENERALISE_WS) $(PY) tasks/loso_report.py --recipe configs/generalise.yaml

clean:
	rm -rf workspace test-artifacts .pytest_cache
