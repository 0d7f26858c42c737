#!/usr/bin/env bash
# Set up, then publish the bundled demo template to a local folder (no Slack or cloud).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/layerbot --config examples/demo/layerbot.yml --db examples/demo/layerbot.db \
  publish demo-office --yes "$@"
