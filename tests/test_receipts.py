"""Receipts: the ``ignored`` frame (client and gateway), and the times the gateway records for
analytics: ``sent_at`` (first write to the device's socket), ``acked_at``, ``opened_at`` and
``ignored_at`` (docs/gateway-protocol.md, "Receipts")."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select
from websockets.asyncio.server import ServerConnection

from openmps.client import DeviceClient, GatewayUnavailable
from openmps.store import Delivery, Store
from tests.conftest import Tenant, eventually
from tests.test_client_unit import CREDS, STEP_S, WELCOME, fake_gateway, read_frame, send_frame
from tests.test_e2e_lifecycle import (
    BAD_ID_ERROR,
    ping_pong,
    push,
    raw_session,
    recv_frame,
    until_closed,
)

Times = dict[str, datetime | None]


async def receipt_times(tenant: Tenant, delivery_id: str) -> Times:
    """The analytics columns of one delivery, read from the server's store."""
    store = await Store.open(tenant.server.db_url, migrate=False)
    try:
        async with store.session() as session:
            row = (
                await session.execute(
                    select(
                        Delivery.sent_at,
                        Delivery.acked_at,
                        Delivery.opened_at,
                        Delivery.ignored_at,
                    ).where(Delivery.id == int(delivery_id))
                )
            ).one()
    finally:
        await store.close()
    return dict(zip(("sent", "acked", "opened", "ignored"), row, strict=True))


def which(times: Times) -> set[str]:
    """The names of the receipts that are set."""
    return {name for name, at in times.items() if at is not None}


async def until_receipts(tenant: Tenant, delivery_id: str, names: set[str]) -> Times:
    """Wait until exactly ``names`` are set on the delivery (writes are batched)."""
    times: Times = {}

    async def done() -> bool:
        nonlocal times
        times = await receipt_times(tenant, delivery_id)
        return which(times) == names

    await eventually(done)
    return times


# --- the device SDK -------------------------------------------------------------------------


async def test_client_sends_ignored_frame_exactly() -> None:
    frames: list[dict[str, Any]] = []
    frames_done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await read_frame(ws)
        await send_frame(ws, WELCOME)
        for _ in range(3):
            frames.append(await read_frame(ws))
        frames_done.set()
        await ws.wait_closed()

    async with fake_gateway(handler) as url, DeviceClient(url, CREDS) as client:
        await client.ignored("18")
        await client.opened("19")
        await client.ignored("20")
        await asyncio.wait_for(frames_done.wait(), STEP_S)

    assert frames == [
        {"type": "ignored", "id": "18"},
        {"type": "opened", "id": "19"},
        {"type": "ignored", "id": "20"},
    ]


async def test_client_ignored_without_a_session_raises() -> None:
    client = DeviceClient("ws://127.0.0.1:9/v1", CREDS)
    with pytest.raises(GatewayUnavailable, match="not connected to the gateway"):
        await client.ignored("18")


# --- the gateway ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "ignored", "id": {"a": 1}},
        {"type": "ignored", "id": 17},
        {"type": "ignored", "id": "-17"},
        {"type": "ignored", "id": ""},
        {"type": "ignored"},
    ],
    ids=["object", "number", "negative", "empty", "missing"],
)
async def test_gateway_refuses_ignored_with_a_malformed_id(
    tenant: Tenant, frame: dict[str, Any]
) -> None:
    ws = await raw_session(tenant, await tenant.register("android"))
    await ws.send(json.dumps(frame))
    frames, code, reason = await until_closed(ws)
    assert frames == [BAD_ID_ERROR]
    assert (code, reason) == (4004, "bad_frame")


async def test_live_message_sent_acked_then_ignored(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    ws = await raw_session(tenant, creds)
    await push(tenant, {creds.delivery_token: "k-live"}, delivery_type=1)
    message = await recv_frame(ws)
    assert message["msg_key"] == "k-live"
    first = await until_receipts(tenant, message["id"], {"sent"})

    await ws.send(json.dumps({"type": "ack", "ids": [message["id"]]}))
    await ws.send(json.dumps({"type": "ignored", "id": message["id"]}))
    await ping_pong(ws)
    times = await until_receipts(tenant, message["id"], {"sent", "acked", "ignored"})
    assert times["sent"] == first["sent"]
    assert times["sent"] is not None and times["acked"] is not None
    assert times["ignored"] is not None
    assert times["sent"] <= times["acked"] <= times["ignored"]

    # A second ignored keeps the first time; the session goes on (no error, no close).
    await ws.send(json.dumps({"type": "ignored", "id": message["id"]}))
    await ping_pong(ws)
    await asyncio.sleep(0.2)  # longer than a status-writer flush (50 ms)
    assert await receipt_times(tenant, message["id"]) == times
    await ws.close()


async def test_pending_message_sent_once_on_connect_keeps_its_first_sent_time(
    tenant: Tenant,
) -> None:
    creds = await tenant.register("android")
    await push(tenant, {creds.delivery_token: "k-pending"}, delivery_type=1)

    ws = await raw_session(tenant, creds)
    message = await recv_frame(ws)
    assert message["msg_key"] == "k-pending"
    first = await until_receipts(tenant, message["id"], {"sent"})
    await ws.close()  # not acked: it is sent again on the next connect

    ws = await raw_session(tenant, creds)
    again = await recv_frame(ws)
    assert again["id"] == message["id"]
    await ping_pong(ws)
    await asyncio.sleep(0.2)
    assert await receipt_times(tenant, message["id"]) == first
    await ws.close()


async def test_ignored_of_another_devices_delivery_changes_nothing(tenant: Tenant) -> None:
    owner, stranger = await tenant.register("android"), await tenant.register("android")
    await push(tenant, {owner.delivery_token: "k-owner"}, delivery_type=1)
    ws = await raw_session(tenant, owner)
    message = await recv_frame(ws)
    await until_receipts(tenant, message["id"], {"sent"})

    other = await raw_session(tenant, stranger)
    await other.send(json.dumps({"type": "ignored", "id": message["id"]}))
    await other.send(json.dumps({"type": "opened", "id": message["id"]}))
    await ping_pong(other)
    await asyncio.sleep(0.2)
    assert which(await receipt_times(tenant, message["id"])) == {"sent"}
    await other.close()
    await ws.close()


async def test_client_ignored_reaches_the_store(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    async with tenant.device(creds) as device:
        await push(tenant, {creds.delivery_token: "k-sdk"}, delivery_type=1)
        message = await asyncio.wait_for(anext(aiter(device)), 10)
        await device.ignored(message.id)
        await until_receipts(tenant, message.id, {"sent", "acked", "ignored"})
