"""Fixtures: a real ``openmps serve`` process per test module, real sockets, the official SDK.

Each test gets its own app (AppId and access key) in the shared server, so tests do not see
each other's devices, bindings or tasks.

The store engine: SQLite under a temporary data dir by default. With
``OPENMPS_TEST_DATABASE_URL`` set (``postgresql+asyncpg://postgres@127.0.0.1:5432/test``), every
server gets a fresh PostgreSQL database of its own, created there and dropped afterwards; if
that server cannot be reached the tests fail, they are not skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from alibabacloud_mpaas20201028 import models
from alibabacloud_mpaas20201028.client import Client
from alibabacloud_tea_openapi.models import Config

from openmps.apps import AppCredentials, create_app
from openmps.client import DeviceClient, DeviceCredentials, register
from openmps.store import Store

STARTUP_TIMEOUT_S = 30.0
TEST_DATABASE_URL = os.environ.get("OPENMPS_TEST_DATABASE_URL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One ``openmps serve`` child process and how to reach it."""

    data_dir: Path
    database_url: str | None = None  # None: SQLite under data_dir
    port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    banner: list[str] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}/v1"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'openmps.db'}"

    def store_args(self) -> list[str]:
        """The CLI options that name this server's store."""
        if self.database_url:
            return ["--database-url", self.database_url]
        return ["--data-dir", str(self.data_dir)]

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "openmps",
                "serve",
                "--port",
                str(self.port),
                "--gateway-port",
                str(self.gateway_port),
                *self.store_args(),
            ],
            stdout=subprocess.PIPE,
            stderr=open(self.data_dir.parent / "server.log", "a"),  # noqa: SIM115
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        self.banner = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"openmps serve exited: {self.process.wait()}; see server.log")
            self.banner.append(line.rstrip("\n"))
            if line.startswith("openmps ready:"):
                break
        else:
            raise RuntimeError("openmps serve did not become ready")
        _wait_port(self.port)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def _postgres(base_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def running_server(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A started server with a store of its own; stopped (and its database dropped) after."""
    data_dir = tmp_path_factory.mktemp("openmps") / "data"
    data_dir.mkdir(parents=True)
    database_url = None
    if TEST_DATABASE_URL:
        name = f"openmps_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_postgres(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"'))
        database_url = TEST_DATABASE_URL.rsplit("/", 1)[0] + "/" + name
    srv = Server(data_dir, database_url=database_url, env=dict(env or {}))
    try:
        srv.start()
        yield srv
    finally:
        if srv.process is not None:
            srv.stop()
        if database_url:
            asyncio.run(_postgres(TEST_DATABASE_URL or "", f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory) as srv:
        yield srv


@dataclass
class Tenant:
    """An app of the test server, with an official SDK client signed with its key."""

    server: Server
    creds: AppCredentials

    @property
    def app_id(self) -> str:
        return self.creds.app_id

    @property
    def workspace_id(self) -> str:
        return self.creds.workspace_id

    def sdk(self, *, secret: str | None = None, key_id: str | None = None) -> Client:
        return Client(
            Config(
                endpoint=f"127.0.0.1:{self.server.port}",
                protocol="HTTP",
                access_key_id=key_id or self.creds.access_key_id,
                access_key_secret=secret or self.creds.access_key_secret,
                read_timeout=20000,
                connect_timeout=5000,
            )
        )

    async def register(self, platform: str = "android") -> DeviceCredentials:
        return await register(
            self.server.api_url,
            app_id=self.app_id,
            workspace_id=self.workspace_id,
            platform=platform,
        )

    def device(self, creds: DeviceCredentials, **options: object) -> DeviceClient:
        return DeviceClient(self.server.gateway_url, creds, **options)  # type: ignore[arg-type]

    async def push_simple(
        self, targets: dict[str, str], *, expired_seconds: int = 300, title: str = "Hello"
    ) -> str:
        """PushSimple to Android devices (delivery token -> msgKey); the task id, once OK."""
        response = await self.sdk().push_simple_async(
            models.PushSimpleRequest(
                app_id=self.app_id,
                workspace_id=self.workspace_id,
                delivery_type=1,
                expired_seconds=expired_seconds,
                title=title,
                content="Hi",
                target_msgkey=json.dumps(targets),
            )
        )
        assert response.body.result_code == "OK", response.body.to_map()
        return str(response.body.push_result.data)


async def new_tenant(server: Server) -> Tenant:
    store = await Store.open(server.db_url, migrate=False)
    try:
        creds = await create_app(store, "test")
    finally:
        await store.close()
    return Tenant(server, creds)


@pytest.fixture
async def tenant(server: Server) -> AsyncIterator[Tenant]:
    yield await new_tenant(server)


async def eventually(check: object, *, timeout_s: float = 10.0, every_s: float = 0.05) -> None:
    """Wait until the async callable ``check`` returns True."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await check():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every_s)
