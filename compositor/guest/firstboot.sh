#!/bin/sh
# layerbot first-boot runner: runs the connector's scripts once, in order, logging each
# one's output, exit code and duration, then powers the guest off (unless the connector
# says `shutdown: manual`) so the publishing task can reach Done.
#
# Once, even when a script shuts the guest down itself (the seed allows it): systemd then
# stops this unit and kills the runner before it finishes. So the runner records, synced to
# disk, that the run started and which script runs (RUNNING); a later boot that finds RUNNING
# without DONE logs that the previous run was interrupted, writes DONE and neither runs the
# scripts again nor powers off. A SIGTERM (systemd stopping the unit) is logged and ends the
# run the same way at once.
# LAYERBOT_ROOT prefixes every path (tests run it outside a guest).
ROOT=${LAYERBOT_ROOT:-}
SCRIPTS=$ROOT/usr/lib/layerbot/scripts
LOG=$ROOT/var/log/layerbot-firstboot.log
DONE=$ROOT/var/lib/layerbot/firstboot.done
RUNNING=$ROOT/var/lib/layerbot/firstboot.running
SHUTDOWN_MODE=$(cat "$ROOT/usr/lib/layerbot/shutdown" 2>/dev/null || echo auto)

[ -e "$DONE" ] && exit 0
mkdir -p "$(dirname "$DONE")" "$(dirname "$LOG")"
# each line goes to the log and to stdout (the unit sends stdout to the journal and console)
log() { line="$(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; printf '%s\n' "$line" >> "$LOG"; printf 'layerbot: %s\n' "$line"; }
done_marker() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) status $1" > "$DONE"; rm -f "$RUNNING"; sync; }

if [ -e "$RUNNING" ]; then
    was=$(cat "$RUNNING" 2>/dev/null)
    log "layerbot firstboot: the previous run was interrupted while running ${was:-no script yet}" \
        "(a script shut the guest down, or it lost power); not running the scripts again," \
        "not powering off"
    done_marker interrupted
    exit 0
fi

current=""
on_term() {
    log "layerbot firstboot: stopped by SIGTERM while running ${current:-no script}" \
        "(the guest is shutting down); the remaining scripts are not run"
    done_marker "interrupted (SIGTERM)"
    exit 143
}
trap on_term TERM

log "layerbot firstboot: start"
echo "no script yet" > "$RUNNING"
sync
status=0
for script in "$SCRIPTS"/*; do
    [ -f "$script" ] || continue
    current=$script
    printf '%s\n' "$script" > "$RUNNING"
    sync
    start=$(date +%s)
    log "run $script"
    if [ -x "$script" ]; then "$script" >> "$LOG" 2>&1; else sh "$script" >> "$LOG" 2>&1; fi
    rc=$?
    [ "$rc" -eq 0 ] || status=$rc
    log "exit $rc after $(( $(date +%s) - start )) s: $script"
done
current=""
log "layerbot firstboot: finished (status $status)"
done_marker "$status"
trap - TERM  # from here on, a SIGTERM is the shutdown this runner asks for
if [ "$SHUTDOWN_MODE" = auto ]; then
    log "powering off"
    sync
    systemctl --no-block poweroff || poweroff -f
else
    log "shutdown: manual; leaving the guest running"
fi
exit 0
