"""The device gateway: a WebSocket server speaking protocol v1 (docs/gateway-protocol.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any, Protocol, TypeGuard

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from openmps.devices import Devices
from openmps.errors import ConfigError
from openmps.gateway.hub import Hub, Link
from openmps.mps.form import json_leaves
from openmps.push import Pushes
from openmps.statuswriter import StatusWriter

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
HELLO_TIMEOUT_S = 10.0
MAX_ACK_IDS = 256
PATHS = frozenset({"/v1", "/v1/"})  # where the gateway speaks protocol v1; others get 404
WRONG_PATH_TEXT = "openmps device gateway: connect to /v1\n"
BAD_ID_TEXT = "delivery ids (ack ids, opened and ignored ids) are strings of digits"
_DEVICE_FRAMES = frozenset({"ack", "opened", "ignored", "ping"})  # what a device may send


class _Close(Exception):
    """End the session with a close code and an error frame saying why."""

    def __init__(self, code: int, error: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.error = error
        self.message = message


class LinkEvents(Protocol):
    """Told when a device's link opens and closes (scaled out: presence in Redis)."""

    async def opened(self, link: Link) -> None:
        """The device's link is in the hub; its pending deliveries are read next."""
        ...

    async def closed(self, device_pk: int) -> None:
        """The device has no link here any more."""
        ...


