#!/bin/bash
# Starts filebrowser for vastgate ([program.filebrowser]) at /files, rooted at /workspace.
#
# filebrowser keeps its settings in its database, and flags such as --noauth only apply to a new
# one; so before every start the database is switched (idempotently) to proxy auth on
# X-Forwarded-User: the gateway's login names the user, filebrowser asks nothing more.
set -euo pipefail

db=/workspace/.filebrowser/filebrowser.db
mkdir -p "$(dirname "$db")"
if [ ! -f "$db" ]; then
    filebrowser config init --database "$db" >/dev/null
fi
filebrowser config set --database "$db" \
    --auth.method=proxy --auth.header=X-Forwarded-User \
    --address 127.0.0.1 --port 8081 --baseurl /files --root /workspace >/dev/null
exec filebrowser --database "$db" \
    --address 127.0.0.1 --port 8081 --baseurl /files --root /workspace
