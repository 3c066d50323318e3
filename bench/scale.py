"""One process against the scaled-out topology, in the same run, on the same store.

    .venv/bin/python bench/scale.py [--devices 4000] [--calls 3000] [--no-write] [--work DIR]

Two topologies, each on a fresh PostgreSQL database (dropped afterwards):

- single: one ``openmps serve`` process with all four roles, no Redis;
- scaled: ``openmps serve --role ...`` as 2 api, 2 gateway, 2 worker and 1 scheduler
  processes, sharing the database and a Redis key prefix of their own (deleted afterwards).

Each is measured twice:

1. Acked deliveries per second: ``--devices`` devices are registered and bound to one user
   each (setup, through the api nodes), then connect from simulator processes
   (bench/_device_sim.py, at most 19,000 devices each), spread over the gateways; PushSimple
   calls of 10 users each, 64 in flight, spread over the api nodes, push one message to every
   user; the time runs from the first call to every delivery being status 2 in the store.
2. MPS API requests per second: ``--calls`` signed PushSimple calls, 64 in flight, spread over
   the api nodes, each to a user with no device; accepted calls per second.

The figures, the ratio scaled/single of each and the CPU time each kind of process used are
printed and written to docs/benchmarks.md. One process may hold at most 20,000 open files
here, and the single process has one gateway, so --devices is at most 19,000.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from alibabacloud_mpaas20201028 import models
from alibabacloud_mpaas20201028.client import Client
from alibabacloud_tea_openapi.models import Config
from redis.asyncio import Redis

from openmps.apps import AppCredentials, create_app
from openmps.store import Store
from own_channel import MAX_DEVICES, RESULTS, bounded, free_port

BASE_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
SIMULATOR = Path(__file__).with_name("_device_sim.py")
IN_FLIGHT = 64  # PushSimple calls in flight, as an app server with a pool would
USERS_PER_CALL = 10
SETUP_IN_FLIGHT = 32
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 90.0
ACK_TIMEOUT_S = 900.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MACHINE = "whole machine"
LEVEL = re.compile(r"^\S+ \S+ ((?:WARNING|ERROR|CRITICAL) .*)")
SCALED = [
    ("api-1", "api"),
    ("api-2", "api"),
    ("gw-1", "gateway"),
    ("gw-2", "gateway"),
    ("worker-1", "worker"),
    ("worker-2", "worker"),
    ("sched-1", "scheduler"),
]


@dataclass
class Proc:
    """A child process whose stdout is read line by line (and always drained)."""

    name: str
    group: str  # what it is, for the CPU table
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    gateway_port: int | None = None
    process: asyncio.subprocess.Process | None = None
    banner: str = ""
    _lines: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    _reader: asyncio.Task[None] | None = None

    async def launch(self, *, stdin: bool = False) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMPS_")}
        with open(self.log, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**env, "PYTHONUNBUFFERED": "1", **self.env},
            )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            await self._lines.put(line.decode(errors="replace").rstrip("\n"))
        await self._lines.put(None)

    async def wait_for(self, prefix: str, *, echo: str = "", timeout_s: float) -> str:
        """The first stdout line starting with ``prefix``; lines before it are echoed."""
        async with asyncio.timeout(timeout_s):
            while (line := await self._lines.get()) is not None:
                if line.startswith(prefix):
                    return line
                if echo:
                    print(f"  {echo}{line}", flush=True)
        code = self.process.returncode if self.process else None
        raise RuntimeError(f"{self.name} ended (exit {code}) before {prefix!r}:\n{tail(self.log)}")

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; the exit code (None: never started)."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                print(f"  {self.name} did not stop in {STOP_TIMEOUT_S:.0f} s: SIGKILL", flush=True)
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        return self.process.returncode

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}/v1"


def tail(path: Path, lines: int = 30) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


def serve(name: str, group: str, work: Path, args: list[str], **env: str) -> Proc:
    proc = Proc(
        name, group, [sys.executable, "-m", "openmps", "serve", *args], work / f"{name}.log"
    )
    proc.env = env
    if group in ("single", "api"):
        proc.port = free_port()
        proc.argv += ["--port", str(proc.port)]
    if group in ("single", "gateway"):
        proc.gateway_port = free_port()
        proc.argv += ["--gateway-port", str(proc.gateway_port)]
    return proc


def topology(kind: str, database_url: str, prefix: str, work: Path) -> list[Proc]:
    common = ["--database-url", database_url, "--data-dir", str(work / "data")]
    if kind == "single":
        return [serve("single", "single", work, common)]
    redis = {"OPENMPS_REDIS_URL": REDIS_URL, "OPENMPS_REDIS_PREFIX": prefix}
    return [
        serve(name, role, work, ["--role", role, "--node-id", name, *common], **redis)
        for name, role in SCALED
    ]


# --- machine-wide CPU time, per kind of process ---------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process) so far."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def cpu_by_group(procs: list[Proc], database: str) -> dict[str, float]:
    """CPU seconds so far of our processes by group, of the PostgreSQL backends serving our
    database (one that exits takes its share with it), of Redis (all of it: the server is
    shared), and of the whole machine (``MACHINE``)."""
    used: defaultdict[str, float] = defaultdict(float)
    for proc in procs:
        if proc.process is not None:
            used[proc.group] += cpu_seconds(proc.process.pid)
    used["bench driver"] += cpu_seconds(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm == "postgres":
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if comm == "postgres" and f" {database} " in command:
            used["postgresql"] += cpu_seconds(int(entry.name))
        elif comm == "redis-server":
            used["redis"] += cpu_seconds(int(entry.name))
    used[MACHINE] = machine_busy()
    return dict(used)


def minus(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: max(0.0, v - before.get(k, 0.0)) for k, v in after.items()}


# --- the store and Redis ---------------------------------------------------------------------


def plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(plain(BASE_DATABASE_URL))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def purge(prefix: str) -> int:
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


async def make_app(database_url: str) -> AppCredentials:
    store = await Store.open(database_url, migrate=False)
    try:
        return await create_app(store, "bench-scale")
    finally:
        await store.close()


def sdk_for(api: Proc, app: AppCredentials) -> Client:
    return Client(
        Config(
            endpoint=f"127.0.0.1:{api.port}",
            protocol="HTTP",
            access_key_id=app.access_key_id,
            access_key_secret=app.access_key_secret,
            read_timeout=60_000,
            connect_timeout=10_000,
        )
    )


def push_request(app: AppCredentials, targets: dict[str, str]) -> models.PushSimpleRequest:
    return models.PushSimpleRequest(
        app_id=app.app_id,
        workspace_id=app.workspace_id,
        delivery_type=3,  # user ids
        expired_seconds=600,
        title="bench",
        content="hello",
        target_msgkey=json.dumps(targets),
    )


def refusal(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}({code})" if code else f"{type(exc).__name__}: {exc}"[:120]


# --- one topology ----------------------------------------------------------------------------


@dataclass
class Figures:
    ack_rate: float = 0.0
    ack_s: float = 0.0
    accept_s: float = 0.0
    received: int = 0
    reconnects: int = 0
    api_rate: float = 0.0
    api_s: float = 0.0
    refused: Counter[str] = field(default_factory=Counter)
    cpu_ack: dict[str, float] = field(default_factory=dict)
    cpu_api: dict[str, float] = field(default_factory=dict)
    exits: dict[str, int | None] = field(default_factory=dict)
    log_lines: dict[str, Counter[str]] = field(default_factory=dict)


async def run_topology(kind: str, n: int, calls: int, work: Path) -> Figures:
    work = work / kind
    work.mkdir(parents=True)
    name = f"openmps_bench_{uuid.uuid4().hex[:12]}"
    prefix = f"bench{uuid.uuid4().hex[:12]}"
    database_url = BASE_DATABASE_URL.rsplit("/", 1)[0] + "/" + name
    figures = Figures()
    procs: list[Proc] = []
    sims: list[Proc] = []
    print(f"[{kind}] database {name}" + (f", Redis prefix {prefix}" if kind == "scaled" else ""))
    try:
        await admin(f'CREATE DATABASE "{name}"')
        procs = topology(kind, database_url, prefix, work)
        for proc in procs:
            await proc.launch()
        for proc in procs:
            proc.banner = await proc.wait_for("openmps ready", timeout_s=STARTUP_TIMEOUT_S)
        print(f"[{kind}] {len(procs)} process(es) ready")
        app = await make_app(database_url)
        await measure(kind, n, calls, procs, sims, app, database_url, work, figures)
    finally:
        print(f"[{kind}] stopping {len(sims)} simulator(s) and {len(procs)} server process(es)")
        await asyncio.gather(*(sim.stop() for sim in sims), return_exceptions=True)
        codes = await asyncio.gather(*(p.stop() for p in procs), return_exceptions=True)
        figures.exits = {
            p.name: code if not isinstance(code, BaseException) else None
            for p, code in zip(procs, codes, strict=True)
        }
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        purged = await purge(prefix)
        print(f"[{kind}] dropped {name}; deleted {purged} Redis keys of {prefix}")
    figures.log_lines = {p.name: levels(p.log) for p in procs}
    return figures


def levels(log: Path) -> Counter[str]:
    """Warnings, errors and tracebacks of a server log, numbers replaced by N."""
    found: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if match := LEVEL.match(line):
            found[re.sub(r"\d+", "N", match.group(1))] += 1
        elif line.startswith("Traceback"):
            found["Traceback"] += 1
    return found


def log_summary(*runs: tuple[str, Figures]) -> str:
    lines = [
        f"- {kind} `{name}`: {count:,} x `{message}`"
        for kind, figures in runs
        for name, found in figures.log_lines.items()
        for message, count in found.most_common(3)
    ]
    exits = [
        f"{name} {code}" for _, figures in runs for name, code in figures.exits.items() if code != 0
    ]
    head = (
        "Every server process stopped with exit code 0."
        if not exits
        else ("Exit codes other than 0: " + ", ".join(exits) + ".")
    )
    if not lines:
        return head + " No warning or error in the server logs."
    return head + " Warnings and errors in the server logs:\n\n" + "\n".join(lines)


async def measure(
    kind: str,
    n: int,
    calls: int,
    procs: list[Proc],
    sims: list[Proc],
    app: AppCredentials,
    database_url: str,
    work: Path,
    figures: Figures,
) -> None:
    apis = [p for p in procs if p.port is not None]
    gateways = [p.gateway_url for p in procs if p.gateway_port is not None]
    sdks = [sdk_for(api, app) for api in apis]
    database = database_url.rsplit("/", 1)[1]
    print(f"[{kind}] registering and binding {n} devices through {len(apis)} api node(s)")
    https = [httpx.AsyncClient(base_url=api.api_url, timeout=60) for api in apis]
    try:

        async def register(i: int) -> tuple[str, str]:
            response = await https[i % len(https)].post(
                "/v1/devices", json={"app_id": app.app_id, "workspace_id": app.workspace_id}
            )
            response.raise_for_status()
            body = response.json()
            return str(body["delivery_token"]), str(body["device_secret"])

        devices = await bounded(list(range(n)), register, limit=SETUP_IN_FLIGHT, label="registered")
    finally:
        for http in https:
            await http.aclose()

    async def bind(i: int) -> None:
        response = await sdks[i % len(sdks)].push_bind_async(
            models.PushBindRequest(
                app_id=app.app_id,
                workspace_id=app.workspace_id,
                delivery_token=devices[i][0],
                os_type=1,
                user_id=f"user-{i}",
            )
        )
        assert response.body.result_code == "OK", response.body.to_map()

    await bounded(list(range(n)), bind, limit=SETUP_IN_FLIGHT, label="bound")

    count = math.ceil(n / MAX_DEVICES)
    print(
        f"[{kind}] connecting {n} devices from {count} simulator(s) to {len(gateways)} gateway(s)"
    )
    for s in range(count):
        chunk = range(s, n, count)
        spec = work / f"sim-{s + 1}.json"
        spec.write_text(
            json.dumps(
                {
                    "gateways": gateways,
                    "devices": [[*devices[i], i % len(gateways)] for i in chunk],
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
        before = cpu_by_group(procs + sims, database)
        calls_of = [
            {f"user-{i}": f"k{i}" for i in range(start, min(start + USERS_PER_CALL, n))}
            for start in range(0, n, USERS_PER_CALL)
        ]
        print(f"[{kind}] pushing to {n} users ({len(calls_of)} PushSimple calls)")
        started = time.perf_counter()

        async def push(index: int) -> None:
            request = push_request(app, calls_of[index])
            response = await sdks[index % len(sdks)].push_simple_async(request)
            assert response.body.result_code == "OK", response.body.to_map()

        pushing = asyncio.create_task(
            bounded(list(range(len(calls_of))), push, limit=IN_FLIGHT, label="pushed (calls)")
        )
        pushing.add_done_callback(
            lambda _: setattr(figures, "accept_s", time.perf_counter() - started)
        )
        shown = started
        while True:
            acked = int(await db.fetchval("SELECT count(*) FROM deliveries WHERE code = 2"))
            now = time.perf_counter()
            if acked >= n:
                break
            if pushing.done() and pushing.exception() is not None:
                raise RuntimeError("a push failed") from pushing.exception()
            if now - started > ACK_TIMEOUT_S:
                raise RuntimeError(f"only {acked} of {n} acked after {ACK_TIMEOUT_S:.0f} s")
            if now - shown >= 2:
                print(f"  acked: {acked}/{n} after {now - started:.1f} s", flush=True)
                shown = now
            await asyncio.sleep(0.05)
        figures.ack_s = now - started
        figures.ack_rate = n / figures.ack_s
        await pushing
        figures.cpu_ack = minus(cpu_by_group(procs + sims, database), before)
        total = int(await db.fetchval("SELECT count(*) FROM deliveries"))
        if total != n:
            print(f"  note: {total} deliveries in the store for {n} users")
    finally:
        await db.close()
    print(f"[{kind}] {n} acked in {figures.ack_s:.2f} s: {figures.ack_rate:,.0f}/s")

    for sim in sims:
        assert sim.process is not None and sim.process.stdin is not None
        sim.process.stdin.close()
    for sim in sims:
        closed = await sim.wait_for("closed", timeout_s=STOP_TIMEOUT_S)
        stats = dict(part.split("=") for part in closed.split()[1:])
        figures.received += int(stats["received"])
        figures.reconnects += int(stats["reconnects"])
        await sim.stop()

    print(f"[{kind}] {calls} PushSimple calls to users with no device, {IN_FLIGHT} in flight")
    before = cpu_by_group(procs, database)

    async def call(j: int) -> bool:
        try:
            response = await sdks[j % len(sdks)].push_simple_async(
                push_request(app, {f"nobody-{j}": f"n{j}"})
            )
        except Exception as exc:  # a refusal is a figure here, not a crash
            figures.refused[refusal(exc)] += 1
            return False
        if response.body.result_code != "OK":
            figures.refused[str(response.body.result_code)] += 1
            return False
        return True

    started = time.perf_counter()
    answers = await bounded(list(range(calls)), call, limit=IN_FLIGHT, label="called")
    figures.api_s = time.perf_counter() - started
    figures.api_rate = sum(answers) / figures.api_s
    figures.cpu_api = minus(cpu_by_group(procs, database), before)
    print(f"[{kind}] {sum(answers)} of {calls} accepted: {figures.api_rate:,.0f}/s")


# --- report ------------------------------------------------------------------------------------


async def servers() -> str:
    conn = await asyncpg.connect(plain(BASE_DATABASE_URL))
    try:
        postgres = str(await conn.fetchval("SHOW server_version")).split()[0]
    finally:
        await conn.close()
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        redis = (await client.info("server"))["redis_version"]
    finally:
        await client.aclose()
    return f"PostgreSQL {postgres} and Redis {redis} on the same machine"


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.machine()}, {cpu}, {os.cpu_count()} cores shared by every process of the run "
        f"(servers, simulator, this driver, PostgreSQL, Redis), Python {platform.python_version()}"
    )


PHASES = ["acked, one", "acked, scaled", "API calls, one", "API calls, scaled"]
GROUPS = [
    "single",
    "api",
    "gateway",
    "worker",
    "scheduler",
    "simulator",
    "bench driver",
    "postgresql",
    "redis",
]


def cpu_table(single: Figures, scaled: Figures) -> str:
    phases = [single.cpu_ack, scaled.cpu_ack, single.cpu_api, scaled.cpu_api]
    walls = [single.ack_s, scaled.ack_s, single.api_s, scaled.api_s]
    rows = [
        row("CPU seconds used by", *PHASES),
        row("---", "---", "---", "---", "---"),
    ]
    for group in GROUPS:
        cells = [phase.get(group, 0.0) for phase in phases]
        if any(cells):
            label = "one process (all roles)" if group == "single" else group
            rows.append(row(label, *(f"{c:.1f}" for c in cells)))
    ours = [sum(v for k, v in phase.items() if k != MACHINE) for phase in phases]
    rows.append(row("**this run**", *(f"**{c:.1f}**" for c in ours)))
    others = [max(0.0, phase.get(MACHINE, 0.0) - c) for phase, c in zip(phases, ours, strict=True)]
    rows.append(row("the rest of the machine", *(f"{c:.1f}" for c in others)))
    capacity = [w * (os.cpu_count() or 1) for w in walls]
    rows.append(row("available (wall clock x cores)", *(f"{c:.1f}" for c in capacity)))
    return "\n".join(rows)


def disturbed(single: Figures, scaled: Figures) -> list[str]:
    """Phases during which other work used more than a tenth of the machine."""
    found = []
    for label, phase, wall in zip(
        PHASES,
        [single.cpu_ack, scaled.cpu_ack, single.cpu_api, scaled.cpu_api],
        [single.ack_s, scaled.ack_s, single.api_s, scaled.api_s],
        strict=True,
    ):
        ours = sum(v for k, v in phase.items() if k != MACHINE)
        if phase.get(MACHINE, 0.0) - ours > 0.1 * wall * (os.cpu_count() or 1):
            found.append(label)
    return found


def refused_text(figures: Figures) -> str:
    if not figures.refused:
        return "none"
    return ", ".join(f"{k} x{v}" for k, v in figures.refused.most_common())


def row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def figures_table(n: int, calls: int, single: Figures, scaled: Figures) -> str:
    ack_ratio = scaled.ack_rate / single.ack_rate
    api_ratio = scaled.api_rate / single.api_rate
    push_calls = math.ceil(n / USERS_PER_CALL)
    return "\n".join(
        [
            row(
                "",
                "one process (`openmps serve`, all roles, PostgreSQL)",
                "scaled: 2 api, 2 gateway, 2 worker, 1 scheduler (PostgreSQL + Redis)",
                "scaled / one",
            ),
            row("---", "---", "---", "---"),
            row(
                f"acked deliveries per second, {n:,} devices online",
                f"{single.ack_rate:,.0f}",
                f"{scaled.ack_rate:,.0f}",
                f"**{ack_ratio:.2f}**",
            ),
            row(
                "first push to every status 2", f"{single.ack_s:.2f} s", f"{scaled.ack_s:.2f} s", ""
            ),
            row(
                f"the {push_calls:,} PushSimple calls all answered after",
                f"{single.accept_s:.2f} s",
                f"{scaled.accept_s:.2f} s",
                "",
            ),
            row(
                f"MPS API: accepted PushSimple calls per second ({calls:,} calls)",
                f"{single.api_rate:,.0f}",
                f"{scaled.api_rate:,.0f}",
                f"**{api_ratio:.2f}**",
            ),
            row("calls refused", refused_text(single), refused_text(scaled), ""),
        ]
    )


def section(
    n: int, calls: int, single: Figures, scaled: Figures, command: str, backing: str
) -> str:
    noisy = disturbed(single, scaled)
    quiet = (
        " Other work used more than a tenth of the machine during: "
        + "; ".join(noisy)
        + "; those figures are lower than on a quiet machine."
        if noisy
        else " No other work used more than a tenth of the machine during any timed phase."
    )
    push_calls = math.ceil(n / USERS_PER_CALL)
    return f"""<!-- scale:start -->
