"""A message's life end to end: binding, platforms, expiry, revocation, acks, ordering, the
device registry actions, and the gateway's refusals (docs/gateway-protocol.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from alibabacloud_mpaas20201028 import models
from sqlalchemy import func, select
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from openmps.client import DeviceClient, DeviceCredentials, GatewayClosed, PushMessage
from openmps.store import Delivery, Device, Message, Store
from tests.conftest import Tenant, eventually, new_tenant
from tests.test_e2e_push import task_rows

STEP_S = 10.0  # upper bound for one expected event
QUIET_S = 1.0  # how long "nothing arrives" is watched; pending messages follow welcome at once


# --- helpers --------------------------------------------------------------------------------


async def push(
    tenant: Tenant,
    targets: dict[str, str],
    *,
    delivery_type: int,
    expired_seconds: int = 300,
    title: str = "Hello",
    content: str = "Hi there!",
) -> str:
    """PushSimple through the SDK; returns the task id."""
    response = await tenant.sdk().push_simple_async(
        models.PushSimpleRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_type=delivery_type,
            expired_seconds=expired_seconds,
            title=title,
            content=content,
            target_msgkey=json.dumps(targets),
        )
    )
    assert response.body.result_code == "OK", response.body.push_result.result_msg
    task_id: str = response.body.push_result.data
    return task_id


async def bind(tenant: Tenant, creds: DeviceCredentials, user_id: str) -> None:
    response = await tenant.sdk().push_bind_async(
        models.PushBindRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_token=creds.delivery_token,
            os_type=1 if creds.platform == "android" else 2,
            user_id=user_id,
        )
    )
    assert response.body.result_code == "OK"


async def revoke(tenant: Tenant, msg_key: str, target: str) -> Any:
    response = await tenant.sdk().revoke_push_message_async(
        models.RevokePushMessageRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            message_id=msg_key,
            target_id=target,
        )
    )
    return response.body


def row(
    target: str,
    msg_key: str,
    device: str | None,
    code: int,
    name: str,
    *,
    final: bool,
    detail: str | None = None,
) -> dict[str, object]:
    """A status row as GET /v1/tasks/{id} shows it (own channel, common status table)."""
    return {
        "target": target,
        "msg_key": msg_key,
        "device": device,
        "channel": "own",
        "status_channel": "common",
        "status_code": code,
        "status_name": name,
        "final": final,
        "detail": detail,
    }


async def rows_become(tenant: Tenant, task_id: str, expected: list[dict[str, object]]) -> None:
    async def check() -> bool:
        return await task_rows(tenant, task_id) == expected

    try:
        await eventually(check)
    except AssertionError:
        assert await task_rows(tenant, task_id) == expected  # shows the difference
        raise


async def next_message(device: DeviceClient) -> PushMessage:
    return await asyncio.wait_for(anext(aiter(device)), STEP_S)


@contextlib.asynccontextmanager
async def reading(device: DeviceClient) -> AsyncIterator[list[PushMessage]]:
    """Iterate the device in the background (so revoke frames are read); yields what came."""
    got: list[PushMessage] = []

    async def read() -> None:
        async for message in device:
            got.append(message)

    task = asyncio.create_task(read())
    try:
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def messages_within(device: DeviceClient, seconds: float = QUIET_S) -> list[PushMessage]:
    async with reading(device) as got:
        await asyncio.sleep(seconds)
    return got


def hello(creds: DeviceCredentials, **changes: object) -> str:
    frame = {"type": "hello", "v": 1, "token": creds.delivery_token, "secret": creds.device_secret}
    return json.dumps({**frame, **changes})


async def recv_frame(ws: ClientConnection, timeout_s: float = STEP_S) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout_s)
    assert isinstance(raw, str)
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def raw_session(tenant: Tenant, creds: DeviceCredentials) -> ClientConnection:
    """A raw websockets connection that has said hello and got its welcome."""
    ws = await connect(tenant.server.gateway_url, compression=None)
    await ws.send(hello(creds))
    assert await recv_frame(ws) == {"type": "welcome", "v": 1, "heartbeat_s": 20}
    return ws


async def until_closed(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None, str]:
    """Read frames until the gateway's close frame; returns them with its close code and reason.

    Reads the close frame itself rather than waiting for the TCP close that follows it.
    """
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frames.append(await recv_frame(ws))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "closed without a close frame"
        return frames, closed.rcvd.code, closed.rcvd.reason


async def ping_pong(ws: ClientConnection) -> None:
    """Send a ping frame and wait for its pong: every frame sent before it was handled."""
    await ws.send('{"type":"ping"}')
    while (await recv_frame(ws))["type"] != "pong":
        pass


async def device_pk(tenant: Tenant, token: str) -> int:
    store = await Store.open(tenant.server.db_url, migrate=False)
    try:
        async with store.session() as session:
            pk = await session.scalar(select(Device.id).where(Device.delivery_token == token))
    finally:
        await store.close()
    assert pk is not None
    return int(pk)


# --- users and bindings ---------------------------------------------------------------------


async def test_unbound_user_gets_message_on_bind(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    async with tenant.device(creds) as device:
        task_id = await push(tenant, {"nobody": "k-unbound"}, delivery_type=3)
        await rows_become(
            tenant, task_id, [row("nobody", "k-unbound", None, 1, "NoBindInfo", final=False)]
        )
        assert await messages_within(device, 0.3) == []

        await bind(tenant, creds, "nobody")
        message = await next_message(device)
        assert (message.msg_key, message.title, message.task_id) == ("k-unbound", "Hello", task_id)

    await rows_become(
        tenant,
        task_id,
        [row("nobody", "k-unbound", creds.delivery_token, 2, "Acked", final=True)],
    )


async def test_message_expired_before_bind_is_not_delivered(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    task_id = await push(tenant, {"late-user": "k-late"}, delivery_type=3, expired_seconds=1)
    expired = [row("late-user", "k-late", None, 1, "NoBindInfo", final=True, detail="expired")]
    await rows_become(tenant, task_id, expired)  # the sweeper made it final

    async with tenant.device(creds) as device:
        await bind(tenant, creds, "late-user")
        assert await messages_within(device) == []
    assert await task_rows(tenant, task_id) == expired


async def test_unbind_then_push_finds_no_binding(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    await bind(tenant, creds, "carol")
    response = await tenant.sdk().push_un_bind_async(
        models.PushUnBindRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_token=creds.delivery_token,
            user_id="carol",
        )
    )
    assert response.body.result_code == "OK"
    assert response.body.push_result.success is True

    task_id = await push(tenant, {"carol": "k-carol"}, delivery_type=3)
    assert await task_rows(tenant, task_id) == [
        row("carol", "k-carol", None, 1, "NoBindInfo", final=False)
    ]


# --- device targets ---------------------------------------------------------------------------


async def test_device_targets_of_both_platforms(tenant: Tenant) -> None:
    android, ios = await tenant.register("android"), await tenant.register("ios")
    async with tenant.device(android) as a_dev, tenant.device(ios) as i_dev:
        a_task = await push(tenant, {android.delivery_token: "k-android"}, delivery_type=1)
        assert (await next_message(a_dev)).msg_key == "k-android"
        i_task = await push(tenant, {ios.delivery_token: "k-ios"}, delivery_type=2)
        assert (await next_message(i_dev)).msg_key == "k-ios"

    await rows_become(
        tenant,
        a_task,
        [row(android.delivery_token, "k-android", android.delivery_token, 2, "Acked", final=True)],
    )
    await rows_become(
        tenant,
        i_task,
        [row(ios.delivery_token, "k-ios", ios.delivery_token, 2, "Acked", final=True)],
    )


async def test_device_targets_that_cannot_be_reached(tenant: Tenant) -> None:
    ios = await tenant.register("ios")
    stranger = await (await new_tenant(tenant.server)).register("android")
    task_id = await push(
        tenant,
        {ios.delivery_token: "k-1", "no-such-token": "k-2", stranger.delivery_token: "k-3"},
        delivery_type=1,
    )
    none = 99999999
    assert await task_rows(tenant, task_id) == [
        row(
            ios.delivery_token,
            "k-1",
            None,
            none,
            "NONE",
            final=True,
            detail="platform_mismatch: device is ios",
        ),
        row("no-such-token", "k-2", None, none, "NONE", final=True, detail="unknown_device"),
        row(
            stranger.delivery_token, "k-3", None, none, "NONE", final=True, detail="unknown_device"
        ),
    ]
    async with tenant.device(ios) as device:
        assert await messages_within(device) == []


# --- expiry, revocation -----------------------------------------------------------------------


async def test_offline_device_message_expires(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    task_id = await push(tenant, {token: "k-exp"}, delivery_type=1, expired_seconds=1)
    assert await task_rows(tenant, task_id) == [
        row(token, "k-exp", token, 0, "DeviceNotOnlineOrNoResponse", final=False)
    ]
    expired = [
        row(token, "k-exp", token, 0, "DeviceNotOnlineOrNoResponse", final=True, detail="expired")
    ]
    await rows_become(tenant, task_id, expired)

    async with tenant.device(creds) as device:
        assert await messages_within(device) == []
    assert await task_rows(tenant, task_id) == expired


async def test_revoke_before_connect(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    task_id = await push(tenant, {token: "k-rev"}, delivery_type=1)

    body = await revoke(tenant, "k-rev", token)
    assert (body.result_code, body.push_result.success, body.push_result.data) == ("OK", True, "1")
    revoked = [
        row(token, "k-rev", token, 0, "DeviceNotOnlineOrNoResponse", final=True, detail="revoked")
    ]
    assert await task_rows(tenant, task_id) == revoked

    async with tenant.device(creds) as device:
        assert await messages_within(device) == []
    assert await task_rows(tenant, task_id) == revoked

    # Revoking again is harmless: nothing left to stop.
    again = await revoke(tenant, "k-rev", token)
    assert (again.result_code, again.push_result.data) == ("OK", "0")


async def test_revoke_after_device_received(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    async with tenant.device(creds, auto_ack=False) as device:
        task_id = await push(tenant, {token: "k-shown"}, delivery_type=1)
        message = await next_message(device)
        assert message.msg_key == "k-shown"

        async with reading(device) as later:
            body = await revoke(tenant, "k-shown", token)
            assert (body.result_code, body.push_result.data) == ("OK", "1")

            async def revoked() -> bool:
                return message.id in device.revoked

            await eventually(revoked)
        assert later == []

    assert await task_rows(tenant, task_id) == [
        row(token, "k-shown", token, 0, "DeviceNotOnlineOrNoResponse", final=True, detail="revoked")
    ]
    # Revoked means no redelivery on the next connect either.
    async with tenant.device(creds) as device:
        assert await messages_within(device) == []
        # A late ack still records 2 (docs/decisions.md): the device did receive it; the row
        # keeps saying it was revoked (regression: the ack cleared the detail).
        await device.ack(message.id)
        await rows_become(
            tenant,
            task_id,
            [row(token, "k-shown", token, 2, "Acked", final=True, detail="revoked")],
        )


async def test_revoke_unknown_message(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    await push(tenant, {creds.delivery_token: "k-known"}, delivery_type=1)
    for msg_key, target in (("k-missing", creds.delivery_token), ("k-known", "other-target")):
        body = await revoke(tenant, msg_key, target)
        assert (body.result_code, body.result_message) == ("3028", "INVALID_PARAM")
        assert body.push_result.success is False
        assert body.push_result.result_msg == (
            "no message with that MessageId and TargetId in this app"
        )


# --- acks -----------------------------------------------------------------------------------


async def acked_at(tenant: Tenant, task_id: str) -> list[object]:
    store = await Store.open(tenant.server.db_url, migrate=False)
    try:
        async with store.session() as session:
            return list(
                (
                    await session.scalars(
                        select(Delivery.acked_at)
                        .join(Message, Message.id == Delivery.message_pk)
                        .where(Message.task_pk == int(task_id))
                    )
                ).all()
            )
    finally:
        await store.close()


async def test_duplicate_acks_are_harmless(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    async with tenant.device(creds, auto_ack=False) as device:
        task_id = await push(tenant, {token: "k-dup"}, delivery_type=1)
        message = await next_message(device)
        await device.ack(message.id, message.id)
        await device.ack(message.id)
        acked = [row(token, "k-dup", token, 2, "Acked", final=True)]
        await rows_become(tenant, task_id, acked)
        first_acked_at = await acked_at(tenant, task_id)
        assert first_acked_at[0] is not None

        await device.ack(message.id)
        # The link is still fine: a new message arrives, and its ack is recorded too.
        second = await push(tenant, {token: "k-dup-2"}, delivery_type=1)
        assert (await next_message(device)).msg_key == "k-dup-2"
        await device.ack(message.id)
    assert await task_rows(tenant, task_id) == acked
    assert await acked_at(tenant, task_id) == first_acked_at
    assert await task_rows(tenant, second) == [
        row(token, "k-dup-2", token, 0, "DeviceNotOnlineOrNoResponse", final=False)
    ]


async def test_ack_of_another_devices_delivery_changes_nothing(tenant: Tenant) -> None:
    victim, other = await tenant.register("android"), await tenant.register("android")
    async with tenant.device(victim, auto_ack=False) as device:
        v_task = await push(tenant, {victim.delivery_token: "k-victim"}, delivery_type=1)
        v_message = await next_message(device)

        ws = await raw_session(tenant, other)
        try:
            o_task = await push(tenant, {other.delivery_token: "k-other"}, delivery_type=1)
            o_frame = await recv_frame(ws)
            assert (o_frame["type"], o_frame["msg_key"]) == ("msg", "k-other")
            # One frame: the other device's own delivery and the victim's. Both are handled in
            # the same flush, so once the own one shows as acked the foreign one was processed.
            await ws.send(json.dumps({"type": "ack", "ids": [v_message.id, o_frame["id"]]}))
            await ping_pong(ws)  # not closed: a foreign id is not an error
            await rows_become(
                tenant,
                o_task,
                [
                    row(
                        other.delivery_token,
                        "k-other",
                        other.delivery_token,
                        2,
                        "Acked",
                        final=True,
                    )
                ],
            )
        finally:
            await ws.close()

        unacked = [
            row(
                victim.delivery_token,
                "k-victim",
                victim.delivery_token,
                0,
                "DeviceNotOnlineOrNoResponse",
                final=False,
            )
        ]
        assert await task_rows(tenant, v_task) == unacked

        await device.ack(v_message.id)  # the owner's ack still counts
        await rows_become(
            tenant,
            v_task,
            [row(victim.delivery_token, "k-victim", victim.delivery_token, 2, "Acked", final=True)],
        )


async def test_pending_messages_arrive_in_push_order(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    keys = [f"k-order-{i}" for i in range(5)]
    for i, key in enumerate(keys):
        await push(tenant, {creds.delivery_token: key}, delivery_type=1, title=f"#{i}")
    async with tenant.device(creds) as device:
        got = [await next_message(device) for _ in keys]
    assert [m.msg_key for m in got] == keys
    assert [m.title for m in got] == [f"#{i}" for i in range(5)]


# --- device registry actions ------------------------------------------------------------------


async def query_state(tenant: Tenant, target: str, target_type: int) -> Any:
    response = await tenant.sdk().push_query_device_state_async(
        models.PushQueryDeviceStateRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            target=target,
            target_type=target_type,
        )
    )
    return response.body


async def test_report_and_query_device_state(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    report = await tenant.sdk().push_report_async(
        models.PushReportRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_token=token,
            os_type=1,
            third_channel=2,
            third_channel_device_token="hms-token-0001",
            model="Mate 60",
            app_version="1.2.3",
        )
    )
    assert (report.body.result_code, report.body.push_result.success) == ("OK", True)
    await bind(tenant, creds, "dave")
    pk = await device_pk(tenant, token)

    def expected(statue: str) -> dict[str, str]:
        return {
            "DeliveryToken": token,
            "DeviceId": str(pk),
            "Manufacturer": "Mate 60",
            "Platform": "android",
            "Statue": statue,
            "ThirdToken": "hms-token-0001",
            "UserId": "dave",
        }

    async with tenant.device(creds):
        body = await query_state(tenant, token, 1)
        assert (body.success, body.code, body.message) == (True, "OK", "")
        assert body.data.to_map() == expected("1")
        by_user = await query_state(tenant, "dave", 3)
        assert by_user.data.to_map() == expected("1")

    async def offline() -> bool:
        return bool((await query_state(tenant, token, 1)).data.statue == "0")

    await eventually(offline)
    assert (await query_state(tenant, token, 1)).data.to_map() == expected("0")

    missing = await query_state(tenant, "no-such-token", 1)
    assert (missing.success, missing.code, missing.message) == (
        False,
        "3028",
        "INVALID_PARAM: Target not found: no such device",
    )


# --- gateway protocol errors (raw websockets) --------------------------------------------------


async def test_gateway_wrong_secret(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    async with connect(tenant.server.gateway_url, compression=None) as ws:
        await ws.send(hello(creds, secret="not-the-secret"))
        frames, code, reason = await until_closed(ws)
    assert frames == [
        {
            "type": "error",
            "code": "auth_failed",
            "message": "unknown delivery token or wrong secret",
        }
    ]
    assert (code, reason) == (4003, "auth_failed")


async def test_gateway_bad_version(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    async with connect(tenant.server.gateway_url, compression=None) as ws:
        await ws.send(hello(creds, v=2))
        frames, code, reason = await until_closed(ws)
    assert frames == [
        {"type": "error", "code": "bad_version", "message": "protocol version 1 only"}
    ]
    assert (code, reason) == (4002, "bad_version")


async def test_gateway_first_frame_not_hello(tenant: Tenant) -> None:
    async with connect(tenant.server.gateway_url, compression=None) as ws:
        await ws.send('{"type":"ping"}')
        frames, code, reason = await until_closed(ws)
    assert frames == [
        {"type": "error", "code": "bad_hello", "message": "the first frame must be a hello"}
    ]
    assert (code, reason) == (4001, "bad_hello")


async def test_gateway_non_json_after_hello(tenant: Tenant) -> None:
    ws = await raw_session(tenant, await tenant.register("android"))
    await ws.send("this is not JSON")
    frames, code, reason = await until_closed(ws)
    assert frames == [
        {
            "type": "error",
            "code": "bad_frame",
            "message": "frames are JSON objects of type ack, opened, ignored or ping",
        }
    ]
    assert (code, reason) == (4004, "bad_frame")


DEEP_FRAME = "[" * 2000 + "]" * 2000  # 4000 bytes: under the frame limit, too deep to decode
NOT_UNICODE_TEXT = (
    "the frame is not valid Unicode: it holds a lone surrogate (a \\uD800 to \\uDFFF escape "
    "that is not half of a surrogate pair)"
)


NUL_TEXT = "the frame holds a NUL character (\\u0000)"


def no_handler_failure(tenant: Tenant) -> bool:
    """The server logged no traceback for a connection (it used to, with a 1011 close)."""
    log = (tenant.server.data_dir.parent / "server.log").read_text()
    return "connection handler failed" not in log


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (DEEP_FRAME, "the frame is nested too deeply"),
        ('{"type":"hello","v":1,"token":"\\ud800","secret":"s"}', NOT_UNICODE_TEXT),
        ('{"type":"hello","v":1,"token":"t","secret":"\\udfff"}', NOT_UNICODE_TEXT),
        # Second trial: on PostgreSQL a NUL in the token reached the store and closed 1011.
        ('{"type":"hello","v":1,"token":"a\\u0000b","secret":"s"}', NUL_TEXT),
    ],
    ids=["deep", "token-surrogate", "secret-surrogate", "token-nul"],
)
async def test_gateway_unreadable_first_frame_is_bad_hello(
    tenant: Tenant, frame: str, message: str
) -> None:
    async with connect(tenant.server.gateway_url, compression=None) as ws:
        await ws.send(frame)
        frames, code, reason = await until_closed(ws)
    assert frames == [{"type": "error", "code": "bad_hello", "message": message}]
    assert (code, reason) == (4001, "bad_hello")
    assert no_handler_failure(tenant)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (DEEP_FRAME, "the frame is nested too deeply"),
        ('{"type":"ping","note":"\\udc00"}', NOT_UNICODE_TEXT),
    ],
    ids=["deep", "surrogate"],
)
async def test_gateway_unreadable_frame_after_hello_is_bad_frame(
    tenant: Tenant, frame: str, message: str
) -> None:
    ws = await raw_session(tenant, await tenant.register("android"))
    await ws.send(frame)
    frames, code, reason = await until_closed(ws)
    assert frames == [{"type": "error", "code": "bad_frame", "message": message}]
    assert (code, reason) == (4004, "bad_frame")
    assert no_handler_failure(tenant)


async def test_gateway_frame_too_large(tenant: Tenant) -> None:
    ws = await raw_session(tenant, await tenant.register("android"))
    await ws.send(json.dumps({"type": "ping", "pad": "x" * 4100}))
    frames, code, _ = await until_closed(ws)
    assert (frames, code) == ([], 1009)


async def test_gateway_frame_at_the_limit_is_fine(tenant: Tenant) -> None:
    ws = await raw_session(tenant, await tenant.register("android"))
    try:
        frame = '{"type":"ping","pad":"' + "x" * (4096 - 24) + '"}'
        assert len(frame.encode()) == 4096
        await ws.send(frame)
        assert await recv_frame(ws) == {"type": "pong"}
    finally:
        await ws.close()


async def flood(ws: ClientConnection, frames: int = 300) -> list[dict[str, Any]]:
    """Send ``frames`` pings at once; return what came back up to the gateway's close frame.

    Reads the close frame from the protocol state rather than waiting for the connection to
    end (the test below checks that end separately), then drops the connection.
    """
    with contextlib.suppress(ConnectionClosed):
        for _ in range(frames):
            await ws.send('{"type":"ping"}')
    got: list[dict[str, Any]] = []
    while not got or got[-1]["type"] != "error":
        got.append(await recv_frame(ws))

    async def close_frame_read() -> bool:
        return ws.protocol.close_rcvd is not None

    await eventually(close_frame_read, timeout_s=STEP_S, every_s=0.01)
    return got


async def test_gateway_rate_limit(tenant: Tenant) -> None:
    ws = await raw_session(tenant, await tenant.register("android"))
    try:
        frames = await flood(ws)
        close = ws.protocol.close_rcvd
        assert close is not None
        assert (close.code, close.reason) == (4008, "rate_limited")
    finally:
        ws.transport.abort()
    pongs = frames[:-1]
    assert 200 <= len(pongs) < 300  # the burst, plus what refilled meanwhile
    assert pongs == [{"type": "pong"}] * len(pongs)
    assert frames[-1] == {
        "type": "error",
        "code": "rate_limited",
        "message": "too many frames; slow down",
    }


async def test_gateway_releases_rate_limited_connection_promptly(tenant: Tenant) -> None:
    ws = await raw_session(tenant, await tenant.register("android"))
    try:
        await flood(ws)
        await asyncio.wait_for(ws.wait_closed(), 2.0)
    finally:
        ws.transport.abort()


async def test_gateway_second_connection_replaces_first(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    first = await raw_session(tenant, creds)
    second = await raw_session(tenant, creds)
    try:
        frames, code, reason = await until_closed(first)
        assert frames == [
            {
                "type": "error",
                "code": "replaced",
                "message": "another connection of this device",
            }
        ]
        assert (code, reason) == (4009, "replaced")
        # The newer connection is the device's link now.
        task_id = await push(tenant, {creds.delivery_token: "k-new-link"}, delivery_type=1)
        frame = await recv_frame(second)
        assert (frame["type"], frame["msg_key"], frame["task_id"]) == ("msg", "k-new-link", task_id)
    finally:
        await second.close()


# --- REST: registration and task status -------------------------------------------------------


async def test_register_unknown_app(tenant: Tenant) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{tenant.server.api_url}/v1/devices",
            json={"app_id": "ONEX000000000000", "workspace_id": "default", "platform": "android"},
        )
        wrong_workspace = await http.post(
            f"{tenant.server.api_url}/v1/devices",
            json={"app_id": tenant.app_id, "workspace_id": "other", "platform": "android"},
        )
    unknown = {
        "error": "unknown_app",
        "message": "no app with that app_id and workspace_id; see `openmps app list`",
    }
    assert (response.status_code, response.json()) == (404, unknown)
    assert (wrong_workspace.status_code, wrong_workspace.json()) == (404, unknown)


async def test_register_bad_platform(tenant: Tenant) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{tenant.server.api_url}/v1/devices",
            json={"app_id": tenant.app_id, "workspace_id": "default", "platform": "windows"},
        )
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["input"]) == (["body", "platform"], "windows")


async def test_task_status_auth(tenant: Tenant) -> None:
    task_id = await push(tenant, {"someone": "k-auth"}, delivery_type=3)
    other = await new_tenant(tenant.server)
    url = f"{tenant.server.api_url}/v1/tasks/{task_id}"
    unauthorized = {
        "error": "unauthorized",
        "message": "send HTTP Basic auth: AccessKeyId as user, AccessKeySecret as password",
    }
    async with httpx.AsyncClient() as http:
        anonymous = await http.get(url)
        wrong_secret = await http.get(url, auth=(tenant.creds.access_key_id, "wrong"))
        foreign = await http.get(
            url, auth=(other.creds.access_key_id, other.creds.access_key_secret)
        )
        not_a_number = await http.get(
            f"{tenant.server.api_url}/v1/tasks/abc",
            auth=(tenant.creds.access_key_id, tenant.creds.access_key_secret),
        )
        health = await http.get(f"{tenant.server.api_url}/healthz")
    for response in (anonymous, wrong_secret):
        assert (response.status_code, response.json()) == (401, unauthorized)
        assert response.headers["www-authenticate"] == 'Basic realm="openmps"'
    assert (foreign.status_code, foreign.json()) == (
        404,
        {"error": "unknown_task", "message": f"this app has no task {task_id!r}"},
    )
    assert (not_a_number.status_code, not_a_number.json()["error"]) == (404, "unknown_task")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert await task_rows(tenant, task_id) == [
        row("someone", "k-auth", None, 1, "NoBindInfo", final=False)
    ]


# --- a device coming back to a large backlog ------------------------------------------------


async def acked_deliveries(tenant: Tenant, pk: int) -> int:
    """How many of the device's deliveries have status 2 (Acked)."""
    store = await Store.open(tenant.server.db_url, migrate=False)
    try:
        async with store.session() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.device_pk == pk, Delivery.code == 2)
            )
    finally:
        await store.close()
    return int(count or 0)


