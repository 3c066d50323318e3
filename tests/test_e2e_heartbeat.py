"""Heartbeats find dead links: a device that stops answering pings is dropped."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import Iterator

import pytest
from alibabacloud_mpaas20201028 import models

from tests.conftest import Server, Tenant, eventually, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"OPENMPS_HEARTBEAT_INTERVAL_S": "1.5", "OPENMPS_HEARTBEAT_TIMEOUT_S": "1.5"}
    with running_server(tmp_path_factory, env) as srv:
        yield srv


def masked_text_frame(text: str) -> bytes:
    """One client-to-server WebSocket text frame (RFC 6455 5.2), masked as clients must."""
    payload = text.encode()
    mask = os.urandom(4)
    if len(payload) < 126:
        head = struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask
    else:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload)) + mask
    return head + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def silent_device(
    gateway_port: int, token: str, secret: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, say hello, then never answer anything (a phone that vanished)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway_port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /v1 HTTP/1.1\r\nHost: 127.0.0.1:{gateway_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    status = await reader.readuntil(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 101")
    hello = {"type": "hello", "v": 1, "token": token, "secret": secret}
    writer.write(masked_text_frame(json.dumps(hello, separators=(",", ":"))))
    await writer.drain()
    return reader, writer  # the writer must stay referenced: collecting it closes the socket


async def test_device_that_stops_answering_pings_is_dropped(tenant: Tenant) -> None:
    sdk = tenant.sdk()
    creds = await tenant.register()
    reader, writer = await silent_device(
        tenant.server.gateway_port, creds.delivery_token, creds.device_secret
    )

    async def statue() -> str:
        response = await sdk.push_query_device_state_async(
            models.PushQueryDeviceStateRequest(
                app_id=tenant.app_id,
                workspace_id=tenant.workspace_id,
                target=creds.delivery_token,
                target_type=1,
            )
        )
        value: str = response.body.data.statue
        return value

    async def online() -> bool:
        return await statue() == "1"

    async def offline() -> bool:
        return await statue() == "0"

    await eventually(online, timeout_s=1.5)
    # Ping every 1.5 s, pong awaited 1.5 s: the gateway closes the link in about 3 s.
    await eventually(offline, timeout_s=8)
    rest = await asyncio.wait_for(reader.read(), 5)  # the server closed the TCP connection
    assert rest[:1] == b"\x81"  # the welcome frame came first, then pings, then the close
    writer.close()
