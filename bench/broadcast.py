"""One broadcast to a million registered devices: time to accept and expand it, and the acked
delivery rate to the devices online.

    .venv/bin/python bench/broadcast.py [--devices 1000000] [--online 19000]
        [--online-scaled 50000 | --skip-scaled | --only-scaled]

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
out of issue 5).

Part 3 (``--online-scaled``, left out with ``--skip-scaled``): the scaled topology of
bench/scale.py on a fresh PostgreSQL database and a Redis key prefix of its own (both removed
afterwards): 1 api, ceil(N / 19,000) gateway, 1 worker and 1 scheduler ``openmps serve --role``
processes. ``--devices`` devices are copied straight into PostgreSQL (setup, not measured),
``--online-scaled`` of them connect from simulator processes (bench/_device_sim.py, at most
19,000 each) spread over the gateways, and one PushBroadcast (PushStatus 1) is timed from the
SDK call to its answer (the expansion on PostgreSQL) and until the store counts a status 2
delivery of its task for every online device (the acked rate). Figures are printed and written
to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from alibabacloud_mpaas20201028 import models
from alibabacloud_mpaas20201028.client import Client
from alibabacloud_tea_openapi.models import Config

from openmps.apps import create_app
from openmps.client import DeviceCredentials
from openmps.store import Store
from own_channel import MAX_DEVICES, RESULTS, Fleet, free_port, pct, run_bare
from scale import (
    ACK_TIMEOUT_S,
    BASE_DATABASE_URL,
    REDIS_URL,
    SIMULATOR,
    STARTUP_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Proc,
    admin,
    levels,
    make_app,
    plain,
    purge,
    serve,
)

SECRET = "bench-device-secret"  # every seeded device's secret (the store keeps its hash)
SEED_CHUNK = 100_000
HEARTBEAT_S = 120  # part 3's gateway ping period (OPENMPS_HEARTBEAT_INTERVAL_S)


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


# --- part 3: the scaled topology on PostgreSQL + Redis ------------------------------------------


async def seed_pg(database_url: str, app_id: str, n: int) -> None:
    """``n`` Android devices copied straight into PostgreSQL, as ``seed`` does for SQLite."""
    conn = await asyncpg.connect(plain(database_url))
    try:
        app_pk = await conn.fetchval("SELECT id FROM apps WHERE app_id = $1", app_id)
        secret_hash = hashlib.sha256(SECRET.encode()).hexdigest()
        now = datetime.now(UTC)
        for start in range(0, n, SEED_CHUNK):
            await conn.copy_records_to_table(
                "devices",
                records=[
                    (app_pk, token(i), secret_hash, "android", now)
                    for i in range(start, min(n, start + SEED_CHUNK))
                ],
                columns=["app_pk", "delivery_token", "secret_hash", "platform", "created_at"],
            )
            print(f"  seeded: {min(n, start + SEED_CHUNK)}/{n}", flush=True)
        await conn.execute("ANALYZE devices")  # what autovacuum would do shortly after a load
    finally:
        await conn.close()


async def wait_acked(
    db: asyncpg.Connection, task_pk: int, want: int, started: float, label: str
) -> float:
    """Seconds from ``started`` until ``want`` deliveries of the task are status 2."""
    query = (
        "SELECT count(*) FROM deliveries d JOIN messages m ON m.id = d.message_pk "
        "WHERE m.task_pk = $1 AND d.code = 2"
    )
    # Counting a million-delivery task is itself work on the machine under test: one core at
    # most (no parallel workers), and at most a fifth of the time.
    await db.execute("SET max_parallel_workers_per_gather = 0")
    shown = started
    while True:
        asked = time.perf_counter()
        acked = int(await db.fetchval(query, task_pk))
        now = time.perf_counter()
        if acked >= want:
            return now - started
        if now - started > ACK_TIMEOUT_S:
            raise RuntimeError(f"{label}: only {acked} of {want} acked after {ACK_TIMEOUT_S:.0f} s")
        if now - shown >= 5:
            print(f"  {label}: {acked}/{want} acked after {now - started:.1f} s", flush=True)
            shown = now
        await asyncio.sleep(max(0.1, 4 * (now - asked)))


async def run_scaled(n: int, online: int, work: Path) -> dict[str, float]:
    """Part 3: one broadcast to ``n`` devices, ``online`` of them connected, scaled topology."""
    work = work / "scaled"
    work.mkdir(parents=True)
    name = f"openmps_bench_{uuid.uuid4().hex[:12]}"
    prefix = f"bench{uuid.uuid4().hex[:12]}"
    database_url = BASE_DATABASE_URL.rsplit("/", 1)[0] + "/" + name
    gateways = math.ceil(online / MAX_DEVICES)
    roles = [
        ("api-1", "api"),
        *((f"gw-{g + 1}", "gateway") for g in range(gateways)),
        ("worker-1", "worker"),
        ("sched-1", "scheduler"),
    ]
    common = ["--database-url", database_url, "--data-dir", str(work / "data")]
    redis = {
        "OPENMPS_REDIS_URL": REDIS_URL,
        "OPENMPS_REDIS_PREFIX": prefix,
        # Tens of thousands of idle links: a 20 s heartbeat alone keeps the 2 cores busy.
        "OPENMPS_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
        "OPENMPS_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_S // 2),
    }
    procs: list[Proc] = []
    sims: list[Proc] = []
    figures: dict[str, float] = {"gateways": gateways, "online": online}
    print(f"[scaled] database {name}, Redis prefix {prefix}, {len(roles)} server processes")
    try:
        await admin(f'CREATE DATABASE "{name}"')
        procs = [
            serve(node, role, work, ["--role", role, "--node-id", node, *common], **redis)
            for node, role in roles
        ]
        for proc in procs:
            await proc.launch()
        for proc in procs:
            proc.banner = await proc.wait_for("openmps ready", timeout_s=STARTUP_TIMEOUT_S)
        print(f"[scaled] {len(procs)} processes ready: {', '.join(p.name for p in procs)}")
        creds = await make_app(database_url)
        app = {
            "AppId": creds.app_id,
            "WorkspaceId": creds.workspace_id,
            "AccessKeyId": creds.access_key_id,
            "AccessKeySecret": creds.access_key_secret,
        }
        print(f"[scaled] seeding {n} devices into PostgreSQL")
        await seed_pg(database_url, creds.app_id, n)
        api = next(p for p in procs if p.port is not None)
        urls = [p.gateway_url for p in procs if p.gateway_port is not None]
        sdk = sdk_for(api.port or 0, app)
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

        count = math.ceil(online / MAX_DEVICES)
        print(
            f"[scaled] connecting {online} devices from {count} simulator(s) "
            f"to {gateways} gateway(s)"
        )
        for s in range(count):
            spec = work / f"sim-{s + 1}.json"
            spec.write_text(
                json.dumps(
                    {
                        "gateways": urls,
                        "devices": [
                            [token(i), SECRET, i % len(urls)] for i in range(s, online, count)
                        ],
                    }
                )
            )
            sim = Proc(
                f"sim-{s + 1}",
                "simulator",
                [sys.executable, str(SIMULATOR), str(spec)],
                work / f"sim-{s + 1}.log",
            )
            sims.append(sim)
            await sim.launch(stdin=True)
        for sim in sims:
            await sim.wait_for("ready", echo=f"{sim.name} ", timeout_s=ACK_TIMEOUT_S)
        await asyncio.sleep(2)  # let the gateways finish each device's sync from the store

        db = await asyncpg.connect(plain(database_url))
        try:
            print(f"[scaled] broadcast to {n} devices, {online} online")
            started = time.perf_counter()
            task = await broadcast(sdk, app, "bc-scaled")
            figures["accept_s"] = time.perf_counter() - started
            print(f"[scaled] accepted and expanded in {figures['accept_s']:.2f} s (task {task})")
            figures["seconds"] = await wait_acked(db, int(task), online, started, "[scaled]")
            figures["rate"] = online / figures["seconds"]
            # The expansion on PostgreSQL is most of the end-to-end time: the delivery rate
            # proper counts from the answer (every delivery row committed) to the last ack.
            figures["answered_rate"] = online / (figures["seconds"] - figures["accept_s"])
            print(
                f"[scaled] {online} acked in {figures['seconds']:.2f} s: {figures['rate']:,.0f}/s",
                flush=True,
            )
            rows = int(
                await db.fetchval(
                    "SELECT count(*) FROM deliveries d JOIN messages m ON m.id = d.message_pk "
                    "WHERE m.task_pk = $1",
                    int(task),
                )
            )
            assert rows == n, f"{rows} deliveries for {n} devices"
        finally:
            await db.close()

        figures["received"] = figures["reconnects"] = 0
        for sim in sims:
            assert sim.process is not None and sim.process.stdin is not None
            sim.process.stdin.close()
        for sim in sims:
            closed = await sim.wait_for("closed", timeout_s=STOP_TIMEOUT_S)
            stats = dict(part.split("=") for part in closed.split()[1:])
            figures["received"] += int(stats["received"])
            figures["reconnects"] += int(stats["reconnects"])
    finally:
        print(f"[scaled] stopping {len(sims)} simulator(s) and {len(procs)} server process(es)")
        await asyncio.gather(*(sim.stop() for sim in sims), return_exceptions=True)
        codes = await asyncio.gather(*(p.stop() for p in procs), return_exceptions=True)
        figures["bad_exits"] = sum(1 for code in codes if code != 0)
        for proc, code in zip(procs, codes, strict=True):
            found = levels(proc.log)
            if code != 0 or found:
                print(f"  {proc.name}: exit {code}; {dict(found.most_common(5))}", flush=True)
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        purged = await purge(prefix)
        print(f"[scaled] dropped {name}; deleted {purged} Redis keys of {prefix}")
    return figures


def replace_section(name: str, section: str) -> None:
    """Put ``section`` (with its ``<!-- name:start/end -->`` marks) into docs/benchmarks.md."""
    text = RESULTS.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def write_scaled(n: int, scaled: dict[str, float], command: str) -> str:
    """Part 3's section of docs/benchmarks.md; a one-line summary."""
    gateways = int(scaled["gateways"])
    online = scaled["online"]
    topology = f"1 api, {gateways} gateway, 1 worker, 1 scheduler processes, PostgreSQL + Redis"
    exits = (
        "every server process stopped with exit code 0"
        if not scaled["bad_exits"]
        else f"{scaled['bad_exits']:.0f} server process(es) did not stop with exit code 0"
    )
    section = f"""<!-- broadcast-scaled:start -->
## One broadcast to {n:,} devices, {online:,.0f} of them online (`bench/broadcast.py`, part 3)

Command: `{command}` — {topology}, gateway heartbeat every {HEARTBEAT_S} s, on
{platform.machine()} with {os.cpu_count()} cores, {time.strftime("%Y-%m-%d")}.

| | openmps |
|---|---|
| PushBroadcast to {n:,} devices (expansion on PostgreSQL), SDK call to answer | {
        scaled["accept_s"]:.2f} s |
| acked deliveries per second to {online:,.0f} online devices, SDK call to last ack | {
        scaled["rate"]:,.0f} |
| the same, from the answer to the last ack | {scaled["answered_rate"]:,.0f} |
| time until every online device's status is 2 | {scaled["seconds"]:.2f} s |

One gateway process may hold at most 20,000 open files here, so the {online:,.0f} devices are
served by {gateways} gateway processes and connect from
{math.ceil(online / MAX_DEVICES)} simulator processes (bench/_device_sim.py, the device SDK,
auto-ack) to a fresh PostgreSQL database whose devices were copied in before the servers saw
them (setup, not timed). All of these processes, PostgreSQL and Redis share the machine's
{os.cpu_count()} cores: the figures show what the topology does on this small machine, not
what more cores would give. The simulators received {scaled["received"]:,.0f} messages with
{scaled["reconnects"]:,.0f} reconnects, and {exits}.
<!-- broadcast-scaled:end -->"""
    replace_section("broadcast-scaled", section)
    return f"scaled: {scaled['rate']:,.0f} acked/s to {online:,.0f} online"


