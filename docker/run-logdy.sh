#!/bin/bash
# Starts logdy for vastgate ([program.logdy]) on loopback port 8082, following the programs' logs.
# logdy skips files that do not exist when it starts, so they are created first. -n -u: no
# analytics, no update check.
set -euo pipefail

files=(
    /var/log/vastgate/forge.log
    /var/log/vastgate/filebrowser.log
    /var/log/vastgate/ttyd.log
    /var/log/provisioning.log
    /var/log/onstart.log
)
for f in "${files[@]}"; do
    mkdir -p "$(dirname "$f")"
    [ -e "$f" ] || : >>"$f"
done
exec logdy follow "${files[@]}" --port 8082 -n -u
