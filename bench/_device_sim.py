"""A device fleet in a process of its own, for the benchmarks that need more open sockets than
one process may hold with the server's (20,000 open files each here).

    python bench/_device_sim.py SPEC.json

SPEC is ``{"gateways": [url, ...], "devices": [[token, secret, first_gateway], ...]}``: each
device connects to the gateway at index ``first_gateway`` and moves on to the next ones (the
SDK's address list) when that fails. Every client auto-acks what it receives. The process
prints ``connected k/n`` while connecting, then ``ready n``; it closes every client when its
stdin closes (so it also ends when its parent dies) or on SIGTERM, prints
``closed received=.. reconnects=..`` and exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from openmps.client import DeviceClient, DeviceCredentials, GatewayUnavailable

CONNECTING = 64  # connection attempts in flight
CLOSING = 500
CONNECT_TRIES = 5  # connection attempts per device before the simulator gives up


def client_for(gateways: list[str], token: str, secret: str, first: int) -> DeviceClient:
    order = gateways[first:] + gateways[:first]
    # A shared 2-core machine can be slow to welcome thousands of devices: wait long.
    return DeviceClient(order, DeviceCredentials(token, secret, "android"), open_timeout_s=60.0)


async def run(gateways: list[str], devices: list[tuple[str, str, int]]) -> None:
    clients = [client_for(gateways, token, secret, first) for token, secret, first in devices]
    total = len(clients)
    received = 0
    step = max(1, total // 10)
    gate = asyncio.Semaphore(CONNECTING)
    connected = 0

    async def connect(client: DeviceClient) -> None:
        nonlocal connected
        async with gate:
            for attempt in range(1, CONNECT_TRIES + 1):
                try:
                    await client.connect()
                    break
                except GatewayUnavailable:
                    # A busy machine: a gateway may be slow to read a hello or to answer.
                    if attempt == CONNECT_TRIES:
                        raise
                    await asyncio.sleep(attempt)
        connected += 1
        if connected == total or connected % step == 0:
            print(f"connected {connected}/{total}", flush=True)

    async def consume(client: DeviceClient) -> None:
        nonlocal received
        async for _ in client:
            received += 1

    await asyncio.gather(*(connect(c) for c in clients))
    consumers = [asyncio.create_task(consume(c)) for c in clients]
    print(f"ready {total}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:
        if not os.read(stdin, 4096):  # end of file: the parent closed the pipe, or died
            loop.remove_reader(stdin)
            stop.set()

    loop.add_reader(stdin, on_stdin)
    await stop.wait()

    closing = asyncio.Semaphore(CLOSING)

    async def close(client: DeviceClient) -> None:
        async with closing:
            await client.close()

    await asyncio.gather(*(close(c) for c in clients))
    for task in consumers:
        task.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    reconnects = sum(c.reconnects for c in clients)
    print(f"closed received={received} reconnects={reconnects}", flush=True)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    devices = [(str(t), str(s), int(g)) for t, s, g in spec["devices"]]
    asyncio.run(run([str(url) for url in spec["gateways"]], devices))


if __name__ == "__main__":
    main()