async def test_backlog_of_1000_is_acked_without_rate_limit(tenant: Tenant) -> None:
    # The trial's failure: one ack frame per message exceeded the gateway's burst of 200
    # frames, so the device was closed with 4008 rate_limited four times and acking took ~36 s.
    creds = await tenant.register("android")
    token = creds.delivery_token
    keys = [f"k-backlog-{i}" for i in range(1000)]
    bound = asyncio.Semaphore(32)

    async def push_one(key: str) -> str:
        async with bound:
            return await push(tenant, {token: key}, delivery_type=1)

    await asyncio.gather(*(push_one(key) for key in keys))
    pk = await device_pk(tenant, token)

    async with tenant.device(creds) as device:
        got: list[PushMessage] = []

        async def read_all() -> None:
            async for message in device:
                got.append(message)
                if len(got) == len(keys):
                    return

        await asyncio.wait_for(read_all(), 60.0)

        async def all_acked() -> bool:
            return await acked_deliveries(tenant, pk) == len(keys)

        await eventually(all_acked, timeout_s=STEP_S, every_s=0.2)
        assert device.is_connected
        assert device.reconnects == 0  # never closed with 4008 (nor anything else)

    assert sorted(m.msg_key for m in got) == sorted(keys)
    assert len({m.id for m in got}) == len(keys)


