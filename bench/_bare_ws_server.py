"""The baseline of bench/own_channel.py: a bare ``websockets`` broadcast server.

It speaks just enough of gateway protocol v1 for the same device SDK to connect (hello ->
welcome, msg, ack) and nothing else: no authentication, no store, no status. A control client
sends ``{"type": "go"}``; the server sends one ``msg`` to every device, counts the acks and
answers ``{"type": "done", "seconds": ...}`` when every device has acked.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from websockets.asyncio.server import ServerConnection, serve

devices: set[ServerConnection] = set()
acked = 0
all_acked = asyncio.Event()
expected = 0


async def session(ws: ServerConnection) -> None:
    global acked
    hello = json.loads(await ws.recv())
    if hello.get("type") == "go":
        await broadcast(ws)
        return
    await ws.send(json.dumps({"type": "welcome", "v": 1, "heartbeat_s": 20}))
    devices.add(ws)
    try:
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("type") == "ack":
                acked += len(frame["ids"])
                if acked >= expected:
                    all_acked.set()
    finally:
        devices.discard(ws)


async def broadcast(control: ServerConnection) -> None:
    global acked, expected
    acked, expected = 0, len(devices)
    all_acked.clear()
    started = time.perf_counter()
    sent_ms = int(time.time() * 1000)
    for number, ws in enumerate(list(devices)):
        frame = {
            "type": "msg",
            "id": str(number + 1),
            "msg_key": f"k{number}",
            "task_id": "1",
            "title": "bench",
            "content": "hello",
            "extras": {"t": str(sent_ms)},
            "silent": False,
            "push_action": 0,
            "uri": None,
            "expires_at": 0,
        }
        await ws.send(json.dumps(frame))
    await all_acked.wait()
    await control.send(json.dumps({"type": "done", "seconds": time.perf_counter() - started}))


async def main(port: int) -> None:
    async with serve(
        session,
        "127.0.0.1",
        port,
        compression=None,
        max_queue=4,
        write_limit=16 * 1024,
        ping_interval=20,
        ping_timeout=20,
    ):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