class TokenBucket:
    """Frames a device may send: ``rate`` per second sustained, ``burst`` at once."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class Gateway:
    def __init__(
        self,
        *,
        hub: Hub,
        devices: Devices,
        pushes: Pushes,
        writer: StatusWriter,
        heartbeat_interval_s: float,
        heartbeat_timeout_s: float,
        max_frame_bytes: int,
        rate_per_s: float,
        rate_burst: int,
        events: LinkEvents | None = None,
    ) -> None:
        self.hub = hub
        self._devices = devices
        self._pushes = pushes
        self._writer = writer
        self._heartbeat_interval_s = heartbeat_interval_s
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._max_frame_bytes = max_frame_bytes
        self._rate_per_s = rate_per_s
        self._rate_burst = rate_burst
        self._events = events  # None: nobody outside this process needs to know
        self._server: Server | None = None
        self._background: set[asyncio.Task[None]] = set()  # fire-and-forget work, kept alive

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (useful when ``port`` is 0)."""
        try:
            self._server = await self._serve(host, port)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} for the device gateway: "
                f"{os.strerror(exc.errno) if exc.errno else exc}. "
                "Is another process using it? Choose another with --gateway-port / "
                "OPENMPS_GATEWAY_PORT."
            ) from None
        sockets = list(self._server.sockets)
        return int(sockets[0].getsockname()[1])

    async def _serve(self, host: str, port: int) -> Server:
        return await serve(
            self._session,
            host,
            port,
            process_request=_check_path,
            compression=None,  # per-message deflate costs ~64 KiB a link; frames are small
            max_size=self._max_frame_bytes,
            ping_interval=self._heartbeat_interval_s,
            ping_timeout=self._heartbeat_timeout_s,
            # A dead peer never answers the closing handshake either: do not wait long for it.
            close_timeout=self._heartbeat_timeout_s,
            max_queue=4,
            write_limit=16 * 1024,
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close(close_connections=True)
        await self._server.wait_closed()

    def drop(self, link: Link) -> bool:
        """Close ``link`` because its device connected elsewhere (4009 replaced); False when it
        is no longer the device's link here (closed, or replaced by a newer one)."""
        if self.hub.get(link.device_pk) is not link:
            return False
        self.hub.detach(link)
        self._spawn(_close_replaced(link))
        return True

    async def _session(self, ws: ServerConnection) -> None:
        started = time.monotonic()
        link: Link | None = None
        received = 0
        try:
            device_pk = await self._hello(ws)
            link = Link(device_pk, ws, on_sent=self._writer.sent)
            replaced = self.hub.attach(link)
            if replaced is not None:
                self._spawn(_close_replaced(replaced))
            if self._events is not None:
                # Before the pending read: a push stored after that read finds the device here.
                await self._events.opened(link)
            await ws.send(
                json.dumps(
                    {
                        "type": "welcome",
                        "v": PROTOCOL_VERSION,
                        "heartbeat_s": _whole_as_int(self._heartbeat_interval_s),
                    }
                )
            )
            pending = [
                j
                for j in await self._pushes.pending(device_pk)
                if not self._writer.is_acked(j.delivery_id, device_pk)
            ]
            for job in pending:
                await ws.send(job.frame)
                self._writer.sent(job.delivery_id, device_pk)
            await link.go_live(j.delivery_id for j in pending)
            logger.info("device connected: device=%d pending=%d", device_pk, len(pending))
            self._writer.seen(device_pk)
            bucket = TokenBucket(self._rate_per_s, self._rate_burst)
            async for raw in ws:
                received += 1
                if not bucket.take():
                    raise _Close(4008, "rate_limited", "too many frames; slow down")
                await self._handle(ws, device_pk, raw)
        except _Close as close:
            await _send_close(ws, close)
        except ConnectionClosed:
            pass
        finally:
            if link is not None:
                self.hub.detach(link)
                if self._events is not None and self.hub.get(link.device_pk) is None:
                    await self._events.closed(link.device_pk)
                logger.info(
                    "device disconnected: device=%d frames=%d seconds=%.1f",
                    link.device_pk,
                    received,
                    time.monotonic() - started,
                )

    async def _hello(self, ws: ServerConnection) -> int:
        try:
            raw = await asyncio.wait_for(ws.recv(), HELLO_TIMEOUT_S)
        except TimeoutError:
            raise _Close(4001, "hello_timeout", "no hello within 10 s") from None
        frame = _parse(raw, 4001, "bad_hello")
        if frame is None or frame.get("type") != "hello":
            raise _Close(4001, "bad_hello", "the first frame must be a hello")
        version = frame.get("v")
        if not isinstance(version, int) or isinstance(version, bool):
            raise _Close(4001, "bad_hello", "hello needs v: the protocol version, an integer")
        if version != PROTOCOL_VERSION:
            raise _Close(4002, "bad_version", f"protocol version {PROTOCOL_VERSION} only")
        token, secret = frame.get("token"), frame.get("secret")
        if not isinstance(token, str) or not isinstance(secret, str):
            raise _Close(4001, "bad_hello", "hello needs string token and secret")
        device_pk = await self._devices.authenticate(token, secret)
        if device_pk is None:
            raise _Close(4003, "auth_failed", "unknown delivery token or wrong secret")
        return device_pk

    async def _handle(self, ws: ServerConnection, device_pk: int, raw: str | bytes) -> None:
        frame = _parse(raw, 4004, "bad_frame")
        kind = frame.get("type") if frame is not None else None
        if frame is None or kind not in _DEVICE_FRAMES:
            raise _Close(
                4004, "bad_frame", "frames are JSON objects of type ack, opened, ignored or ping"
            )
        if kind == "ping":
            await ws.send('{"type":"pong"}')
        elif kind == "ack":
            ids = frame.get("ids")
            if not isinstance(ids, list) or len(ids) > MAX_ACK_IDS:
                raise _Close(4004, "bad_frame", f"ack needs ids: a list of at most {MAX_ACK_IDS}")
            if not all(_is_id(value) for value in ids):
                raise _Close(4004, "bad_frame", BAD_ID_TEXT)
            # An ack counts as one frame for the rate limit, however many ids it carries.
            for delivery_id in ids:
                parsed = _delivery_id(delivery_id)
                if parsed is not None:
                    self._writer.ack(parsed, device_pk)
        else:  # a receipt: "opened" or "ignored", one delivery id each
            value = frame.get("id")
            if not _is_id(value):
                raise _Close(4004, "bad_frame", BAD_ID_TEXT)
            parsed = _delivery_id(value)
            if parsed is None:
                return
            if kind == "opened":
                self._writer.opened(parsed, device_pk)
            else:
                self._writer.ignored(parsed, device_pk)


def _check_path(connection: ServerConnection, request: Request) -> Response | None:
    """Refuse the handshake with 404 unless it asks for /v1 (a query string is ignored)."""
    if request.path.split("?", 1)[0] in PATHS:
        return None
    return connection.respond(HTTPStatus.NOT_FOUND, WRONG_PATH_TEXT)


def _whole_as_int(value: float) -> float:
    """``20.0`` as ``20``, so JSON shows whole seconds as an integer; other values unchanged."""
    return int(value) if float(value).is_integer() else value


def _parse(raw: str | bytes, code: int, error: str) -> dict[str, Any] | None:
    """Decode a frame to a JSON object, None if it is not one; binary frames end the session.

    JSON nested too deeply for the decoder, or holding a lone surrogate (``"\\ud800"``, text
    that cannot be stored or logged), ends it with ``code`` and ``error`` (4001 ``bad_hello``
    for the first frame, else 4004 ``bad_frame``).
    """
    if isinstance(raw, bytes):
        raise _Close(1003, "binary_frame", "binary frames are not supported; send JSON text")
    try:
        frame = json.loads(raw)
        json.dumps(frame, ensure_ascii=False).encode()  # fails on a lone surrogate anywhere
        if any(isinstance(leaf, str) and "\x00" in leaf for _, leaf, _ in json_leaves(frame)):
            raise _Close(code, error, "the frame holds a NUL character (\\u0000)")
    except RecursionError:
        raise _Close(code, error, "the frame is nested too deeply") from None
    except UnicodeEncodeError:
        raise _Close(
            code,
            error,
            "the frame is not valid Unicode: it holds a lone surrogate (a \\uD800 to \\uDFFF "
            "escape that is not half of a surrogate pair)",
        ) from None
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None


def _is_id(value: Any) -> TypeGuard[str]:
    """A well-formed delivery id: a non-empty string of ASCII digits."""
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _delivery_id(value: str) -> int | None:
    """A well-formed id as a number; None when too long to be any delivery's id (ignored)."""
    return int(value) if len(value) < 19 else None


CLOSE_GRACE_S = 1.0  # how long a refused device gets to answer our close frame


async def _send_close(ws: ServerConnection, close: _Close) -> None:
    """Say why, close, and drop the link if the device does not answer the close at once.

    A device refused for flooding has frames queued that nobody reads any more, so it may never
    see our close frame in time to answer it; holding its socket for the whole close timeout
    would hand a flood a cheap way to keep connections open.
    """
    try:
        await ws.send(json.dumps({"type": "error", "code": close.error, "message": close.message}))
        await asyncio.wait_for(ws.close(close.code, close.error), CLOSE_GRACE_S)
    except (ConnectionClosed, TimeoutError):
        pass
    finally:
        ws.transport.abort()


async def _close_replaced(link: Link) -> None:
    ws = link.sender
    if isinstance(ws, ServerConnection):
        await _send_close(ws, _Close(4009, "replaced", "another connection of this device"))