# --- gateway strictness: binary frames, hello, path, delivery ids --------------------------------

BINARY_ERROR = {
    "type": "error",
    "code": "binary_frame",
    "message": "binary frames are not supported; send JSON text",
}


async def test_gateway_binary_frame_before_hello(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    async with connect(tenant.server.gateway_url, compression=None) as ws:
        await ws.send(hello(creds).encode())  # a good hello, but as a binary frame
        frames, code, reason = await until_closed(ws)
    assert frames == [BINARY_ERROR]
    assert (code, reason) == (1003, "binary_frame")


async def test_gateway_binary_frame_after_hello(tenant: Tenant) -> None:
    ws = await raw_session(tenant, await tenant.register("android"))
    await ws.send(b'{"type":"ping"}')
    frames, code, reason = await until_closed(ws)
    assert frames == [BINARY_ERROR]
    assert (code, reason) == (1003, "binary_frame")


@pytest.mark.parametrize(
    "version",
    [True, 1.0, "1", None, [1], "missing"],
    ids=["true", "float", "string", "null", "list", "missing"],
)
async def test_gateway_hello_version_must_be_the_integer_1(tenant: Tenant, version: object) -> None:
    creds = await tenant.register("android")
    frame = json.loads(hello(creds, v=version))
    if version == "missing":
        del frame["v"]
    async with connect(tenant.server.gateway_url, compression=None) as ws:
        await ws.send(json.dumps(frame))
        frames, code, reason = await until_closed(ws)
    assert frames == [
        {
            "type": "error",
            "code": "bad_hello",
            "message": "hello needs v: the protocol version, an integer",
        }
    ]
    assert (code, reason) == (4001, "bad_hello")


async def test_gateway_hello_other_integer_version(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    async with connect(tenant.server.gateway_url, compression=None) as ws:
        await ws.send(hello(creds, v=0))
        frames, code, reason = await until_closed(ws)
    assert [f["code"] for f in frames] == ["bad_version"]
    assert (code, reason) == (4002, "bad_version")


async def test_gateway_welcome_heartbeat_is_an_integer(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    async with connect(tenant.server.gateway_url, compression=None) as ws:
        await ws.send(hello(creds))
        raw = await asyncio.wait_for(ws.recv(), STEP_S)
    assert raw == '{"type": "welcome", "v": 1, "heartbeat_s": 20}'


@pytest.mark.parametrize("path", ["/", "/v2", "/v1/extra", "/v10", "/V1"])
async def test_gateway_refuses_other_paths_with_404(tenant: Tenant, path: str) -> None:
    url = f"ws://127.0.0.1:{tenant.server.gateway_port}{path}"
    with pytest.raises(InvalidStatus) as info:
        await connect(url, compression=None)
    response = info.value.response
    assert response.status_code == 404
    assert response.body == b"openmps device gateway: connect to /v1\n"


@pytest.mark.parametrize("path", ["/v1/", "/v1?app=demo"])
async def test_gateway_accepts_v1_with_slash_or_query(tenant: Tenant, path: str) -> None:
    creds = await tenant.register("android")
    url = f"ws://127.0.0.1:{tenant.server.gateway_port}{path}"
    async with connect(url, compression=None) as ws:
        await ws.send(hello(creds))
        assert await recv_frame(ws) == {"type": "welcome", "v": 1, "heartbeat_s": 20}


BAD_ID_ERROR = {
    "type": "error",
    "code": "bad_frame",
    "message": "delivery ids (ack ids, opened and ignored ids) are strings of digits",
}


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "ack", "ids": [1, 2]},
        {"type": "ack", "ids": ["17", "x1"]},
        {"type": "ack", "ids": ["\u00b2"]},  # a digit to str.isdigit, not to int()
        {"type": "ack", "ids": [""]},
        {"type": "ack", "ids": [None]},
        {"type": "opened", "id": {"a": 1}},
        {"type": "opened", "id": 17},
        {"type": "opened", "id": "-17"},
        {"type": "opened"},
    ],
    ids=[
        "ack-numbers",
        "ack-non-digit",
        "ack-superscript",
        "ack-empty",
        "ack-null",
        "opened-object",
        "opened-number",
        "opened-negative",
        "opened-missing",
    ],
)
async def test_gateway_malformed_delivery_ids(tenant: Tenant, frame: dict[str, Any]) -> None:
    ws = await raw_session(tenant, await tenant.register("android"))
    await ws.send(json.dumps(frame))
    frames, code, reason = await until_closed(ws)
    assert frames == [BAD_ID_ERROR]
    assert (code, reason) == (4004, "bad_frame")


