"""Unit tests of the device SDK (openmps.client) against small doubles of our own servers.

The gateway double is a websockets server on 127.0.0.1 whose per-connection behaviour each
test scripts; the registration double is a one-shot HTTP server built on asyncio streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from openmps.client import (
    DeviceClient,
    DeviceCredentials,
    GatewayClosed,
    GatewayUnavailable,
    PushMessage,
    RegistrationError,
    register,
)

TOKEN = "tok_0123456789abcdefghijklmnopqrstuvwxyzWXYZ"
SECRET = "sec_s3cr3t-value-that-must-never-appear"
CREDS = DeviceCredentials(delivery_token=TOKEN, device_secret=SECRET, platform="android")
HELLO = {"type": "hello", "v": 1, "token": TOKEN, "secret": SECRET}
WELCOME = {"type": "welcome", "v": 1, "heartbeat_s": 20}
STEP_S = 5.0  # upper bound for any single wait in these tests

Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def fake_gateway(handler: Handler) -> AsyncIterator[str]:
    """Run a scripted gateway double on an ephemeral port; yield its ws:// address."""
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = int(server.sockets[0].getsockname()[1])
        yield f"ws://127.0.0.1:{port}/v1"


async def read_frame(ws: ServerConnection) -> dict[str, Any]:
    """Receive one frame, check it is a JSON text frame, and decode it."""
    raw = await asyncio.wait_for(ws.recv(), STEP_S)
    assert isinstance(raw, str)
    frame = json.loads(raw)
    assert isinstance(frame, dict)
    return frame


async def send_frame(ws: ServerConnection, frame: dict[str, Any]) -> None:
    """Send one JSON text frame."""
    await ws.send(json.dumps(frame))


def msg_frame(message_id: str) -> dict[str, Any]:
    """A complete ``msg`` frame for delivery id ``message_id``."""
    return {
        "type": "msg",
        "id": message_id,
        "msg_key": f"key-{message_id}",
        "task_id": "task-7",
        "title": f"title {message_id}",
        "content": "hello there",
        "extras": {"k": "v"},
        "silent": False,
        "push_action": 1,
        "uri": "app://open",
        "expires_at": 1_900_000_000_000,
    }


def expected_message(message_id: str) -> PushMessage:
    """The PushMessage that :func:`msg_frame` should decode to."""
    return PushMessage(
        id=message_id,
        msg_key=f"key-{message_id}",
        task_id="task-7",
        title=f"title {message_id}",
        content="hello there",
        extras={"k": "v"},
        silent=False,
        push_action=1,
        uri="app://open",
        expires_at=1_900_000_000_000,
    )


async def take(client: DeviceClient, count: int) -> list[PushMessage]:
    """Take ``count`` messages from the client's iterator, then close the iterator."""
    messages: list[PushMessage] = []
    iterator = aiter(client)
    try:
        for _ in range(count):
            messages.append(await asyncio.wait_for(anext(iterator), STEP_S))
    finally:
        await iterator.aclose()
    return messages


def test_credentials_repr_hides_secret_and_most_of_token() -> None:
    text = repr(CREDS)
    assert text == (
        "DeviceCredentials(delivery_token='...WXYZ', device_secret='<hidden>', platform='android')"
    )
    assert SECRET not in text
    assert TOKEN[:-4] not in text
    assert str(CREDS) == text


async def test_hello_frame_is_exact_and_welcome_is_consumed() -> None:
    raw_hellos: list[str | bytes] = []

    async def handler(ws: ServerConnection) -> None:
        raw_hellos.append(await ws.recv())
        await send_frame(ws, WELCOME)
        await ws.wait_closed()

    async with fake_gateway(handler) as url:
        client = DeviceClient(url, CREDS)
        assert not client.is_connected
        await client.connect()
        assert client.is_connected
        assert client.heartbeat_s == 20.0
        await client.connect()  # already connected: no second session
        await client.close()
        assert not client.is_connected

    assert len(raw_hellos) == 1
    raw = raw_hellos[0]
    assert isinstance(raw, str)
    assert json.loads(raw) == HELLO


