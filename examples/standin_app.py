#!/usr/bin/env python3
"""A stand-in for Forge in the demo: a page, a server-sent event stream and a slow JSON API.

Usage: standin_app.py PORT   (binds 127.0.0.1)
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = """<!doctype html><meta charset="utf-8"><title>Stand-in app</title>
<h1>Stand-in app behind vastgate</h1>
<p>Host seen by the app: <code>{host}</code>, X-Forwarded-Proto: <code>{proto}</code>,
user: <code>{user}</code></p>
<p>Server-sent events, live through the gateway: <b id="n">waiting…</b></p>
<script>
const es = new EventSource("events");
es.onmessage = (e) => document.getElementById("n").textContent = e.data;
</script>
"""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status, ctype, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", PAGE.format(
                host=self.headers.get("Host", ""),
                proto=self.headers.get("X-Forwarded-Proto", ""),
                user=self.headers.get("X-Forwarded-User", "")))
        elif self.path == "/internal/ping":
            self._send(200, "application/json", "null")
        elif self.path == "/events":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            try:
                for n in range(1, 1_000_000):
                    self.wfile.write(f"data: tick {n}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(1)
            except (BrokenPipeError, ConnectionResetError):
                return
        else:
            self._send(404, "application/json", '{"detail":"Not Found"}')

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/sdapi/v1/txt2img":
            time.sleep(1)  # a "generation"
            prompt = json.loads(body or b"{}").get("prompt", "")
            self._send(200, "application/json", json.dumps({"images": [], "info": prompt}))
        else:
            self._send(404, "application/json", '{"detail":"Not Found"}')

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 7860
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
