#!/usr/bin/env bash
# The whole test suite on the oldest torch that ltbench supports (pyproject: torch>=2.11), the
# version the lent GPU machines carry, in a venv of its own beside .venv (`make test-min-torch`).
# CI runs the locked versions only: this one downloads about 5 GB, so it is run by hand before a
# change that touches torch APIs (compile, dynamo, amp) and its result goes in the CHANGELOG.
#
# Settings (environment): PYTHON (python3; the GPU machines have 3.12), TORCH (2.11.0),
# TORCHVISION (0.26.0, the release paired with it), VENV (.venv-torch$TORCH), TEST_WORKERS (2),
# PYTEST_ARGS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
TORCH="${TORCH:-2.11.0}"
TORCHVISION="${TORCHVISION:-0.26.0}"
VENV="${VENV:-.venv-torch$TORCH}"
WORKERS="${TEST_WORKERS:-2}"
if ! [[ "$WORKERS" =~ ^([0-9]+|auto|logical)$ ]]; then
  echo "error: TEST_WORKERS=$WORKERS: expected a number of workers (0: one process), auto or logical"; exit 2
fi
for v in "TORCH=$TORCH" "TORCHVISION=$TORCHVISION"; do
  case "${v#*=}" in
    ''|*[!0-9.]*) echo "error: ${v%%=*}=${v#*=}: expected a release number such as 2.11.0"; exit 2 ;;
  esac
done
if [ ! -f "$VENV/.installed-$TORCH-$TORCHVISION" ]; then
  test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # Everything else resolves from pyproject.toml's ranges: this checks them too, not only torch.
  "$VENV/bin/python" -m pip install -q "torch==$TORCH" "torchvision==$TORCHVISION" -e ".[all]"
  "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ltbench)" >/dev/null
  touch "$VENV/.installed-$TORCH-$TORCHVISION"
fi
"$VENV/bin/python" -c 'import sys, torch, torchvision; print("python", sys.version.split()[0], "| torch", torch.__version__, "| torchvision", torchvision.__version__)'
# shellcheck disable=SC2086
# As `make test`: TEST_WORKERS pytest-xdist workers, a test file each (0: one process).
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$VENV/bin/python" -m pytest -q -n "$WORKERS" --dist loadfile ${PYTEST_ARGS:-}