## One process against the scaled-out topology (`bench/scale.py`)

Command: `{command}` — {time.strftime("%Y-%m-%d")}; {machine()}; {backing}.

**Read this first.** This machine has 2 cores. The scaled topology's 7 server processes share
those same two cores with each other (and with the device simulator, this driver, PostgreSQL
and Redis), so no process gets a core of its own. What the ratios below show is the cost of
the distribution (Redis round trips, pub/sub hops, more processes and connections on the same
CPU) more than any gain; a gain from scaling out needs more cores or more machines. What little
the scaled topology can win here is the second core: the one process is a single Python
interpreter and uses at most one core, while the simulator, this driver and PostgreSQL need
the other one too.

{figures_table(n, calls, single, scaled)}

How it was measured: each topology runs on a fresh PostgreSQL 127.0.0.1 database (the scaled
one also on a Redis key prefix of its own); both are removed afterwards. Setup, not timed:
{n:,} devices registered and bound to one user each through the api node(s), then connected
from {math.ceil(n / MAX_DEVICES)} simulator process(es) (`bench/_device_sim.py`, the device SDK,
auto-ack), spread evenly over the gateway(s). Acked rate: {push_calls:,} signed PushSimple calls
(official SDK, {USERS_PER_CALL} user ids each, {IN_FLIGHT} in flight, round robin over the api
node(s)) push one message to every user; the clock runs from the first call until the store
counts {n:,} deliveries with status 2. API rate: {calls:,} signed PushSimple calls, one user
with no device each, {IN_FLIGHT} in flight, round robin over the api node(s), every call
answered; accepted calls divided by the time to answer them all. The scaled nodes run with the
default settings. At this size the acked phase lasts {single.ack_s:.1f} s (one) and
{scaled.ack_s:.1f} s (scaled), short enough to vary noticeably from run to run; a larger
--devices gives a longer one.

