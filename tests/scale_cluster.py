"""A scaled-out openmps for tests: ``openmps serve --role ...`` processes sharing a fresh
PostgreSQL database and a Redis key prefix of their own.

PostgreSQL: ``OPENMPS_TEST_DATABASE_URL`` (default ``postgresql+asyncpg://postgres@127.0.0.1:5432/
test``), where a database is created per test and dropped after. Redis:
``OPENMPS_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). Either missing fails the
test; nothing here skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from alibabacloud_mpaas20201028 import models
from alibabacloud_mpaas20201028.client import Client
from alibabacloud_tea_openapi.models import Config
from redis.asyncio import Redis

from openmps.apps import AppCredentials, create_app
from openmps.client import DeviceClient, DeviceCredentials, PushMessage, register
from openmps.cluster.redis import connect
from openmps.fakes.fcm import FakeFCM
from openmps.store import Store
from tests.conftest import _postgres, free_port
from tests.test_e2e_vendors import FakeHost

DATABASE_URL = os.environ.get(
    "OPENMPS_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("OPENMPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
STARTUP_TIMEOUT_S = 60.0

# Short lifetimes, so that the loss of a node is noticed within seconds.
FAST = {
    "OPENMPS_PRESENCE_TTL_S": "3",
    "OPENMPS_DISPATCH_RECLAIM_IDLE_S": "3",
    "OPENMPS_RECOVERY_AFTER_S": "3",
    "OPENMPS_DRAIN_TIMEOUT_S": "5",
    "OPENMPS_HEARTBEAT_INTERVAL_S": "5",
    "OPENMPS_HEARTBEAT_TIMEOUT_S": "5",
}


@dataclass
class Node:
    """One ``openmps serve --role ...`` child process."""

    name: str  # its node id
    roles: str
    log: Path
    args: list[str]
    env: dict[str, str]
    port: int | None = None  # API port (api role)
    gateway_port: int | None = None  # gateway port (gateway role)
    process: subprocess.Popen[str] | None = None
    banner: str = ""

    @property
    def api_url(self) -> str:
        assert self.port is not None, f"{self.name} has no api role"
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        assert self.gateway_port is not None, f"{self.name} has no gateway role"
        return f"ws://127.0.0.1:{self.gateway_port}/v1"

    def launch(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "openmps", "serve", *self.args],
            stdout=subprocess.PIPE,
            stderr=open(self.log, "a"),  # noqa: SIM115
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )

    def wait_ready(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.wait()}:\n{self.log.read_text()}"
                )
            if line.startswith("openmps ready:"):
                self.banner = line.strip()
                return
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log.read_text()}")

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=60)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None
        return code

    def kill(self) -> None:
        assert self.stop(signal.SIGKILL) == -signal.SIGKILL

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Cluster:
    """The processes of one test, their database and their Redis prefix."""

    work: Path
    database_url: str
    prefix: str
    nodes: dict[str, Node] = field(default_factory=dict)

    def node(self, name: str, roles: str, **env: str) -> Node:
        """Declare a node (not started): ports are chosen for the roles that need them."""
        args = ["--role", roles, "--node-id", name, "--database-url", self.database_url]
        port = gateway_port = None
        if "api" in roles.split(","):
            port = free_port()
            args += ["--port", str(port)]
        if "gateway" in roles.split(","):
            gateway_port = free_port()
            args += ["--gateway-port", str(gateway_port)]
        node = Node(
            name,
            roles,
            self.work / f"{name}.log",
            args,
            {
                "OPENMPS_REDIS_URL": REDIS_URL,
                "OPENMPS_REDIS_PREFIX": self.prefix,
                **FAST,
                **env,
            },
            port=port,
            gateway_port=gateway_port,
        )
        self.nodes[name] = node
        return node

    def start(self, *nodes: Node) -> None:
        """Start nodes side by side (they migrate one store at once) and wait for each."""
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_ready()

    def logs(self) -> str:
        return "\n".join(
            f"--- {node.name} ---\n{node.log.read_text()}"
            for node in self.nodes.values()
            if node.log.exists()
        )

    async def app(self) -> AppCredentials:
        store = await Store.open(self.database_url, migrate=False)
        try:
            return await create_app(store, "scaled")
        finally:
            await store.close()

    async def sql(self, query: str, *args: Any) -> list[Any]:
        """Rows of a query on the cluster's database (asyncpg, ``$1`` placeholders)."""
        import asyncpg

        plain = self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(plain)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def cluster_of(work: Path) -> AsyncIterator[Cluster]:
    """A fresh database and Redis prefix; every node left running is stopped afterwards."""
    name = f"openmps_scale_{uuid.uuid4().hex[:12]}"
    await _postgres(DATABASE_URL, f'CREATE DATABASE "{name}"')
    cluster = Cluster(
        work, DATABASE_URL.rsplit("/", 1)[0] + "/" + name, f"t{uuid.uuid4().hex[:12]}"
    )
    try:
        yield cluster
    finally:
        for node in cluster.nodes.values():
            if node.alive:
                await asyncio.to_thread(node.stop)
        await _postgres(DATABASE_URL, f'DROP DATABASE "{name}" WITH (FORCE)')
        redis = await connect(REDIS_URL)
        try:
            await purge(redis, cluster.prefix)
        finally:
            await redis.aclose()


