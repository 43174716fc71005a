"""A faithful fake of ttyd's wire protocol (ttyd 1.7, as `ttyd -b BASE -W bash` serves it).

Usage: fake_ttyd.py PORT BASE (e.g. `/terminal`). Prints `READY` once it listens.

- `GET BASE/token` answers JSON `{"token": ""}` (ttyd runs without `-c`: the gateway logs in).
- `BASE/ws` is a WebSocket with subprotocol `tty` (refused without it). The client's first
  message is JSON `{"AuthToken": ..., "columns": C, "rows": R}`; only then a real shell starts on
  a pty of that size, and the server sends `1`+window title and `2`+preferences JSON, then `0`+
  output. Client commands: `0`+input, `1`+`{"columns","rows"}` (resize), `2` pause, `3` resume.
- It pings every 5 s and closes with 1000 when the shell exits.
"""

import asyncio
import fcntl
import http
import json
import os
import pty
import signal
import socket
import struct
import sys
import termios

import websockets

PORT = int(sys.argv[1])
BASE = sys.argv[2].rstrip("/")


def set_size(fd, columns, rows):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


async def process_request(path, headers):
    if path.split("?")[0] == f"{BASE}/token":
        body = json.dumps({"token": ""}).encode()
        return http.HTTPStatus.OK, [("Content-Type", "application/json")], body
    if path.split("?")[0] != f"{BASE}/ws":
        return http.HTTPStatus.NOT_FOUND, [], b"not found\n"
    return None


async def terminal(ws):
    if ws.subprotocol != "tty":
        await ws.close(1002, "subprotocol tty required")
        return
    hello = json.loads(await ws.recv())
    columns, rows = int(hello["columns"]), int(hello["rows"])
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm-256color"
        os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
    set_size(fd, columns, rows)
    loop = asyncio.get_running_loop()
    output = asyncio.Queue()

    def readable():
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        output.put_nowait(data)
        if not data:
            loop.remove_reader(fd)

    await ws.send(b"1" + f"bash ({socket.gethostname()})".encode())
    await ws.send(b"2" + json.dumps({}).encode())
    loop.add_reader(fd, readable)

    async def pump():
        while True:
            data = await output.get()
            if not data:
                return
            await ws.send(b"0" + data)

    async def commands():
        async for message in ws:
            if isinstance(message, str):
                message = message.encode()
            command, payload = message[:1], message[1:]
            if command == b"0":
                os.write(fd, payload)
            elif command == b"1":
                size = json.loads(payload)
                set_size(fd, int(size["columns"]), int(size["rows"]))
            elif command == b"2":
                loop.remove_reader(fd)  # pause: the shell's output waits in the pty
            elif command == b"3":
                loop.add_reader(fd, readable)

    pumping = asyncio.create_task(pump())
    receiving = asyncio.create_task(commands())
    done, _ = await asyncio.wait({pumping, receiving}, return_when=asyncio.FIRST_COMPLETED)
    if pumping in done:
        await ws.close(1000)
    receiving.cancel()
    pumping.cancel()
    loop.remove_reader(fd)
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError:
        pass
    os.waitpid(pid, 0)
    os.close(fd)


async def main():
    async with websockets.serve(
        terminal,
        "127.0.0.1",
        PORT,
        subprotocols=["tty"],
        process_request=process_request,
        ping_interval=5,
    ):
        print("READY", flush=True)
        await asyncio.Future()


asyncio.run(main())
