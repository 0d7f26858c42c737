#!/bin/sh
# layerbot first-boot runner: runs the connector's scripts once, in order, logging each
# one's output, exit code and duration, then powers the guest off (unless the connector
# says `shutdown: manual`) so the publishing task can reach Done.
# LAYERBOT_ROOT prefixes every path (tests run it outside a guest).
ROOT=${LAYERBOT_ROOT:-}
SCRIPTS=$ROOT/usr/lib/layerbot/scripts
LOG=$ROOT/var/log/layerbot-firstboot.log
DONE=$ROOT/var/lib/layerbot/firstboot.done
SHUTDOWN_MODE=$(cat "$ROOT/usr/lib/layerbot/shutdown" 2>/dev/null || echo auto)

[ -e "$DONE" ] && exit 0
mkdir -p "$(dirname "$DONE")" "$(dirname "$LOG")"
# each line goes to the log and to stdout (the unit sends stdout to the journal and console)
log() { line="$(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; echo "$line" >> "$LOG"; echo "layerbot: $line"; }

log "layerbot firstboot: start"
status=0
for script in "$SCRIPTS"/*; do
    [ -f "$script" ] || continue
    start=$(date +%s)
    log "run $script"
    if [ -x "$script" ]; then "$script" >> "$LOG" 2>&1; else sh "$script" >> "$LOG" 2>&1; fi
    rc=$?
    [ "$rc" -eq 0 ] || status=$rc
    log "exit $rc after $(( $(date +%s) - start )) s: $script"
done
log "layerbot firstboot: finished (status $status)"
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) status $status" > "$DONE"
sync
if [ "$SHUTDOWN_MODE" = auto ]; then
    log "powering off"
    sync
    systemctl --no-block poweroff || poweroff -f
else
    log "shutdown: manual; leaving the guest running"
fi
exit 0