async def purge(client: Redis, prefix: str) -> None:
    keys = [name async for name in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)


@dataclass
class App:
    """An app of the cluster, reachable through any api node."""

    creds: AppCredentials

    def sdk(self, node: Node) -> Client:
        return Client(
            Config(
                endpoint=f"127.0.0.1:{node.port}",
                protocol="HTTP",
                access_key_id=self.creds.access_key_id,
                access_key_secret=self.creds.access_key_secret,
                read_timeout=20000,
                connect_timeout=5000,
            )
        )

    async def register(self, node: Node, platform: str = "android") -> DeviceCredentials:
        return await register(
            node.api_url,
            app_id=self.creds.app_id,
            workspace_id=self.creds.workspace_id,
            platform=platform,
        )

    def device(
        self, gateways: Sequence[Node], creds: DeviceCredentials, *, auto_ack: bool = True
    ) -> DeviceClient:
        """A device SDK client that knows every gateway given, the first one first."""
        return DeviceClient(
            [g.gateway_url for g in gateways],
            creds,
            auto_ack=auto_ack,
            backoff_initial_s=0.2,
            backoff_max_s=1.0,
        )

    async def rest(self, node: Node, method: str, path: str, body: Any = None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=20) as http:
            return await http.request(
                method,
                f"{node.api_url}{path}",
                json=body,
                auth=(self.creds.access_key_id, self.creds.access_key_secret),
            )

    async def push(
        self, node: Node, targets: dict[str, str], *, title: str = "Hello", delivery_type: int = 1
    ) -> str:
        """PushSimple through the official SDK; the task id."""
        response = await self.sdk(node).push_simple_async(
            models.PushSimpleRequest(
                app_id=self.creds.app_id,
                workspace_id=self.creds.workspace_id,
                delivery_type=delivery_type,
                expired_seconds=600,
                title=title,
                content="from a scaled-out openmps",
                target_msgkey=json.dumps(targets),
            )
        )
        assert response.body.result_code == "OK", response.body.to_map()
        task_id: str = response.body.push_result.data
        return task_id

    async def statuses(self, node: Node, task_id: str) -> list[tuple[str | None, str, int, bool]]:
        """(device token, channel, status code, final) per delivery of the task."""
        response = await self.rest(node, "GET", f"/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        return [
            (row["device"], row["channel"], row["status_code"], row["final"])
            for row in response.json()["deliveries"]
        ]


@contextlib.contextmanager
def fcm_fake() -> Iterator[tuple[FakeHost, FakeFCM]]:
    """A fake FCM served from a thread of its own (the tests' loop blocks at times)."""
    host = FakeHost()
    fake = FakeFCM()
    host.run(fake.start())
    try:
        yield host, fake
    finally:
        host.run(fake.stop())
        host.close()


async def use_fcm(app: App, api: Node, fake: FakeFCM, host: FakeHost) -> None:
    account, _ = host.run(asyncio.to_thread(fake.new_service_account, "openmps-scale"))
    response = await app.rest(
        api,
        "PUT",
        "/v1/channels/fcm",
        {"settings": {"service_account": json.dumps(account)}, "base_url": fake.url},
    )
    assert response.status_code == 200, response.text


async def fcm_device(app: App, api: Node, token: str) -> str:
    """A registered device with an FCM token reported; its delivery token."""
    creds = await app.register(api)
    reported = await app.sdk(api).push_report_async(
        models.PushReportRequest(
            app_id=app.creds.app_id,
            workspace_id=app.creds.workspace_id,
            delivery_token=creds.delivery_token,
            os_type=1,
            third_channel=6,  # FCM
            third_channel_device_token=token,
        )
    )
    assert reported.body.result_code == "OK"
    return creds.delivery_token


def fcm_requests(fake: FakeFCM, token: str) -> list[dict[str, Any]]:
    """The send requests the fake got for one registration token, oldest first."""
    return [
        item.body["message"]
        for item in fake.send_requests
        if isinstance(item.body, dict) and item.body["message"].get("token") == token
    ]


class Inbox:
    """A device on the own channel, collecting what its app sees (the SDK deduplicates)."""

    def __init__(self, client: DeviceClient) -> None:
        self.client = client
        self.messages: list[PushMessage] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for message in self.client:
            self.messages.append(message)

    def keys(self) -> list[str]:
        return [m.msg_key for m in self.messages]

    async def close(self) -> None:
        await self.client.close()
        await asyncio.wait_for(self._task, 10)
