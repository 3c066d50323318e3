"""Durability across restarts: an accepted push survives SIGKILL, and acks that were only in the
status writer's memory are written when the server stops gracefully (SIGTERM). Also acks that
wait in the writer's memory: a forged one must not mask or hide the owner's delivery.

This module restarts its server (same data dir and ports) and changes its settings between
starts; every test leaves it running with the default settings.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from websockets.asyncio.client import ClientConnection

from tests.conftest import Server, Tenant, eventually
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

# The status writer then writes only when flush_max acks wait or the server stops.
NO_TIMED_FLUSH = {"OPENMPS_STATUS_FLUSH_INTERVAL_S": "3600"}


@asynccontextmanager
async def settings(server: Server, env: dict[str, str]) -> AsyncIterator[None]:
    """Restart the server with ``env``; on the way out make sure it runs with the defaults.

    Stops and starts run off the event loop, so sockets of this test can still answer.
    """
    await asyncio.to_thread(server.stop)
    server.env = env
    try:
        await asyncio.to_thread(server.start)
        yield
    finally:
        server.env = {}
        if server.process is not None:
            await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)


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
    async with settings(server, NO_TIMED_FLUSH):
        ws = await raw_session(tenant, creds)
        task_id = await push(tenant, {token: "k-flush"}, delivery_type=1)
        frame = await recv_frame(ws)
        assert (frame["type"], frame["msg_key"]) == ("msg", "k-flush")
        await ack(ws, frame["id"])
        # Handled by the gateway, held by the writer, not written yet.
        assert await task_rows(tenant, task_id) == [
            row(token, "k-flush", token, 0, "DeviceNotOnlineOrNoResponse", final=False)
        ]

        await stop_gracefully(server)
        _, code, _ = await until_closed(ws)
        assert code == 1001  # the gateway closed the link: it went through Runtime.stop()

    assert await task_rows(tenant, task_id) == [
        row(token, "k-flush", token, 2, "Acked", final=True)
    ]


async def test_foreign_ack_does_not_mask_the_owners_ack(server: Server, tenant: Tenant) -> None:
    """Another device acks the victim's delivery id, then the victim acks it before the batch
    is written: the victim's ack must still be written."""
    victim, other = await tenant.register("android"), await tenant.register("android")
    v_token, o_token = victim.delivery_token, other.delivery_token
    # A batch is written when it holds 2 acks, and only then.
    async with settings(server, {**NO_TIMED_FLUSH, "OPENMPS_STATUS_FLUSH_MAX": "2"}):
        v_ws = await raw_session(tenant, victim)
        o_ws = await raw_session(tenant, other)
        try:
            v_task = await push(tenant, {v_token: "k-victim"}, delivery_type=1)
            o_task = await push(tenant, {o_token: "k-other"}, delivery_type=1)
            v_id, o_id = (await recv_frame(v_ws))["id"], (await recv_frame(o_ws))["id"]
            await ack(o_ws, v_id)  # forged
            await ack(v_ws, v_id)  # genuine: with the forged one, a batch of 2
            await ack(o_ws, o_id)  # would complete a batch if the genuine ack had been lost

            async def some_batch_written() -> bool:
                rows = await task_rows(tenant, v_task) + await task_rows(tenant, o_task)
                return any(r["status_code"] == 2 for r in rows)

            await eventually(some_batch_written)
            assert await task_rows(tenant, v_task) == [
                row(v_token, "k-victim", v_token, 2, "Acked", final=True)
            ]
        finally:
            await v_ws.close()
            await o_ws.close()


async def test_foreign_ack_does_not_hide_a_pending_message(server: Server, tenant: Tenant) -> None:
    """A forged ack waiting in the writer must not make the gateway skip the owner's pending
    message when the owner reconnects."""
    victim, other = await tenant.register("android"), await tenant.register("android")
    token = victim.delivery_token
    async with settings(server, NO_TIMED_FLUSH):
        task_id = await push(tenant, {token: "k-hidden"}, delivery_type=1)
        v_ws = await raw_session(tenant, victim)
        frame = await recv_frame(v_ws)  # received, not acked
        await v_ws.close()
        o_ws = await raw_session(tenant, other)
        await ack(o_ws, frame["id"])  # forged, waits in the writer

        v_ws = await raw_session(tenant, victim)
        try:
            again = await recv_frame(v_ws, timeout_s=2.0)  # pending frames follow welcome
            assert (again["type"], again["id"], again["msg_key"]) == (
                "msg",
                frame["id"],
                "k-hidden",
            )
        finally:
            await v_ws.close()
            await o_ws.close()
    assert await task_rows(tenant, task_id) == [
        row(token, "k-hidden", token, 0, "DeviceNotOnlineOrNoResponse", final=False)
    ]


SERVE = [sys.executable, "-m", "openmps", "serve"]


def test_sigterm_right_after_the_ready_line_stops_gracefully(tmp_path: Path) -> None:
    # Regression: the stop handlers were installed after the ready line was printed, so a
    # SIGTERM sent as soon as it appeared (a supervisor, a test) killed the process (-15)
    # without writing waiting status changes or closing the store.
    for attempt in range(3):
        data = tmp_path / f"data-{attempt}"
        log = tmp_path / f"server-{attempt}.log"
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [*SERVE, "--data-dir", str(data), "--port", "0", "--gateway-port", "0"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("openmps ready:"):
                    process.send_signal(signal.SIGTERM)
                    break
            code = process.wait(timeout=30)
            process.stdout.close()
        assert code == 0, f"attempt {attempt}: exit {code}; {log.read_text()[-2000:]}"
        assert "stopped: 0 status changes written" in log.read_text()
