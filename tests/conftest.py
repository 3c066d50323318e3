"""Fixtures: a real ``openmps serve`` process per test module, real sockets, the official SDK.

Each test gets its own app (AppId and access key) in the shared server, so tests do not see
each other's devices, bindings or tasks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from alibabacloud_mpaas20201028.client import Client
from alibabacloud_tea_openapi.models import Config

from openmps.apps import AppCredentials, create_app
from openmps.client import DeviceClient, DeviceCredentials, register
from openmps.store import Store

STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One ``openmps serve`` child process and how to reach it."""

    data_dir: Path
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
        return f"sqlite+aiosqlite:///{self.data_dir / 'openmps.db'}"

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
                "--data-dir",
                str(self.data_dir),
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("openmps") / "data")
    srv.data_dir.mkdir(parents=True)
    srv.start()
    yield srv
    if srv.process is not None:
        srv.stop()


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
