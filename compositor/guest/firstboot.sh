#!/bin/sh
# layerbot first-boot runner: runs the connector's scripts once, in order, then
# powers the guest off so the publishing task can reach Done.
SCRIPTS=/usr/lib/layerbot/scripts
LOG=/var/log/layerbot-firstboot.log
DONE=/var/lib/layerbot/firstboot.done
SHUTDOWN_MODE=$(cat /usr/lib/layerbot/shutdown 2>/dev/null || echo auto)

[ -e "$DONE" ] && exit 0
mkdir -p /var/lib/layerbot /var/log
log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*" >> "$LOG"; }

log "layerbot firstboot: start"
status=0
for script in "$SCRIPTS"/*; do
    [ -f "$script" ] || continue
    start=$(date +%s)
    log "run $script"
    case "$script" in
        *.sh) sh "$script" >> "$LOG" 2>&1 ;;
        *) if [ -x "$script" ]; then "$script" >> "$LOG" 2>&1; else sh "$script" >> "$LOG" 2>&1; fi ;;
    esac
    rc=$?
    [ "$rc" -eq 0 ] || status=$rc
    log "exit $rc after $(( $(date +%s) - start )) s: $script"
done
log "layerbot firstboot: finished (status $status)"
touch "$DONE"
sync
if [ "$SHUTDOWN_MODE" = auto ]; then
    log "powering off"
    sync
    systemctl --no-block poweroff 2>/dev/null || poweroff -f
fi
exit 0
