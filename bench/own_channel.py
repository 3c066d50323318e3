"""Own-channel fan-out: N online devices bound to N users, one push each through the MPS API.

Reports acked deliveries per second (push start -> every status 2 in the store), p50/p99
push-to-device latency, and gateway RSS per idle connection; then the same fan-out from a bare
``websockets`` broadcast server with no persistence, in the same run, as the denominator.

    .venv/bin/python bench/own_channel.py [--devices 10000]

Figures are printed and written to docs/benchmarks.md. One process may hold at most 20,000
open files here, so --devices is capped at 19,000 (one gateway process, one simulator).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from alibabacloud_mpaas20201028 import models
from alibabacloud_mpaas20201028.client import Client
from alibabacloud_tea_openapi.models import Config

from openmps.client import DeviceClient, DeviceCredentials, PushMessage

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks.md"
MAX_DEVICES = 19_000
PUSH_CONCURRENCY = 64  # PushSimple calls in flight, as an app server with a pool would
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def progress(label: str, done: int, total: int) -> None:
    if done == total or done % max(1, total // 10) == 0:
        print(f"  {label}: {done}/{total}", flush=True)


async def bounded(
    items: Sequence[T], work: Callable[[T], Awaitable[Any]], *, limit: int, label: str
) -> list[Any]:
    gate = asyncio.Semaphore(limit)
    done = 0

    async def one(item: T) -> Any:
        nonlocal done
        async with gate:
            result = await work(item)
        done += 1
        progress(label, done, len(items))
        return result

    return list(await asyncio.gather(*(one(item) for item in items)))


class Fleet:
    """N device clients, each counting its messages and their push-to-device latency."""

    def __init__(self, gateway_url: str, creds: list[DeviceCredentials]) -> None:
        # A shared 2-core machine can be slow to welcome thousands of devices: wait long.
        self.clients = [DeviceClient(gateway_url, c, open_timeout_s=60.0) for c in creds]
        self.latencies_ms: list[float] = []
        self.received = 0
        self.everyone = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        await bounded(self.clients, lambda c: c.connect(), limit=64, label="connected")
        self._tasks = [asyncio.create_task(self._consume(c)) for c in self.clients]

    async def _consume(self, client: DeviceClient) -> None:
        message: PushMessage
        async for message in client:
            self.latencies_ms.append(time.time() * 1000 - int(message.extras["t"]))
            self.received += 1
            if self.received >= len(self.clients):
                self.everyone.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await bounded(self.clients, lambda c: c.close(), limit=500, label="closed")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def run_openmps(n: int, work: Path) -> dict[str, float]:
    port, gw_port = free_port(), free_port()
    data = work / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openmps",
            "serve",
            "--port",
            str(port),
            "--gateway-port",
            str(gw_port),
            "--data-dir",
            str(data),
        ],
        stdout=subprocess.PIPE,
        stderr=open(work / "server.log", "w"),  # noqa: SIM115
        text=True,
    )
    assert proc.stdout is not None
    banner: dict[str, str] = {}
    for line in proc.stdout:
        parts = line.split()
        if len(parts) == 2:
            banner[parts[0]] = parts[1]
        if line.startswith("openmps ready"):
            break
    try:
        return await _drive_openmps(n, proc.pid, port, gw_port, banner, data)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


async def _drive_openmps(
    n: int, pid: int, port: int, gw_port: int, banner: dict[str, str], data: Path
) -> dict[str, float]:
    api = f"http://127.0.0.1:{port}"
    app_id, workspace = banner["AppId"], banner["WorkspaceId"]
    sdk = Client(
        Config(
            endpoint=f"127.0.0.1:{port}",
            protocol="HTTP",
            access_key_id=banner["AccessKeyId"],
            access_key_secret=banner["AccessKeySecret"],
            read_timeout=60000,
        )
    )
    print(f"openmps: registering and binding {n} devices")
    async with httpx.AsyncClient(base_url=api, timeout=60) as http:

        async def register(i: int) -> DeviceCredentials:
            body = (
                await http.post("/v1/devices", json={"app_id": app_id, "workspace_id": workspace})
            ).json()
            return DeviceCredentials(body["delivery_token"], body["device_secret"], "android")

        creds = await bounded(list(range(n)), register, limit=32, label="registered")

    async def bind(i: int) -> None:
        response = await sdk.push_bind_async(
            models.PushBindRequest(
                app_id=app_id,
                workspace_id=workspace,
                delivery_token=creds[i].delivery_token,
                os_type=1,
                user_id=f"user-{i}",
            )
        )
        assert response.body.result_code == "OK", response.body.to_map()

    await bounded(list(range(n)), bind, limit=32, label="bound")
    await asyncio.sleep(1)
    idle_before = rss_kib(pid)
    fleet = Fleet(f"ws://127.0.0.1:{gw_port}/v1", creds)
    await fleet.connect()
    await asyncio.sleep(3)
    per_conn = (rss_kib(pid) - idle_before) * 1024 / n

    print(f"openmps: pushing to {n} users ({n // 10} PushSimple calls of 10)", flush=True)
    batches = [list(range(i, min(i + 10, n))) for i in range(0, n, 10)]
    started = time.perf_counter()

    async def push(batch: list[int]) -> None:
        response = await sdk.push_simple_async(
            models.PushSimpleRequest(
                app_id=app_id,
                workspace_id=workspace,
                delivery_type=3,
                expired_seconds=600,
                title="bench",
                content="hello",
                extended_params=json.dumps({"t": str(int(time.time() * 1000))}),
                target_msgkey=json.dumps({f"user-{i}": f"k{i}" for i in batch}),
            )
        )
        assert response.body.result_code == "OK", response.body.to_map()

    await bounded(batches, push, limit=PUSH_CONCURRENCY, label="pushed (calls)")
    accepted = time.perf_counter() - started
    db = sqlite3.connect(f"file:{data / 'openmps.db'}?mode=ro", uri=True)
    while True:
        (acked,) = db.execute("SELECT count(*) FROM deliveries WHERE code = 2").fetchone()
        if acked >= n:
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    db.close()
    await fleet.close()
    return {
        "rate": n / elapsed,
        "seconds": elapsed,
        "accept_s": accepted,
        "p50": pct(fleet.latencies_ms, 50),
        "p99": pct(fleet.latencies_ms, 99),
        "rss_per_conn": per_conn,
    }


async def run_bare(n: int) -> dict[str, float]:
    from websockets.asyncio.client import connect

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_bare_ws_server.py")), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    try:
        idle_before = rss_kib(proc.pid)
        creds = [DeviceCredentials(f"bare-{i}", "x", "android") for i in range(n)]
        print(f"bare websockets: connecting {n} devices")
        fleet = Fleet(f"ws://127.0.0.1:{port}/v1", creds)
        await fleet.connect()
        await asyncio.sleep(3)
        per_conn = (rss_kib(proc.pid) - idle_before) * 1024 / n
        async with connect(f"ws://127.0.0.1:{port}/v1") as control:
            await control.send(json.dumps({"type": "go"}))
            done = json.loads(await control.recv())
        await asyncio.wait_for(fleet.everyone.wait(), 60)
        await fleet.close()
        seconds = float(done["seconds"])
        return {
            "rate": n / seconds,
            "seconds": seconds,
            "p50": pct(fleet.latencies_ms, 50),
            "p99": pct(fleet.latencies_ms, 99),
            "rss_per_conn": per_conn,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def write_results(n: int, ours: dict[str, float], bare: dict[str, float], command: str) -> str:
    ratio = ours["rate"] / bare["rate"]
    section = f"""<!-- own_channel:start -->
