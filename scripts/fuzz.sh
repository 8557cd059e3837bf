#!/usr/bin/env bash
# The long fuzzing profile (docs/fuzzing.md): random (not derandomized) examples, 100x CI's count
# per law by default; failures are saved in .hypothesis/ and replayed first on the next run.
#   scripts/fuzz.sh                         # all laws, OPTAX_TORCH_FUZZ_SCALE=100
#   OPTAX_TORCH_FUZZ_SCALE=1000 scripts/fuzz.sh -k save_load
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv-test/bin/python}"
export OPTAX_TORCH_FUZZ=long
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec nice -n 10 "$PY" -m pytest -q -p no:cacheprovider tests/test_fuzz.py \
  --hypothesis-show-statistics "$@"
