#!/usr/bin/env bash
# Sets up .venv-demo (Python 3.11, the package with its demo extra) and runs `python -m demo`.
# Idempotent: an existing .venv-demo is reused and the (then quick) install re-checked.
# Usage: bash scripts/demo.sh [--steps N] [--no-plot] [--no-progress] [--seed S]
#        PYTHON=/path/to/python3.11 bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3.11}"
VENV=.venv-demo

if [ ! -x "$VENV/bin/python" ]; then
  echo "demo.sh: creating $VENV with $PYTHON" >&2
  "$PYTHON" -m venv "$VENV"
fi
echo "demo.sh: installing optax_torch[demo] into $VENV (torch pinned by constraints.txt)" >&2
"$VENV/bin/python" -m pip install --quiet -e ".[demo]" -c constraints.txt

exec "$VENV/bin/python" -m demo "$@"