CPU time used during each timed phase, by kind of process, from /proc: "postgresql" is the
backends serving the run's database, "redis" the whole Redis server (shared with whatever else
uses it), "the rest of the machine" every other busy second (other programs, PostgreSQL's WAL
writer, the kernel).{quiet}

{cpu_table(single, scaled)}

{log_summary(("one", single), ("scaled", scaled))}
<!-- scale:end -->"""


def write(text: str) -> None:
    start, end = "<!-- scale:start -->", "<!-- scale:end -->"
    current = RESULTS.read_text()
    if start in current:
        current = current[: current.index(start)] + text + current[current.index(end) + len(end) :]
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(current)


def show(kind: str, figures: Figures) -> None:
    print(
        f"{kind}: acked {figures.ack_rate:,.0f}/s ({figures.ack_s:.2f} s, calls answered after "
        f"{figures.accept_s:.2f} s, received {figures.received}, reconnects "
        f"{figures.reconnects}); API {figures.api_rate:,.0f} calls/s ({figures.api_s:.2f} s, "
        f"refused: {refused_text(figures)})"
    )
    print(f"  exit codes: {figures.exits}")
    for name, found in figures.log_lines.items():
        for message, count in found.most_common(5):
            print(f"  {name} log: {count} x {message}")


@contextlib.contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True)
        yield keep
    else:
        with tempfile.TemporaryDirectory(prefix="openmps-scale-") as made:
            yield Path(made)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=4000)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--work", type=Path, help="keep the server and simulator logs here")
    args = parser.parse_args()
    if not 1 <= args.devices <= MAX_DEVICES:
        parser.error(f"--devices must be 1..{MAX_DEVICES}: the single process has one gateway")
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)

    results: dict[str, Figures] = {}
    with workdir(args.work) as work:
        for kind in ("single", "scaled"):
            results[kind] = await run_topology(kind, args.devices, args.calls, work)
            show(kind, results[kind])
    single, scaled = results["single"], results["scaled"]
    print(
        f"scaled/single: acked rate {scaled.ack_rate / single.ack_rate:.2f}, "
        f"API rate {scaled.api_rate / single.api_rate:.2f}"
    )
    print(cpu_table(single, scaled))
    if noisy := disturbed(single, scaled):
        print("warning: other work used more than a tenth of the machine during:", noisy)
    if not args.no_write:
        command = "python bench/scale.py"
        if args.devices != 4000:
            command += f" --devices {args.devices}"
        if args.calls != 3000:
            command += f" --calls {args.calls}"
        backing = await servers()
        write(section(args.devices, args.calls, single, scaled, command, backing))
        print("->", RESULTS)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("interrupted; the processes, databases and Redis keys of the run are removed")
        sys.exit(130)
