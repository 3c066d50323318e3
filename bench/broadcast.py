"""One broadcast to a million registered devices: time to accept and expand it, and the acked
delivery rate to the devices online.

    .venv/bin/python bench/broadcast.py [--devices 1000000] [--online 19000]

Part 1: ``--devices`` Android devices are written straight into a fresh SQLite store (setup,
not measured), the server is started, and one PushBroadcast (PushStatus 1: every device) is
timed from the SDK call to its answer: validation, the template, one delivery row per device
and the commit. In the same run, the bare floor: one ``INSERT ... SELECT`` of as many rows
into an index-free table of the same database file.

Part 2: ``--online`` of those devices connect to the gateway, a second broadcast goes out, and
the time until every online device's delivery is status 2 in the store gives the acked rate;
then a bare ``websockets`` broadcast to as many connections (bench/own_channel.py) is the
denominator. One process may hold at most 20,000 open files here, so one gateway process
serves at most 19,000 devices; more online devices need several gateway processes (the scale
out of issue 5). Figures are printed and written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from alibabacloud_mpaas20201028 import models
from alibabacloud_mpaas20201028.client import Client
from alibabacloud_tea_openapi.models import Config

from openmps.apps import create_app
from openmps.client import DeviceCredentials
from openmps.store import Store
from own_channel import MAX_DEVICES, RESULTS, Fleet, free_port, pct, run_bare

SECRET = "bench-device-secret"  # every seeded device's secret (the store keeps its hash)
SEED_CHUNK = 100_000


def token(i: int) -> str:
    return f"bench-{i:012d}"


async def seed(data: Path, n: int) -> dict[str, str]:
    """A fresh store with one app and ``n`` Android devices; returns the app's credentials."""
    data.mkdir(parents=True)
    url = f"sqlite+aiosqlite:///{data / 'openmps.db'}"
    store = await Store.open(url)
    try:
        creds = await create_app(store, "bench")
    finally:
        await store.close()
    db = sqlite3.connect(data / "openmps.db")
    (app_pk,) = db.execute("SELECT id FROM apps WHERE app_id = ?", (creds.app_id,)).fetchone()
    secret_hash = hashlib.sha256(SECRET.encode()).hexdigest()
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    for start in range(0, n, SEED_CHUNK):
        db.executemany(
            "INSERT INTO devices (app_pk, delivery_token, secret_hash, platform, created_at) "
            "VALUES (?, ?, ?, 'android', ?)",
            (
                (app_pk, token(i), secret_hash, now)
                for i in range(start, min(n, start + SEED_CHUNK))
            ),
        )
        db.commit()
        print(f"  seeded: {min(n, start + SEED_CHUNK)}/{n}", flush=True)
    db.close()
    return {
        "AppId": creds.app_id,
        "WorkspaceId": creds.workspace_id,
        "AccessKeyId": creds.access_key_id,
        "AccessKeySecret": creds.access_key_secret,
    }


def bare_expand(db_path: Path, n: int) -> float:
    """The floor: the same number of rows by one INSERT ... SELECT, no index, no constraint."""
    db = sqlite3.connect(db_path)
    db.execute(
        "CREATE TABLE bare (message_pk INTEGER, device_pk INTEGER, route TEXT, channel TEXT, "
        "code INTEGER, final BOOLEAN, expires_at DATETIME, updated_at DATETIME)"
    )
    started = time.perf_counter()
    db.execute(
        "INSERT INTO bare SELECT 1, id, 'own', 'common', 0, 0, '2030-01-01', '2030-01-01' "
        "FROM devices LIMIT ?",
        (n,),
    )
    db.commit()
    seconds = time.perf_counter() - started
    db.execute("DROP TABLE bare")
    db.commit()
    db.close()
    return seconds


def start_server(data: Path, work: Path) -> tuple[subprocess.Popen[str], int, int]:
    port, gw_port = free_port(), free_port()
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
    for line in proc.stdout:
        if line.startswith("openmps ready"):
            break
    else:
        raise RuntimeError(f"the server did not start; see {work / 'server.log'}")
    return proc, port, gw_port


def sdk_for(port: int, app: dict[str, str]) -> Client:
    return Client(
        Config(
            endpoint=f"127.0.0.1:{port}",
            protocol="HTTP",
            access_key_id=app["AccessKeyId"],
            access_key_secret=app["AccessKeySecret"],
            read_timeout=600_000,
        )
    )


async def broadcast(sdk: Client, app: dict[str, str], msg_key: str) -> str:
    response = await sdk.push_broadcast_async(
        models.PushBroadcastRequest(
            app_id=app["AppId"],
            workspace_id=app["WorkspaceId"],
            delivery_type=1,
            msgkey=msg_key,
            expired_seconds=3600,
            template_name="news",
            template_key_value=json.dumps({"what": "v2"}),
            extended_params=json.dumps({"t": str(int(time.time() * 1000))}),
            push_status=1,
            task_name="bench",
        )
    )
    assert response.body.result_code == "OK", response.body.to_map()
    task_id: str = response.body.push_result.data
    return task_id


