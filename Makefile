# ltbench: `make reproduce` (quick profile into results/) and `make test`. Both create .venv if absent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
PYTEST_ARGS ?=
# ../shared/data is where this project's machines keep CIFAR-10; users set LTBENCH_DATA or use ./data.
export LTBENCH_DATA ?= $(if $(wildcard ../shared/data/cifar10),$(abspath ../shared/data),)

.PHONY: install reproduce test report clean-results benchmark

$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ltbench)" >/dev/null
	@touch $@

install: $(VENV)/.installed

reproduce: install
	$(PY) -m ltbench run --profile $(PROFILE)
	$(PY) -m ltbench report

report: install
	$(PY) -m ltbench report

# pytest exits 5 when it collects no test: that is not a failure of the suite's code.
test: install
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

benchmark: install
	$(PY) benchmarks/throughput.py
