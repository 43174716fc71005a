#!/usr/bin/env python3
"""Stand-ins for the image's apps in the launch-mode tests (tests/image_launch.rs).

Installed in the throwaway root where the real ones live: /usr/local/bin/filebrowser, ttyd,
logdy and /forge/launch.py. Each listens where the real one would (loopback, the port from its
flags), answers with its name, the path and the X-Forwarded-User it got, and records its
arguments in /var/log/fake-apps/NAME.args so that tests can check how it was started.
"""
import http.server
import os
import sys

name = os.path.basename(sys.argv[0])
if name == "launch.py":
    name = "forge"
args = sys.argv[1:]
os.makedirs("/var/log/fake-apps", exist_ok=True)
with open(f"/var/log/fake-apps/{name}.args", "a") as f:
    f.write(f"uid={os.getuid()} " + " ".join(args) + "\n")


def flag(*names, default=None):
    for i, a in enumerate(args):
        if a in names and i + 1 < len(args):
            return args[i + 1]
    return default


if name == "filebrowser" and args[:1] == ["config"]:
    # `filebrowser config init|set --database DB ...`: settings live in the database.
    db = flag("--database", "-d")
    if args[1:2] == ["init"] and db:
        open(db, "a").close()
    sys.exit(0)
if name == "ttyd" and "--help" in args:
    print("ttyd is a tool for sharing terminal over the web\n    -W, --writable  Allow clients to write to the TTY")
    sys.exit(0)

port = int(flag("--port", "-p", default="0"))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{name} {self.path} user={self.headers.get('X-Forwarded-User', '')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *a):
        print(f"{name}: " + fmt % a, flush=True)


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
print(f"{name} listening on 127.0.0.1:{port}", flush=True)
server.serve_forever()