async def run(n: int, online: int, work: Path) -> dict[str, float]:
    data = work / "data"
    print(f"seeding {n} devices")
    app = await seed(data, n)
    bare_s = bare_expand(data / "openmps.db", n)
    print(f"bare INSERT ... SELECT of {n} rows: {bare_s:.2f} s")
    proc, port, gw_port = start_server(data, work)
    try:
        sdk = sdk_for(port, app)
        created = await sdk.create_template_async(
            models.CreateTemplateRequest(
                app_id=app["AppId"],
                workspace_id=app["WorkspaceId"],
                template_name="news",
                title="News",
                content="#what# is out",
            )
        )
        assert created.body.success is True, created.body.to_map()
        print(f"broadcast to {n} devices (none online)")
        started = time.perf_counter()
        first = await broadcast(sdk, app, "bc-1")
        accept_s = time.perf_counter() - started
        print(f"accepted and expanded in {accept_s:.2f} s (task {first})")
        db = sqlite3.connect(f"file:{data / 'openmps.db'}?mode=ro", uri=True)
        (rows,) = db.execute(
            "SELECT count(*) FROM deliveries d JOIN messages m ON m.id = d.message_pk "
            "WHERE m.task_pk = ?",
            (int(first),),
        ).fetchone()
        assert rows == n, f"{rows} deliveries for {n} devices"
        creds = [DeviceCredentials(token(i), SECRET, "android") for i in range(online)]
        fleet = Fleet(f"ws://127.0.0.1:{gw_port}/v1", creds)
        print(f"connecting {online} devices (each gets the first broadcast on connect)")
        await fleet.connect()
        await asyncio.wait_for(fleet.everyone.wait(), 600)
        fleet.received, fleet.latencies_ms = 0, []
        fleet.everyone.clear()
        await asyncio.sleep(2)
        print(f"second broadcast to {n} devices, {online} online")
        started = time.perf_counter()
        second = await broadcast(sdk, app, "bc-2")
        second_accept_s = time.perf_counter() - started
        query = (
            "SELECT count(*) FROM deliveries d JOIN messages m ON m.id = d.message_pk "
            "WHERE m.task_pk = ? AND d.code = 2"
        )
        while True:
            (acked,) = db.execute(query, (int(second),)).fetchone()
            if acked >= online:
                break
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - started
        db.close()
        await fleet.close()
        return {
            "accept_s": accept_s,
            "bare_s": bare_s,
            "second_accept_s": second_accept_s,
            "rate": online / elapsed,
            "seconds": elapsed,
            "p50": pct(fleet.latencies_ms, 50),
            "p99": pct(fleet.latencies_ms, 99),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def write_results(
    n: int, online: int, ours: dict[str, float], bare: dict[str, float], command: str
) -> str:
    ratio = ours["rate"] / bare["rate"]
    section = f"""<!-- broadcast:start -->
## One broadcast to {n:,} devices (`bench/broadcast.py`)

Command: `{command}` — SQLite, one server process, on {platform.machine()} with
{os.cpu_count()} cores, {time.strftime("%Y-%m-%d")}.

| | openmps | floor, same run |
|---|---|---|
| PushBroadcast to {n:,} devices, SDK call to answer | {ours["accept_s"]:.2f} s | {
        ours["bare_s"]:.2f} s (bare INSERT ... SELECT, no index) |
| the same with {online:,} of them online | {ours["second_accept_s"]:.2f} s | |
| acked deliveries per second to {online:,} online devices | {ours["rate"]:,.0f} | {
        bare["rate"]:,.0f} (bare websockets broadcast) |
| time until every online device's status is 2 | {ours["seconds"]:.2f} s | {bare["seconds"]:.2f} s |
| push-to-device latency p50 / p99 | {ours["p50"]:,.0f} / {ours["p99"]:,.0f} ms | {
        bare["p50"]:,.0f} / {bare["p99"]:,.0f} ms |

Expansion: {ours["accept_s"] / ours["bare_s"]:.1f}x the bare insert (goal: under 10 s for a
million devices). Acked rate: {ratio:.0%} of the bare broadcast. The online figure is capped
at {MAX_DEVICES:,} by the 20,000 open files one process may hold here: 50,000 online devices
need several gateway processes (issue 5's scale-out), measured by bench/scale.py once it exists.
<!-- broadcast:end -->"""
    text = RESULTS.read_text()
    start, end = "<!-- broadcast:start -->", "<!-- broadcast:end -->"
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)
    return f"expansion {ours['accept_s']:.2f} s, acked rate {ratio:.0%} of bare"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--online", type=int, default=MAX_DEVICES)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--work", type=Path, help="keep the store and server log here")
    args = parser.parse_args()
    if args.devices < 1:
        parser.error("--devices must be at least 1")
    if not 1 <= args.online <= min(MAX_DEVICES, args.devices):
        parser.error(f"--online must be 1..{MAX_DEVICES} and at most --devices")
    if args.work is not None:
        args.work.mkdir(parents=True)
        ours = await run(args.devices, args.online, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="openmps-bench-") as work:
            ours = await run(args.devices, args.online, Path(work))
    print("openmps:", {k: round(v, 2) for k, v in ours.items()})
    bare = await run_bare(args.online)
    print("bare:   ", {k: round(v, 2) for k, v in bare.items()})
    if not args.no_write:
        command = "python bench/broadcast.py"
        if args.devices != 1_000_000:
            command += f" --devices {args.devices}"
        if args.online != MAX_DEVICES:
            command += f" --online {args.online}"
        print(write_results(args.devices, args.online, ours, bare, command), "->", RESULTS)


if __name__ == "__main__":
    asyncio.run(main())
