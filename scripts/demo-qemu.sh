#!/usr/bin/env bash
# Set up, then show the whole lifecycle on a local QEMU VM: publish demo-qemu (a real Debian
# OS layer + the demo's app and platform layers) to the qemu target, start the VM it creates,
# follow its serial console while the guest runs the connector's script and powers itself
# off, and end when the task is Done. Builds the Debian OS layer once (debootstrap, needs
# root or sudo, about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
LAYER=examples/demo/.layerbot/debian-os.tar.zst
if [ ! -f "$LAYER" ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "demo-qemu: building the Debian OS layer $LAYER (debootstrap, about a minute)" >&2
  $SUDO python3 scripts/debian_os_layer.py "$LAYER"
  [ -z "$SUDO" ] || $SUDO chown -R "$(id -u):$(id -g)" "$(dirname "$LAYER")"
fi
LB=(.venv/bin/layerbot --config examples/demo/layerbot-qemu.yml --db examples/demo/layerbot.db)
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
"${LB[@]}" publish demo-qemu --yes "$@" >"$LOG" 2>&1 &
PUBLISH=$!
tail -n +1 -f "$LOG" &
TAIL=$!
TASK=""
until [ -n "$TASK" ] && "${LB[@]}" vm status "$TASK" >/dev/null 2>&1; do
  kill -0 "$PUBLISH" 2>/dev/null || { kill "$TAIL"; wait "$PUBLISH"; exit $?; }
  TASK=$(sed -n 's/^Queued: \([^ ,]*\).*/\1/p' "$LOG")
  sleep 1
done
sleep 1
kill "$TAIL"
SHOWN=$(wc -c <"$LOG")
echo "demo-qemu: starting the VM of task $TASK; its serial console follows" >&2
"${LB[@]}" vm start "$TASK"
"${LB[@]}" vm console "$TASK"
status=0
wait "$PUBLISH" || status=$?
tail -c +"$((SHOWN + 1))" "$LOG"
"${LB[@]}" vm status "$TASK"
exit "$status"
