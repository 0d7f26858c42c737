#!/usr/bin/env bash
# Set up, then run ruff and the whole test suite. pytest's exit code 5 (no tests ran)
# counts as a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
.venv/bin/ruff check . || exit 1
.venv/bin/pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: no tests ran" >&2
  exit 1
fi
exit "$rc"