async def test_duplicate_is_yielded_once_and_acked_again() -> None:
    acks: list[dict[str, Any]] = []
    acks_done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        assert await read_frame(ws) == HELLO
        await send_frame(ws, WELCOME)
        await send_frame(ws, msg_frame("A"))
        acks.append(await read_frame(ws))  # on a quiet link an auto-ack goes out at once
        await send_frame(ws, msg_frame("A"))  # again, as if that ack had been lost
        await send_frame(ws, msg_frame("B"))
        acks.append(await read_frame(ws))  # the two that came together: one frame
        acks_done.set()
        await ws.wait_closed()

    async with (
        fake_gateway(handler) as url,
        DeviceClient(url, CREDS, ack_interval_s=0.3) as client,
    ):
        messages = await take(client, 2)
        await asyncio.wait_for(acks_done.wait(), STEP_S)

    assert messages == [expected_message("A"), expected_message("B")]
    assert acks == [
        {"type": "ack", "ids": ["A"]},
        {"type": "ack", "ids": ["A", "B"]},
    ]


@pytest.mark.parametrize("drop", ["abort", "close_1001", "close_4008"])
async def test_reconnects_after_drop_and_gets_pending_message(
    drop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openmps.client")
    hellos: list[dict[str, Any]] = []
    acks: list[dict[str, Any]] = []
    may_drop = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        hellos.append(await read_frame(ws))
        await send_frame(ws, WELCOME)
        if len(hellos) == 1:
            await may_drop.wait()
            if drop == "abort":
                ws.transport.abort()
            elif drop == "close_1001":
                await send_frame(ws, {"type": "error", "code": "shutdown", "message": "bye"})
                await ws.close(1001, "shutdown")
            else:
                await send_frame(ws, {"type": "error", "code": "rate_limited", "message": "slow"})
                await ws.close(4008, "rate_limited")
            return
        await send_frame(ws, msg_frame("pending-1"))
        acks.append(await read_frame(ws))
        await ws.wait_closed()

    async with fake_gateway(handler) as url:
        client = DeviceClient(url, CREDS, backoff_initial_s=0.01, backoff_max_s=0.05)
        await client.connect()
        may_drop.set()
        messages = await take(client, 1)
        assert client.is_connected
        await client.close()

    assert messages == [expected_message("pending-1")]
    assert client.reconnects == 1
    assert hellos == [HELLO, HELLO]
    assert acks == [{"type": "ack", "ids": ["pending-1"]}]
    reconnect_logs = [r.getMessage() for r in caplog.records if "reconnect attempt" in r.message]
    assert len(reconnect_logs) == 1
    assert reconnect_logs[0].startswith("reconnect attempt 1 in ")


async def test_auth_failed_raises_gateway_closed_and_does_not_reconnect() -> None:
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        assert await read_frame(ws) == HELLO
        await send_frame(
            ws, {"type": "error", "code": "auth_failed", "message": "unknown token or wrong secret"}
        )
        await ws.close(4003, "auth_failed")

    async with fake_gateway(handler) as url:
        client = DeviceClient(url, CREDS, backoff_initial_s=0.01, backoff_max_s=0.05)
        with pytest.raises(GatewayClosed) as by_connect:
            await client.connect()
        assert by_connect.value.code == 4003
        assert by_connect.value.reason == "auth_failed"
        assert by_connect.value.message == "unknown token or wrong secret"
        assert not client.is_connected
        assert connections == 1

        with pytest.raises(GatewayClosed) as by_iterator:
            await take(client, 1)
        assert by_iterator.value.code == 4003
        await asyncio.sleep(0.2)  # ample time for a (wrong) reconnect to show up
        assert connections == 2


async def test_a_hello_timeout_is_tried_again() -> None:
    # Regression: a gateway too busy to read the hello within its 10 s closed with 4001
    # hello_timeout, which the SDK took as final: 16,667 simulated devices stopped connecting.
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        assert await read_frame(ws) == HELLO
        if connections == 1:
            await send_frame(
                ws, {"type": "error", "code": "hello_timeout", "message": "no hello within 10 s"}
            )
            await ws.close(4001, "hello_timeout")
            return
        await send_frame(ws, WELCOME)
        await send_frame(ws, msg_frame("1"))
        await ws.wait_closed()

    async with fake_gateway(handler) as url:
        client = DeviceClient(url, CREDS, backoff_initial_s=0.01, backoff_max_s=0.05)
        with pytest.raises(GatewayUnavailable) as info:
            await client.connect()
        assert info.value.code == 4001
        assert [m.id for m in await take(client, 1)] == ["1"]
        assert connections == 2
        await client.close()


async def test_replaced_mid_session_raises_out_of_iterator() -> None:
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await read_frame(ws)
        await send_frame(ws, WELCOME)
        await send_frame(ws, {"type": "error", "code": "replaced", "message": "newer connection"})
        await ws.close(4009, "replaced")

    async with fake_gateway(handler) as url:
        client = DeviceClient(url, CREDS, backoff_initial_s=0.01, backoff_max_s=0.05)
        with pytest.raises(GatewayClosed) as info:
            await take(client, 1)
        assert (info.value.code, info.value.reason) == (4009, "replaced")
        assert str(info.value) == "gateway closed the session with 4009 replaced: newer connection"
        assert not client.is_connected
        await asyncio.sleep(0.2)
        assert connections == 1


async def test_without_reconnect_a_lost_link_raises_gateway_unavailable() -> None:
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await read_frame(ws)
        await send_frame(ws, WELCOME)
        ws.transport.abort()

    async with fake_gateway(handler) as url:
        client = DeviceClient(url, CREDS, reconnect=False)
        with pytest.raises(GatewayUnavailable) as info:
            await take(client, 1)
        assert info.value.code == 1006
        await asyncio.sleep(0.2)
        assert connections == 1


async def test_dedupe_window_is_bounded() -> None:
    async def handler(ws: ServerConnection) -> None:
        await read_frame(ws)
        await send_frame(ws, WELCOME)
        for message_id in ("A", "B", "A", "C", "A"):  # the last A is outside a window of 2
            await send_frame(ws, msg_frame(message_id))
        await ws.wait_closed()

    async with fake_gateway(handler) as url, DeviceClient(url, CREDS, dedupe_window=2) as client:
        messages = await take(client, 4)

    assert [m.id for m in messages] == ["A", "B", "C", "A"]


async def test_ack_splits_at_256_ids_and_opened_frame() -> None:
    frames: list[dict[str, Any]] = []
    frames_done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await read_frame(ws)
        await send_frame(ws, WELCOME)
        for _ in range(4):
            frames.append(await read_frame(ws))
        frames_done.set()
        await ws.wait_closed()

    ids = [str(n) for n in range(600)]
    async with fake_gateway(handler) as url, DeviceClient(url, CREDS) as client:
        await client.ack(*ids)
        await client.ack()  # nothing to ack: no frame
        await client.opened("17")
        await asyncio.wait_for(frames_done.wait(), STEP_S)

    assert frames == [
        {"type": "ack", "ids": ids[0:256]},
        {"type": "ack", "ids": ids[256:512]},
        {"type": "ack", "ids": ids[512:600]},
        {"type": "opened", "id": "17"},
    ]


async def test_revoke_recorded_and_unknown_frames_ignored_without_auto_ack() -> None:
    frames: list[dict[str, Any]] = []
    frames_done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await read_frame(ws)
        await send_frame(ws, WELCOME)
        await send_frame(ws, {"type": "from_the_future", "x": 1})
        await send_frame(ws, {"type": "revoke", "id": "r1"})
        await send_frame(ws, {"type": "pong"})
        await ws.send("not json")
        await send_frame(ws, msg_frame("m1"))
        frames.append(await read_frame(ws))
        frames_done.set()
        await ws.wait_closed()

    async with fake_gateway(handler) as url, DeviceClient(url, CREDS, auto_ack=False) as client:
        messages = await take(client, 1)
        assert client.revoked == {"r1"}
        await client.opened("m1")
        await asyncio.wait_for(frames_done.wait(), STEP_S)

    assert messages == [expected_message("m1")]
    assert frames == [{"type": "opened", "id": "m1"}]  # no ack came before it


async def test_logs_never_show_secret_or_full_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="openmps")
    hellos = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal hellos
        hellos += 1
        await read_frame(ws)
        await send_frame(ws, WELCOME)
        if hellos == 1:
            ws.transport.abort()
            return
        await send_frame(ws, msg_frame("m1"))
        await ws.wait_closed()

    async with fake_gateway(handler) as url:
        client = DeviceClient(url, CREDS, backoff_initial_s=0.01, backoff_max_s=0.05)
        await take(client, 1)
        await client.close()

    assert hellos == 2
    assert caplog.records  # something was logged
    for hidden in (SECRET, TOKEN[:-4]):  # websockets abbreviates frames: check every 8 chars
        fragments = {hidden[i : i + 8] for i in range(len(hidden) - 7)}
        assert [f for f in fragments if f in caplog.text] == []