def write_results(
    n: int,
    online: int,
    ours: dict[str, float],
    bare: dict[str, float],
    command: str,
) -> str:
    ratio = ours["rate"] / bare["rate"]
    section = f"""<!-- broadcast:start -->
## One broadcast to {n:,} devices (`bench/broadcast.py`)

Command: `{command}` — SQLite, one server process (and, in the scaled rows, several
processes on PostgreSQL + Redis), on {platform.machine()} with {os.cpu_count()} cores,
{time.strftime("%Y-%m-%d")}.

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
million devices). Acked rate: {ratio:.0%} of the bare broadcast. {online:,} is the most one
gateway process serves here; part 3 (the next section) measures more online devices on
several gateway processes.
<!-- broadcast:end -->"""
    replace_section("broadcast", section)
    return f"expansion {ours['accept_s']:.2f} s, acked rate {ratio:.0%} of bare"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--online", type=int, default=MAX_DEVICES)
    parser.add_argument(
        "--online-scaled",
        type=int,
        default=50_000,
        help="online devices of part 3, the scaled topology on PostgreSQL + Redis",
    )
    parser.add_argument("--skip-scaled", action="store_true", help="leave part 3 out")
    parser.add_argument(
        "--only-scaled", action="store_true", help="run part 3 alone (writes only its section)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--work", type=Path, help="keep the store and server log here")
    args = parser.parse_args()
    if args.devices < 1:
        parser.error("--devices must be at least 1")
    if not 1 <= args.online <= min(MAX_DEVICES, args.devices):
        parser.error(f"--online must be 1..{MAX_DEVICES} and at most --devices")
    if args.only_scaled and args.skip_scaled:
        parser.error("--only-scaled and --skip-scaled exclude each other")
    if not args.skip_scaled and not 1 <= args.online_scaled <= args.devices:
        parser.error("--online-scaled must be at least 1 and at most --devices")
    scaled: dict[str, float] | None = None
    with contextlib.ExitStack() as stack:
        if args.work is not None:
            args.work.mkdir(parents=True)
            work = args.work
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="openmps-bench-")))
        if not args.only_scaled:
            ours = await run(args.devices, args.online, work)
            print("openmps:", {k: round(v, 2) for k, v in ours.items()})
            bare = await run_bare(args.online)
            print("bare:   ", {k: round(v, 2) for k, v in bare.items()})
        if not args.skip_scaled:
            scaled = await run_scaled(args.devices, args.online_scaled, work)
            print("scaled: ", {k: round(v, 2) for k, v in scaled.items()})
    if args.no_write:
        return
    command = "python bench/broadcast.py"
    if args.devices != 1_000_000:
        command += f" --devices {args.devices}"
    if not args.only_scaled:
        part = command + (f" --online {args.online}" if args.online != MAX_DEVICES else "")
        print(write_results(args.devices, args.online, ours, bare, part + " --skip-scaled"))
    if scaled is not None:
        part = command + " --only-scaled"
        if args.online_scaled != 50_000:
            part += f" --online-scaled {args.online_scaled}"
        print(write_scaled(args.devices, scaled, part), "->", RESULTS)


if __name__ == "__main__":
    asyncio.run(main())
