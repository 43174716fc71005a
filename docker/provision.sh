#!/bin/bash
# Runs PROVISIONING_SCRIPT once per container ([program.provisioning], a oneshot that Forge
# waits for): a path, or an http(s) URL fetched now. Its output is the provisioning log
# (/var/log/provisioning.log). Success is recorded in a marker file inside the container, so later
# starts skip it; a failure leaves no marker and is retried at the next start (Forge starts
# anyway; `vastgate start provisioning` retries at once).
set -uo pipefail

marker=/var/lib/vastgate/provisioned
script="${PROVISIONING_SCRIPT:-}"

if [ -z "$script" ]; then
    echo "provisioning: PROVISIONING_SCRIPT is not set; nothing to do"
    exit 0
fi
if [ -f "$marker" ] && [ "$(head -n 1 "$marker")" = "$script" ]; then
    echo "provisioning: $script already ran in this container ($(sed -n 2p "$marker")); remove $marker to run it again"
    exit 0
fi

mkdir -p "$(dirname "$marker")"
case "$script" in
    http://* | https://*)
        file=/var/lib/vastgate/provisioning-script
        echo "provisioning: fetching $script"
        if ! curl -fsSL --retry 3 --connect-timeout 20 -o "$file" "$script"; then
            echo "provisioning: cannot fetch $script; it is retried at the next container start"
            exit 1
        fi
        chmod 0700 "$file"
        ;;
    *)
        file="$script"
        if [ ! -f "$file" ]; then
            echo "provisioning: $file does not exist; it is retried at the next container start"
            exit 1
        fi
        ;;
esac

echo "provisioning: running $script"
# Files it creates under /workspace stay writable for Forge's appuser (group, setgid dirs).
umask 0002
if [ -x "$file" ]; then
    "$file"
else
    bash "$file"
fi
status=$?
if [ "$status" -ne 0 ]; then
    echo "provisioning: $script failed (exit status $status); it runs again at the next container start"
    exit "$status"
fi
printf '%s\n%s\n' "$script" "succeeded $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$marker"
echo "provisioning: $script succeeded"