## Own channel fan-out (`bench/own_channel.py`)

Command: `{command}` — {n} devices, one gateway process, one simulator process, on
{platform.machine()} with {os.cpu_count()} cores, {time.strftime("%Y-%m-%d")}.

| | openmps (MPS API -> store -> gateway -> ack -> store) | bare websockets broadcast |
|---|---|---|
| acked deliveries per second | {ours["rate"]:,.0f} | {bare["rate"]:,.0f} |
| time until every status is 2 | {ours["seconds"]:.2f} s | {bare["seconds"]:.2f} s |
| push-to-device latency p50 | {ours["p50"]:,.0f} ms | {bare["p50"]:,.0f} ms |
| push-to-device latency p99 | {ours["p99"]:,.0f} ms | {bare["p99"]:,.0f} ms |
| RSS per idle connection | {ours["rss_per_conn"] / 1024:.1f} KiB | {
        bare["rss_per_conn"] / 1024:.1f} KiB |

Ratio of acked rates, openmps / bare: **{ratio:.0%}** (goal: >= 70 %). Goal per idle
connection: <= 8 KB. The openmps figure includes {n // 10} signed PushSimple calls
(10 users each, {ours["accept_s"]:.2f} s to accept them all), user -> device resolution, the
durable commit of every delivery before the API answers, and the batched ack writes; the bare
server only sends one frame per open socket and counts acks in memory.
<!-- own_channel:end -->"""
    text = (
        RESULTS.read_text()
        if RESULTS.exists()
        else "# Benchmarks\n\nFigures measured by the scripts in `bench/`; each section is "
        "rewritten by its script.\n"
    )
    start, end = "<!-- own_channel:start -->", "<!-- own_channel:end -->"
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)
    return f"ratio {ratio:.2%}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if not 1 <= args.devices <= MAX_DEVICES:
        parser.error(f"--devices must be 1..{MAX_DEVICES}: one process may hold 20,000 files")
    with tempfile.TemporaryDirectory(prefix="openmps-bench-") as work:
        ours = await run_openmps(args.devices, Path(work))
    print("openmps:", {k: round(v, 2) for k, v in ours.items()})
    bare = await run_bare(args.devices)
    print("bare:   ", {k: round(v, 2) for k, v in bare.items()})
    if not args.no_write:
        command = "python bench/own_channel.py" + (
            f" --devices {args.devices}" if args.devices != 10_000 else ""
        )
        print(write_results(args.devices, ours, bare, command), "->", RESULTS)


if __name__ == "__main__":
    asyncio.run(main())
