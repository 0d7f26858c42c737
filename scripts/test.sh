#!/usr/bin/env bash
# Set up, then run ruff and the whole test suite. pytest's exit code 5 (no tests ran)
# counts as a failure. --long also runs the long variants (tests marked long: 50 kills per
# platform in the chaos runs); other arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--long" ]; then
  shift
  export LAYERBOT_LONG=1
fi
scripts/setup.sh || exit 1
.venv/bin/ruff check . || exit 1
.venv/bin/pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: no tests ran" >&2
  exit 1
fi
exit "$rc"
