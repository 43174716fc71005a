#!/bin/bash
# Vast's on-start hook: /usr/local/bin/onstart.sh, also installed as /root/onstart.sh.
#
# In SSH and Jupyter launch modes Vast replaces the image's entrypoint with its own /.launch,
# which runs /root/onstart.sh at every container start; put `bash /usr/local/bin/onstart.sh` in
# the template's on-start field. Safe to run any number of times: when vastgate already runs it
# does nothing; otherwise it starts the entrypoint in the background, its output appended to
# /var/log/onstart.log, and returns at once.
set -uo pipefail

config=/etc/vastgate/proxy.toml
log=/var/log/onstart.log

/usr/local/bin/vastgate status --config "$config" >/dev/null 2>&1
status=$?
# 0: all running, 3: some program not running; either way a supervisor answers. 4: none does.
if [ "$status" -ne 4 ]; then
    echo "onstart: vastgate is already running (vastgate status exit $status); nothing to do"
    exit 0
fi

mkdir -p "$(dirname "$log")"
echo "onstart: starting vastgate in the background; output in $log"
# setsid: out of the launcher's session and process group, so nothing aimed at them stops it.
setsid /usr/local/bin/entrypoint.sh >>"$log" 2>&1 </dev/null &
exit 0