Seen = list[tuple[str, dict[str, str], bytes]]


@asynccontextmanager
async def one_shot_http(status: str, body: dict[str, Any], seen: Seen) -> AsyncIterator[str]:
    """Serve ``body`` as JSON with ``status`` to each request; record the requests in ``seen``."""
    payload = json.dumps(body).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        request_body = await reader.readexactly(int(headers.get("content-length", "0")))
        seen.append((request_line, headers, request_body))
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = int(server.sockets[0].getsockname()[1])
        yield f"http://127.0.0.1:{port}"


async def test_register_posts_exact_body_and_returns_credentials() -> None:
    seen: Seen = []
    answer = {"delivery_token": TOKEN, "device_secret": SECRET, "platform": "ios"}
    async with one_shot_http("201 Created", answer, seen) as api_url:
        creds = await register(
            api_url + "/", app_id="ONEX570DA89211721", workspace_id="default", platform="ios"
        )

    assert creds == DeviceCredentials(delivery_token=TOKEN, device_secret=SECRET, platform="ios")
    assert len(seen) == 1
    request_line, headers, body = seen[0]
    assert request_line == "POST /v1/devices HTTP/1.1"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "app_id": "ONEX570DA89211721",
        "workspace_id": "default",
        "platform": "ios",
    }


