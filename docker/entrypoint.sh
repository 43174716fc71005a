#!/bin/bash
# The image's entrypoint: /usr/local/bin/entrypoint.sh.
#
# Entrypoint mode: Docker runs it as PID 1. SSH and Jupyter modes: Vast runs its own /.launch
# instead, and /usr/local/bin/onstart.sh starts this in the background. Either way it prepares
# the container, then becomes `vastgate up` (the supervisor and the gateway), which stays PID 1
# in entrypoint mode and is a child subreaper otherwise.
set -euo pipefail

config=/etc/vastgate/proxy.toml
say() { echo "entrypoint: $*" >&2; }

# Program logs live in /var/log/vastgate; the seed's `tail -f /var/log/supervisor/*.log` keeps
# working through a link (an old supervisord directory is folded in first).
mkdir -p /var/log/vastgate
if [ -d /var/log/supervisor ] && [ ! -L /var/log/supervisor ]; then
    cp -a /var/log/supervisor/. /var/log/vastgate/ && rm -rf /var/log/supervisor
fi
ln -sfn /var/log/vastgate /var/log/supervisor

# Settings for SSH logins and later starts (see persist-env.sh for the format).
/usr/local/bin/persist-env.sh /etc/environment

# /workspace is shared by root's services and Forge (appuser).
mkdir -p /workspace/forge
chown appuser:appuser /workspace /workspace/forge 2>/dev/null || true
chmod 2775 /workspace /workspace/forge 2>/dev/null || true

if [ -f /.launch ] && grep -qi jupyter /.launch; then
    say "Jupyter launch mode: Vast runs Jupyter on port 8080 itself; nothing here binds 8080"
elif [ -f /.launch ]; then
    say "SSH launch mode: started by onstart.sh under Vast's /.launch"
else
    say "entrypoint launch mode"
fi
if [ "${PASSWORD:-admin}" = admin ]; then
    say "WARNING: PASSWORD is not set (or is 'admin'): the login is admin/admin and the terminal and file manager stay closed until you set PASSWORD"
fi

exec /usr/local/bin/vastgate up --config "$config"
