#!/bin/sh
# Connector script: runs once on the published image's first boot (like kmssetup.cmd
# on Windows images), before the guest powers itself off.
echo "office activated at $(date -u)" > /var/log/office-activation.log