async def test_register_unknown_app_raises_with_status_and_error() -> None:
    seen: Seen = []
    answer = {"error": "unknown_app", "message": "no app ONEX570DA89211721 in default"}
    async with one_shot_http("404 Not Found", answer, seen) as api_url:
        with pytest.raises(RegistrationError) as info:
            await register(api_url, app_id="ONEX570DA89211721", workspace_id="default")

    assert str(info.value) == (
        "device registration failed (HTTP 404): unknown_app: no app ONEX570DA89211721 in default"
    )
    assert "404" in str(info.value)
    assert "unknown_app" in str(info.value)
    assert info.value.http_status == 404
    assert info.value.error == "unknown_app"
    assert json.loads(seen[0][2])["platform"] == "android"


async def test_register_unreachable_api_raises_registration_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(RegistrationError) as info:
        await register(
            "http://127.0.0.1:9",
            app_id="A",
            workspace_id="W",
            transport=httpx.MockTransport(refuse),
        )
    assert info.value.http_status is None
    assert str(info.value) == (
        "device registration failed (no HTTP response): ConnectError: connection refused"
    )


async def test_register_rejects_unknown_platform() -> None:
    with pytest.raises(ValueError, match="platform must be one of"):
        await register("http://127.0.0.1:9", app_id="A", workspace_id="W", platform="web")


