"""A real WebSocket client and server (Python's `websockets`) for the gateway's tunnel.

`ws_pair.py server PORT`: echoes every message on any path, offers the `tty` subprotocol,
closes with CODE when sent the text `close-me:CODE`, remembers the close code each client sent,
and answers the text `closes?` with them as JSON. Prints `READY` once it listens.

`ws_pair.py client URL AUTHORIZATION`: through URL (the gateway), sends text and binary messages
from 0 B to 16 MiB and checks their echoes, pings, and closes with a sample of close codes both
ways. Prints one JSON object with what it saw.
"""

import asyncio
import json
import os
import sys

import websockets

CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
         4000, 4999]


async def serve(port):
    closes = {}

    async def handler(ws):
        try:
            async for message in ws:
                if isinstance(message, str) and message.startswith("close-me:"):
                    await ws.close(int(message.split(":")[1]), "asked to")
                    return
                if message == "closes?":
                    await ws.send(json.dumps(closes))
                    continue
                await ws.send(message)
        finally:
            tag = ws.request_headers.get("x-close-tag")
            if tag and ws.close_rcvd is not None:
                closes[tag] = ws.close_rcvd.code

    async with websockets.serve(
        handler, "127.0.0.1", port, subprotocols=["tty"], max_size=None, ping_interval=None
    ):
        print("READY", flush=True)
        await asyncio.Future()


async def client(url, authorization):
    headers = {"Authorization": authorization}
    out = {"echoed": [], "closes": {}}
    connect = dict(extra_headers=headers, max_size=None, ping_interval=None, open_timeout=60)
    async with websockets.connect(url, subprotocols=["tty"], **connect) as ws:
        out["subprotocol"] = ws.subprotocol
        for n in [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20]:
            for message in ("é" * (n // 2) + "a" * (n % 2), os.urandom(n)):
                await ws.send(message)
                echo = await asyncio.wait_for(ws.recv(), 120)
                out["echoed"].append(
                    {"type": type(message).__name__, "bytes": n, "ok": echo == message}
                )
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 60)
        out["pong"] = True
    for code in CODES:
        # The server closes with CODE: the client sees it.
        async with websockets.connect(url, **connect) as ws:
            await ws.send(f"close-me:{code}")
            try:
                await asyncio.wait_for(ws.recv(), 60)
            except websockets.ConnectionClosed:
                pass
            client_saw = ws.close_code
        # The client closes with CODE: the server sees it.
        tagged = dict(connect, extra_headers=dict(headers, **{"X-Close-Tag": str(code)}))
        async with websockets.connect(url, **tagged) as ws:
            await ws.close(code, "bye")
        out["closes"][str(code)] = {"client_saw": client_saw}
    # The server notes a close code as its handler ends, which may be just after our close.
    for _ in range(100):
        async with websockets.connect(url, **connect) as ws:
            await ws.send("closes?")
            server_saw = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if len(server_saw) == len(CODES):
            break
        await asyncio.sleep(0.1)
    for code, seen in out["closes"].items():
        seen["server_saw"] = server_saw.get(code)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(serve(int(sys.argv[2])))
    else:
        asyncio.run(client(sys.argv[2], sys.argv[3]))