async def test_gateway_ack_with_a_malformed_id_acks_nothing(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    task_id = await push(tenant, {token: "k-half-ack"}, delivery_type=1)
    ws = await raw_session(tenant, creds)
    message = await recv_frame(ws)
    assert message["msg_key"] == "k-half-ack"
    await ws.send(json.dumps({"type": "ack", "ids": [message["id"], 5]}))
    frames, code, _ = await until_closed(ws)
    assert (frames, code) == ([BAD_ID_ERROR], 4004)
    await asyncio.sleep(0.2)  # longer than a status-writer flush (50 ms)
    assert await task_rows(tenant, task_id) == [
        row(token, "k-half-ack", token, 0, "DeviceNotOnlineOrNoResponse", final=False)
    ]


async def test_iterating_against_a_wrong_path_fails_instead_of_retrying(tenant: Tenant) -> None:
    # Regression: an iterator started without connect() treated the 404 as temporary and
    # retried for ever.
    creds = await tenant.register("android")
    wrong = DeviceClient(f"ws://127.0.0.1:{tenant.server.gateway_port}/v2", creds)
    with pytest.raises(GatewayClosed) as caught:
        await asyncio.wait_for(anext(aiter(wrong)), 10)
    assert (caught.value.code, caught.value.reason) == (404, "rejected")
    await wrong.close()