async def test_auto_acks_of_a_burst_are_coalesced() -> None:
    # The trial's failure: one ack frame per message made a device with a backlog of 1000
    # exceed the gateway's burst of 200 frames and get closed with 4008 again and again.
    ids = [str(n) for n in range(600)]
    frames: list[dict[str, Any]] = []
    all_acked = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await read_frame(ws)
        await send_frame(ws, WELCOME)
        for message_id in ids:
            await send_frame(ws, msg_frame(message_id))
        acked = 0
        while acked < len(ids):
            frames.append(await read_frame(ws))
            acked += len(frames[-1]["ids"])
        all_acked.set()
        await ws.wait_closed()

    async with (
        fake_gateway(handler) as url,
        DeviceClient(url, CREDS, ack_interval_s=1.0) as client,
    ):
        messages = await take(client, len(ids))
        await asyncio.wait_for(all_acked.wait(), STEP_S)

    assert [m.id for m in messages] == ids
    assert [frame["type"] for frame in frames] == ["ack"] * len(frames)
    assert [message_id for frame in frames for message_id in frame["ids"]] == ids
    assert max(len(frame["ids"]) for frame in frames) <= 256
    # The first id at once, then full frames of 256, then the rest when its time comes.
    assert len(frames) <= 4, [len(frame["ids"]) for frame in frames]


async def test_auto_acks_not_sent_yet_go_out_before_close() -> None:
    frames: list[dict[str, Any]] = []
    close_codes: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await read_frame(ws)
        await send_frame(ws, WELCOME)
        await send_frame(ws, msg_frame("1"))
        frames.append(await read_frame(ws))  # at once: the link was quiet
        await send_frame(ws, msg_frame("2"))
        await send_frame(ws, msg_frame("3"))
        try:
            while True:
                frames.append(await read_frame(ws))
        except ConnectionClosed as closed:
            close_codes.append(closed.rcvd.code if closed.rcvd is not None else None)

    async with fake_gateway(handler) as url:
        # With a 60 s interval the acks of 2 and 3 would wait long: close() must send them.
        async with DeviceClient(url, CREDS, ack_interval_s=60.0) as client:
            messages = await take(client, 3)
        await asyncio.sleep(0.1)  # let the handler see the close

    assert [m.id for m in messages] == ["1", "2", "3"]
    assert frames == [{"type": "ack", "ids": ["1"]}, {"type": "ack", "ids": ["2", "3"]}]
    assert close_codes == [1000]


async def test_ack_interval_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="ack_interval_s"):
        DeviceClient("ws://127.0.0.1:9/v1", CREDS, ack_interval_s=-1.0)


def closed_port_url() -> str:
    """A ws:// address on 127.0.0.1 where nothing listens (a port just released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    return f"ws://127.0.0.1:{port}/v1"


def port_of(url: str) -> int:
    return int(url.removesuffix("/v1").rsplit(":", 1)[1])


async def test_first_connect_fails_over_to_the_next_gateway() -> None:
    # async with used to raise "cannot connect to <first>" at once and never try the second.
    hellos: list[dict[str, Any]] = []

    async def handler(ws: ServerConnection) -> None:
        hellos.append(await read_frame(ws))
        await send_frame(ws, WELCOME)
        await send_frame(ws, msg_frame("m-1"))
        await ws.wait_closed()

    down = closed_port_url()
    async with fake_gateway(handler) as up, DeviceClient([down, up], CREDS) as client:
        assert client.is_connected
        assert await take(client, 1) == [expected_message("m-1")]
    assert hellos == [HELLO]


async def test_first_connect_with_every_gateway_down_names_each() -> None:
    first, second = closed_port_url(), closed_port_url()
    client = DeviceClient([first, second], CREDS)
    with pytest.raises(GatewayUnavailable) as info:
        await client.connect()
    assert str(info.value) == (
        f"no gateway of 2 could be reached: cannot connect to {first}: [Errno 111] Connect "
        f"call failed ('127.0.0.1', {port_of(first)}); cannot connect to {second}: [Errno 111] "
        f"Connect call failed ('127.0.0.1', {port_of(second)})"
    )
    assert info.value.code is None
    assert not client.is_connected


async def test_one_gateway_down_raises_as_before() -> None:
    url = closed_port_url()
    with pytest.raises(GatewayUnavailable) as info:
        async with DeviceClient(url, CREDS):
            pass
    assert str(info.value) == (
        f"cannot connect to {url}: [Errno 111] Connect call failed ('127.0.0.1', {port_of(url)})"
    )
