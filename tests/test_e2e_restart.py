"""Durability across restarts: an accepted push survives SIGKILL, and acks that were only in the
status writer's memory are written when the server stops gracefully (SIGTERM).

This module restarts its server (same data dir and ports) and changes its settings between
starts; every test leaves it running with the default settings.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.asyncio.client import ClientConnection

from tests.conftest import Server, Tenant
from tests.test_e2e_lifecycle import (
    next_message,
    ping_pong,
    push,
    raw_session,
    recv_frame,
    row,
    rows_become,
    until_closed,
)
from tests.test_e2e_push import task_rows

# Acks are then written only when the server stops (or 2000 wait): nothing flushes by time.
NO_TIMED_FLUSH = {"OPENMPS_STATUS_FLUSH_INTERVAL_S": "3600"}


@contextmanager
def settings(server: Server, env: dict[str, str]) -> Iterator[None]:
    """Restart the server with ``env``; on the way out make sure it runs with the defaults."""
    server.stop()
    server.env = env
    try:
        server.start()
        yield
    finally:
        server.env = {}
        if server.process is not None:
            server.stop()
        server.start()


async def stop_gracefully(server: Server) -> int:
    """SIGTERM and wait, off the event loop so our own sockets can answer the close handshake."""
    return await asyncio.to_thread(server.stop, signal.SIGTERM)


async def ack(ws: ClientConnection, *ids: str) -> None:
    """Ack on a raw connection and wait until the gateway has handled the ack."""
    await ws.send(json.dumps({"type": "ack", "ids": list(ids)}))
    await ping_pong(ws)


async def test_offline_push_survives_sigkill(server: Server, tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    task_id = await push(tenant, {token: "k-durable"}, delivery_type=1, title="Durable")
    waiting = [row(token, "k-durable", token, 0, "DeviceNotOnlineOrNoResponse", final=False)]
    assert await task_rows(tenant, task_id) == waiting

    server.kill()
    server.start()

    assert await task_rows(tenant, task_id) == waiting
    async with tenant.device(creds) as device:
        message = await next_message(device)
    assert (message.msg_key, message.title, message.content, message.task_id) == (
        "k-durable",
        "Durable",
        "Hi there!",
        task_id,
    )
    await rows_become(tenant, task_id, [row(token, "k-durable", token, 2, "Acked", final=True)])


async def test_ack_written_on_graceful_stop(server: Server, tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    with settings(server, NO_TIMED_FLUSH):
        ws = await raw_session(tenant, creds)
        task_id = await push(tenant, {token: "k-flush"}, delivery_type=1)
        frame = await recv_frame(ws)
        assert (frame["type"], frame["msg_key"]) == ("msg", "k-flush")
        await ack(ws, frame["id"])
        # Handled by the gateway, held by the writer, not written yet.
        assert await task_rows(tenant, task_id) == [
            row(token, "k-flush", token, 0, "DeviceNotOnlineOrNoResponse", final=False)
        ]

        assert await stop_gracefully(server) == 0
        _, code, _ = await until_closed(ws)
        assert code == 1001

    assert await task_rows(tenant, task_id) == [
        row(token, "k-flush", token, 2, "Acked", final=True)
    ]


async def test_foreign_ack_does_not_mask_the_owners_ack(server: Server, tenant: Tenant) -> None:
    """Another device acks the victim's delivery id, then the victim acks it in the same flush
    window: the victim's ack must still be written (acks are keyed by delivery and device)."""
    victim, other = await tenant.register("android"), await tenant.register("android")
    token = victim.delivery_token
    with settings(server, NO_TIMED_FLUSH):
        v_ws = await raw_session(tenant, victim)
        o_ws = await raw_session(tenant, other)
        task_id = await push(tenant, {token: "k-masked"}, delivery_type=1)
        frame = await recv_frame(v_ws)
        await ack(o_ws, frame["id"])  # forged
        await ack(v_ws, frame["id"])  # genuine
        assert await stop_gracefully(server) == 0
        for ws in (v_ws, o_ws):
            await until_closed(ws)

    assert await task_rows(tenant, task_id) == [
        row(token, "k-masked", token, 2, "Acked", final=True)
    ]


async def test_foreign_ack_does_not_hide_a_pending_message(server: Server, tenant: Tenant) -> None:
    """A forged ack waiting in the writer must not make the gateway skip the owner's pending
    message when the owner reconnects."""
    victim, other = await tenant.register("android"), await tenant.register("android")
    with settings(server, NO_TIMED_FLUSH):
        task_id = await push(tenant, {victim.delivery_token: "k-hidden"}, delivery_type=1)
        v_ws = await raw_session(tenant, victim)
        frame = await recv_frame(v_ws)  # received, not acked
        await v_ws.close()
        o_ws = await raw_session(tenant, other)
        await ack(o_ws, frame["id"])  # forged

        v_ws = await raw_session(tenant, victim)
        try:
            again = await recv_frame(v_ws)
            assert (again["type"], again["id"], again["msg_key"]) == (
                "msg",
                frame["id"],
                "k-hidden",
            )
        finally:
            await v_ws.close()
            await o_ws.close()
    token = victim.delivery_token
    assert await task_rows(tenant, task_id) == [
        row(token, "k-hidden", token, 0, "DeviceNotOnlineOrNoResponse", final=False)
    ]
