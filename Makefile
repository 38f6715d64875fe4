# ltbench: `make reproduce` (quick profile into results/) and `make test`. Both create .venv if absent.
# `make reproduce PROFILE=paper EXECUTE_ARGS="--seeds 1 --tiers 0,1"` on a GPU.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
PYTEST_ARGS ?=
EXECUTE_ARGS ?=
# ../shared/data is where this project's machines keep CIFAR-10; users set LTBENCH_DATA or use ./data.
export LTBENCH_DATA ?= $(if $(wildcard ../shared/data/cifar10),$(abspath ../shared/data),)

.PHONY: install reproduce test test-workers test-min-torch report clean-results benchmark lint carry harvest harvest-stop harvest-status harvest-stage

# Every package from requirements.lock (all extras, pinned with hashes), then ltbench itself,
# built with the locked setuptools (no download).
$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ltbench)" >/dev/null
	@touch $@

install: $(VENV)/.installed

# plan (list the profile's runs), execute (train the pending ones, tier order), run (notebooks render
# from the run store), report (results/README.md).
reproduce: install
	$(PY) -m ltbench plan --profile $(PROFILE) | tail -4
	$(PY) -m ltbench execute --profile $(PROFILE) $(EXECUTE_ARGS)
	$(PY) -m ltbench run --profile $(PROFILE)
	$(PY) -m ltbench report

report: install
	$(PY) -m ltbench report

# The suite runs in TEST_WORKERS pytest-xdist workers (a number, `auto` for one per core, or 0 for
# one process), one thread each, a test file per worker so its module fixtures (the notebooks'
# smoke reproduction) run once: on the 2-core machine 2 workers took 8 min 55 s against 18 min 25 s
# in one process (2026-12-07, 997 tests). pytest exits 5 when it collects no test: that is not a
# failure of the suite's code.
TEST_WORKERS ?= 2
# Checked before the install, the first expensive step.
test-workers:
	@[[ "$(TEST_WORKERS)" =~ ^([0-9]+|auto|logical)$$ ]] || { echo "error: TEST_WORKERS=$(TEST_WORKERS): expected a number of workers (0: one process), auto or logical"; exit 2; }

test: test-workers install
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

# The suite on torch 2.11 (the oldest supported, as on the lent GPU machines) in .venv-torch2.11.0/.
test-min-torch:
	TEST_WORKERS="$(TEST_WORKERS)" PYTEST_ARGS="$(PYTEST_ARGS)" bash tools/test_min_torch.sh

benchmark: install
	$(PY) benchmarks/throughput.py

# ruff, configured in pyproject.toml (CI runs it before the tests).
lint: install
	$(PY) -m ruff check .

# .carry/ (git-ignored) for a GPU session (tools/gpu_session.sh, README "The GPU session"): CIFAR-10 as
# cifar10.tgz, the resume state of unfinished paper runs and the stage-1 weights pending runs need, a
# manifest; fails if the working tree plus .carry reaches the device's 64 MiB.
carry: install
	$(PY) -m ltbench.ops carry --profile paper --carry .carry

# The harvest (ltbench/harvest.py): the queue of CPU runs, niced, in the background, from a clean
# worktree of HEAD; HARVEST_SECONDS sets a deadline. harvest-stop finishes the epoch and checkpoints;
# harvest-stage git-adds the runs and the resume state / weights the next session needs.
HARVEST_SECONDS ?=
harvest: install
	bash tools/harvest.sh start $(HARVEST_SECONDS)

harvest-stop:
	bash tools/harvest.sh stop

harvest-status:
	bash tools/harvest.sh status

harvest-stage: install
	$(PY) -m ltbench.harvest stage
