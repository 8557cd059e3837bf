#!/usr/bin/env bash
# Sets up .venv-test (Python 3.11, the package with its test and lint extras), then runs
# ruff check, ruff format --check, the type check of optax_torch, and pytest (in parallel).
# Idempotent: an existing .venv-test is reused and the (then quick) install re-checked.
# Usage: bash scripts/test.sh [pytest arguments]
#        PYTHON=/path/to/python3.11 bash scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3.11}"
VENV=.venv-test
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  echo "test.sh: creating $VENV with $PYTHON" >&2
  "$PYTHON" -m venv "$VENV"
fi
echo "test.sh: installing optax_torch[test,lint] into $VENV (torch pinned by constraints.txt)" >&2
"$PY" -m pip install --quiet -e ".[test,lint]" -c constraints.txt
# Classy Vision 0.7.0 and its fvcore / iopath pin old releases of their dependencies: installed
# without them (the test extra lists what they need; shared notes: they import on torch 2.13).
"$PY" -m pip install --quiet --no-deps classy-vision==0.7.0 fvcore==0.1.5.post20221221 iopath==0.1.10

echo "test.sh: ruff check" >&2
"$PY" -m ruff check .
echo "test.sh: ruff format --check" >&2
"$PY" -m ruff format --check .

# The type checker is the one the lint extra installs: pyright (its PyPI wrapper runs the node.js
# found on PATH, and otherwise needs network access to fetch one), or mypy (pure Python).
if [ -x "$VENV/bin/pyright" ]; then
  echo "test.sh: pyright optax_torch" >&2
  "$VENV/bin/pyright" --pythonpath "$PY" optax_torch
else
  echo "test.sh: mypy optax_torch" >&2
  "$PY" -m mypy optax_torch
fi

# pytest runs on pytest-xdist workers, one per core up to 4 (PYTEST_WORKERS overrides; 0 runs in
# this process), each with one torch thread: the suite is CPU bound and single-threaded per test.
WORKERS="${PYTEST_WORKERS:-$(
  "$PY" -c 'import os; print(min(4, len(os.sched_getaffinity(0))))' 2>/dev/null || echo 1
)}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
echo "test.sh: pytest ($WORKERS worker(s))" >&2
if [ "$WORKERS" -gt 1 ]; then
  exec "$PY" -m pytest -n "$WORKERS" "$@"
fi
exec "$PY" -m pytest "$@"
