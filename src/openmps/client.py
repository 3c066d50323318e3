"""Device SDK for the openmps gateway (protocol v1, see docs/gateway-protocol.md).

A device registers once over HTTP, keeps the credentials it gets back (the secret is shown only
once), then holds a WebSocket session open and iterates over its messages::

    import asyncio

    from openmps.client import DeviceClient, register


    async def main() -> None:
        creds = await register(
            "http://127.0.0.1:8080", app_id="ONEX570DA89211721", workspace_id="default"
        )
        async with DeviceClient("ws://127.0.0.1:8081/v1", creds) as client:
            async for message in client:
                print(message.title, message.content)


    asyncio.run(main())

The iterator yields each message once (the gateway may deliver one more than once), acks it
when ``auto_ack`` is on, and reconnects with exponential backoff and full jitter when the link
is lost. Auto-acks are coalesced: the ids of messages that arrive together go out in as few
``ack`` frames as possible (at most 256 ids each), so a device coming back to a large backlog
stays well inside the gateway's frame rate limit. Closes that mean "do not come back" (bad
credentials, replaced by another connection, a protocol violation) are raised as
:class:`GatewayClosed`.

Neither the device secret nor the full delivery token is ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import random
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from openmps.errors import OpenMPSError

__all__ = [
    "MAX_ACK_IDS",
    "PROTOCOL_VERSION",
    "DeviceClient",
    "DeviceCredentials",
    "GatewayClosed",
    "GatewayUnavailable",
    "PushMessage",
    "RegistrationError",
    "register",
]

logger = logging.getLogger(__name__)

PROTOCOL_VERSION: Final = 1
"""The gateway protocol version this SDK speaks."""

MAX_ACK_IDS: Final = 256
"""Most delivery ids the gateway accepts in one ``ack`` frame."""

PLATFORMS: Final = frozenset({"android", "ios"})
"""Values accepted for ``platform``."""

PERMANENT_CLOSE_CODES: Final = frozenset({1003, 1009, 4001, 4002, 4003, 4004, 4009})
"""Close codes after which reconnecting cannot help (see the protocol's close code table)."""

_ABNORMAL_CLOSURE: Final = 1006


def _redact(token: str) -> str:
    """Return a form of ``token`` that is safe to log: its last 4 characters only."""
    return "..." + token[-4:] if len(token) > 4 else "..."


class RegistrationError(OpenMPSError):
    """``POST /v1/devices`` failed: refused by the API, a malformed answer, or no answer."""

    def __init__(self, http_status: int | None, error: str | None, message: str) -> None:
        status = f"HTTP {http_status}" if http_status is not None else "no HTTP response"
        text = f"{error}: {message}" if error else message
        super().__init__(f"device registration failed ({status}): {text}")
        self.http_status = http_status  # the HTTP status, None when no response arrived
        self.error = error  # the server's machine-readable error, e.g. "unknown_app"
        self.message = message  # the server's human-readable explanation


class GatewayClosed(OpenMPSError):
    """The gateway closed the session for good; reconnecting with the same state cannot help.

    ``code`` is the WebSocket close code (4003 auth_failed, 4002 bad_version, 4009 replaced,
    4001 bad_hello, 4004 bad_frame, ...); ``reason`` is the gateway's ``error.code`` when it
    sent one, else the close reason.
    """

    def __init__(self, code: int, reason: str, message: str = "") -> None:
        detail = f": {message}" if message else ""
        super().__init__(f"gateway closed the session with {code} {reason}{detail}")
        self.code = code  # WebSocket close code
        self.reason = reason  # error.code from the gateway's error frame, else the close reason
        self.message = message  # error.message from the gateway's error frame, if any


class GatewayUnavailable(OpenMPSError):
    """The gateway could not be reached or the link was lost; trying again later may work.

    Raised by :meth:`DeviceClient.connect`, by :meth:`DeviceClient.ack`,
    :meth:`DeviceClient.opened` and :meth:`DeviceClient.ignored` when there is no open
    session, and out of the iterator when ``reconnect`` is off. ``code`` is the close code when
    the gateway sent one.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code  # WebSocket close code, None when the link broke without one


@dataclass(frozen=True, repr=False)
class DeviceCredentials:
    """The identity a device got from registration; store it, the secret is shown only once."""

    delivery_token: str
    device_secret: str
    platform: str

    def __repr__(self) -> str:
        """Show the platform and the token's last 4 characters, never the secret."""
        return (
            f"DeviceCredentials(delivery_token={_redact(self.delivery_token)!r}, "
            f"device_secret='<hidden>', platform={self.platform!r})"
        )


@dataclass(frozen=True)
class PushMessage:
    """One message delivered to this device (a ``msg`` frame)."""

    id: str
    msg_key: str
    task_id: str
    title: str
    content: str
    extras: dict[str, str]
    silent: bool
    push_action: int
    uri: str | None
    expires_at: int

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> PushMessage:
        """Build a message from a decoded ``msg`` frame; raises ValueError if it is malformed."""
        try:
            extras_raw = frame.get("extras") or {}
            if not isinstance(extras_raw, dict):
                raise ValueError("extras is not an object")
            uri = frame.get("uri")
            return cls(
                id=_require_str(frame, "id"),
                msg_key=str(frame.get("msg_key", "")),
                task_id=str(frame.get("task_id", "")),
                title=str(frame.get("title", "")),
                content=str(frame.get("content", "")),
                extras={str(k): str(v) for k, v in extras_raw.items()},
                silent=bool(frame.get("silent", False)),
                push_action=int(frame.get("push_action", 0)),
                uri=None if uri is None else str(uri),
                expires_at=int(frame.get("expires_at", 0)),
            )
        except (TypeError, KeyError) as exc:
            raise ValueError(str(exc)) from exc


def _require_str(frame: dict[str, Any], key: str) -> str:
    """Return ``frame[key]`` if it is a non-empty string, else raise ValueError."""
    value = frame.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} is missing or not a string")
    return value


async def register(
    api_url: str,
    *,
    app_id: str,
    workspace_id: str,
    platform: str = "android",
    timeout_s: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> DeviceCredentials:
    """Register a new device with the API at ``api_url`` and return its credentials.

    ``transport`` replaces httpx's network transport (for tests). Raises
    :class:`RegistrationError` when the API refuses (the message carries the HTTP status and
    the server's error) or cannot be reached, and ValueError for an unknown ``platform``.
    """
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {sorted(PLATFORMS)}, not {platform!r}")
    url = api_url.rstrip("/") + "/v1/devices"
    body = {"app_id": app_id, "workspace_id": workspace_id, "platform": platform}
    try:
        async with httpx.AsyncClient(timeout=timeout_s, transport=transport) as http:
            response = await http.post(url, json=body)
    except httpx.HTTPError as exc:
        raise RegistrationError(None, None, f"{type(exc).__name__}: {exc}") from exc
    payload = _json_or_none(response)
    if not response.is_success:
        error, message = _error_text(payload, response.text)
        raise RegistrationError(response.status_code, error, message)
    if not isinstance(payload, dict):
        raise RegistrationError(
            response.status_code, "bad_response", "the body is not a JSON object"
        )
    try:
        credentials = DeviceCredentials(
            delivery_token=_require_str(payload, "delivery_token"),
            device_secret=_require_str(payload, "device_secret"),
            platform=str(payload.get("platform", platform)),
        )
    except ValueError as exc:
        raise RegistrationError(response.status_code, "bad_response", str(exc)) from None
    logger.info(
        "registered %s device %s", credentials.platform, _redact(credentials.delivery_token)
    )
    return credentials


def _json_or_none(response: httpx.Response) -> Any:
    """Decode a response body as JSON, or return None if it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def _error_text(payload: Any, raw: str) -> tuple[str | None, str]:
    """Pull (error, message) out of an error body: ours, FastAPI's ``detail``, or plain text."""
    if isinstance(payload, dict):
        error = payload.get("error")
        message = payload.get("message")
        if message is None and "detail" in payload:
            message = json.dumps(payload["detail"])
        return (
            None if error is None else str(error),
            "" if message is None else str(message),
        )
    return None, raw[:200]


class _BoundedIdSet:
    """A set of ids that forgets the oldest once it holds more than ``limit``."""

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)  # largest number of ids remembered
        self._order: deque[str] = deque()  # ids, oldest first, for eviction
        self._members: set[str] = set()  # the same ids, for O(1) lookup

    def add(self, item: str) -> bool:
        """Remember ``item``; return True if it was not already remembered."""
        if item in self._members:
            return False
        self._members.add(item)
        self._order.append(item)
        if len(self._order) > self._limit:
            self._members.discard(self._order.popleft())
        return True

    def __contains__(self, item: object) -> bool:
        return item in self._members

    def snapshot(self) -> set[str]:
        """Return a copy of the remembered ids."""
        return set(self._members)


class _QuietFrameLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger for websockets with DEBUG off, so frames (hello holds the secret) are not logged."""

    def isEnabledFor(self, level: int) -> bool:
        """Report DEBUG as off whatever the configuration; other levels as configured."""
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


def _encode(frame: dict[str, Any]) -> str:
    """Serialize a frame compactly (the gateway limits device frames to 4096 bytes)."""
    return json.dumps(frame, separators=(",", ":"))


def _chunks(ids: Iterable[str], size: int) -> Iterable[list[str]]:
    """Split ``ids`` into lists of at most ``size``."""
    batch: list[str] = []
    for item in ids:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class DeviceClient:
    """One device's session with the gateway.

    Iterate over the client (from a single task) to receive messages; call :meth:`ack`,
    :meth:`opened` and :meth:`ignored` from anywhere. Use it as an async context manager, or
    call :meth:`connect` and :meth:`close` yourself. Iterating without :meth:`connect` connects
    on first use.
    """

    def __init__(
        self,
        gateway_url: str | Sequence[str],
        credentials: DeviceCredentials,
        *,
        auto_ack: bool = True,
        reconnect: bool = True,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        dedupe_window: int = 10_000,
        open_timeout_s: float = 10.0,
        ack_interval_s: float = 0.05,
    ) -> None:
        """Prepare a client; nothing is sent until :meth:`connect` or iteration.

        ``gateway_url`` is one gateway address or several (a scaled-out deployment's gateway
        nodes): the client uses the first, and moves on to the next, round robin, whenever a
        connection attempt fails. Any gateway node serves any device.

        ``ack_interval_s`` is the least time between two auto-ack frames (except full ones of
        256 ids): ids that arrive meanwhile are gathered into the next frame. After a quiet
        spell an auto-ack goes out at once, together with whatever arrived in the same burst.
        """
        if backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if dedupe_window < 1:
            raise ValueError("dedupe_window must be at least 1")
        if ack_interval_s < 0:
            raise ValueError("ack_interval_s must not be negative")
        urls = [gateway_url] if isinstance(gateway_url, str) else list(gateway_url)
        if not urls:
            raise ValueError("gateway_url needs at least one address")
        self._urls = urls  # ws:// or wss:// addresses of gateways, e.g. ws://host:8081/v1
        self._url = urls[0]  # the one the next connection attempt uses
        self._credentials = credentials  # token and secret sent in hello
        self._auto_ack = auto_ack  # ack each message (and each duplicate), coalesced per burst
        self._reconnect = reconnect  # reconnect on transient loss instead of raising
        self._backoff_initial_s = backoff_initial_s  # ceiling of the first reconnect delay
        self._backoff_max_s = backoff_max_s  # largest ceiling of any reconnect delay
        self._open_timeout_s = open_timeout_s  # limit for TCP + upgrade + hello/welcome
        self._seen = _BoundedIdSet(dedupe_window)  # ids already yielded, for dedupe
        self._revoked = _BoundedIdSet(dedupe_window)  # ids named by revoke frames
        self._ws: ClientConnection | None = None  # the open session, None between sessions
        self._connect_lock = asyncio.Lock()  # one connect at a time (iterator vs. caller)
        self._closing = asyncio.Event()  # set by close(): stop, do not reconnect
        self._connected = asyncio.Event()  # set while a welcomed session is open
        self._server_error: tuple[str, str] | None = None  # (code, message) of the last error frame
        self._heartbeat_s: float | None = None  # server ping period from the last welcome
        self._session_started = 0.0  # loop time of the last welcome, to judge session health
        self._attempt = 0  # reconnect attempts since the last session that outlived backoff_max_s
        self._reconnects = 0  # sessions lost by the iterator and followed by a reconnect
        self._ack_interval_s = ack_interval_s  # least time between two timed auto-ack frames
        self._ack_buffer: dict[str, None] = {}  # auto-acks not sent yet: an ordered set of ids
        self._ack_timer: asyncio.TimerHandle | None = None  # when the buffer is sent next
        self._ack_flusher: asyncio.Task[None] | None = None  # the task sending the buffer now
        self._last_ack_flush = -math.inf  # loop time of the last timed auto-ack send
        self._wire_log = _QuietFrameLogger(logging.getLogger(f"{__name__}.wire"), {})  # no frames

    @property
    def credentials(self) -> DeviceCredentials:
        """The credentials this client authenticates with."""
        return self._credentials

    @property
    def is_connected(self) -> bool:
        """True while a session is open and welcomed."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Wait until a session is open and welcomed (useful after a reconnect)."""
        await self._connected.wait()

    @property
    def heartbeat_s(self) -> float | None:
        """The gateway's ping period from the last ``welcome``, None before the first."""
        return self._heartbeat_s

    @property
    def reconnects(self) -> int:
        """How many times the iterator lost its session to a transient close (e.g. 4008
        rate_limited, 1001, a broken link) and went on to reconnect; 0 while none broke."""
        return self._reconnects

    @property
    def revoked(self) -> set[str]:
        """Ids of messages the app server revoked (from ``revoke`` frames); a copy, bounded."""
        return self._revoked.snapshot()

    async def connect(self) -> None:
        """Open a session: connect, send ``hello``, wait for ``welcome``.

        Does nothing if a session is already open. Raises :class:`GatewayClosed` when the
        gateway refuses for good (e.g. 4003 auth_failed) and :class:`GatewayUnavailable` when it
        cannot be reached, times out, or drops the link for a transient reason.

        With several gateway addresses, an attempt that fails for a transient reason goes on
        to the next address; :class:`GatewayUnavailable` names every failure once each address
        was tried.
        """
        self._closing.clear()
        failures: list[str] = []
        for _ in self._urls:
            url = self._url
            try:
                await self._connect_once()
                return
            except GatewayUnavailable as exc:
                if len(self._urls) == 1 or self._closing.is_set():
                    raise
                failures.append(str(exc) if url in str(exc) else f"{url}: {exc}")
                last = exc
        raise GatewayUnavailable(
            f"no gateway of {len(self._urls)} could be reached: " + "; ".join(failures),
            code=last.code,
        ) from last

    async def _connect_once(self) -> None:
        """Open a session unless one is open or :meth:`close` was called."""
        async with self._connect_lock:
            if self._ws is None and not self._closing.is_set():
                await self._open()

    async def _open(self) -> None:
        """One connection attempt; on success sets ``_ws`` and ``_connected``."""
        self._server_error = None
        url = self._url
        ws: ClientConnection | None = None
        hello = {
            "type": "hello",
            "v": PROTOCOL_VERSION,
            "token": self._credentials.delivery_token,
            "secret": self._credentials.device_secret,
        }
        try:
            async with asyncio.timeout(self._open_timeout_s):
                ws = await ws_connect(
                    url, compression=None, open_timeout=None, logger=self._wire_log
                )
                await ws.send(_encode(hello))
                await self._await_welcome(ws)
        except BaseException as exc:
            if ws is not None:
                ws.transport.abort()
            if isinstance(exc, Exception) and len(self._urls) > 1:
                self._next_url()
            if isinstance(exc, ConnectionClosed):
                raise self._closed_error(exc) from None
            if isinstance(exc, TimeoutError):
                text = f"no welcome from {url} within {self._open_timeout_s} s"
                raise GatewayUnavailable(text) from None
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if isinstance(exc, InvalidStatus) and status is not None and 400 <= status < 500:
                # A wrong URL or path: trying again cannot help.
                raise GatewayClosed(status, "rejected", f"{url} answered HTTP {status}") from None
            if isinstance(exc, OSError | InvalidHandshake):
                raise GatewayUnavailable(f"cannot connect to {url}: {exc}") from exc
            raise
        if self._closing.is_set():  # close() ran while we were connecting
            await ws.close()
            return
        self._ws = ws
        self._session_started = asyncio.get_running_loop().time()
        self._connected.set()
        logger.info("connected to %s as %s", url, _redact(self._credentials.delivery_token))

    def _next_url(self) -> None:
        """Move to the next gateway address, for the next connection attempt."""
        failed = self._url
        self._url = self._urls[(self._urls.index(failed) + 1) % len(self._urls)]
        logger.info("gateway %s failed; next attempt goes to %s", failed, self._url)

    async def _await_welcome(self, ws: ClientConnection) -> None:
        """Read frames until ``welcome``; an ``error`` frame is kept for the close that follows."""
        while True:
            frame = self._decode(await ws.recv())
            if frame is None:
                continue
            kind = frame.get("type")
            if kind == "welcome":
                heartbeat = frame.get("heartbeat_s")
                if isinstance(heartbeat, int | float) and not isinstance(heartbeat, bool):
                    self._heartbeat_s = float(heartbeat)
                return
            if kind == "error":
                self._note_error(frame)
            else:
                logger.debug("ignoring %r frame before welcome", kind)

    def _note_error(self, frame: dict[str, Any]) -> None:
        """Remember an ``error`` frame so the close that follows can be explained."""
        self._server_error = (str(frame.get("code", "")), str(frame.get("message", "")))
        logger.warning("gateway error %s: %s", *self._server_error)

    def _closed_error(self, exc: ConnectionClosed) -> GatewayClosed | GatewayUnavailable:
        """Classify a closed link as permanent (GatewayClosed) or transient."""
        code = exc.rcvd.code if exc.rcvd is not None else _ABNORMAL_CLOSURE
        close_reason = exc.rcvd.reason if exc.rcvd is not None else ""
        error_code, error_message = self._server_error or ("", "")
        reason = error_code or close_reason
        # A hello that reached an overloaded gateway after its 10 s is worth another try; the
        # other 4001s (a malformed hello) are not.
        late_hello = code == 4001 and reason == "hello_timeout"
        if code in PERMANENT_CLOSE_CODES and not late_hello:
            return GatewayClosed(code, reason, error_message)
        text = f"gateway link lost (close code {code}{' ' + reason if reason else ''})"
        return GatewayUnavailable(text, code=code)

    def _drop_session(self, ws: ClientConnection) -> None:
        """Forget ``ws`` as the current session."""
        if self._ws is ws:
            self._ws = None
            self._connected.clear()

    def _next_delay(self) -> float:
        """Count one more attempt and return its delay: full jitter over a doubling ceiling."""
        self._attempt += 1
        ceiling = min(self._backoff_max_s, self._backoff_initial_s * 2 ** (self._attempt - 1))
        return random.uniform(0.0, ceiling)

    async def _sleep_unless_closing(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if :meth:`close` is called meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closing.wait()

    def __aiter__(self) -> AsyncGenerator[PushMessage, None]:
        """Yield each message once, acking and reconnecting as configured.

        Ends when :meth:`close` is called. Raises :class:`GatewayClosed` on a permanent close
        and, with ``reconnect=False``, :class:`GatewayUnavailable` on a lost link.
        """
        return self._iterate()

    async def _iterate(self) -> AsyncGenerator[PushMessage, None]:
        """The generator behind :meth:`__aiter__`."""
        while not self._closing.is_set():
            ws = self._ws
            if ws is None:
                try:
                    await self._connect_once()
                except GatewayUnavailable:
                    if not self._reconnect or self._closing.is_set():
                        raise
                    await self._backoff()
                continue
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                self._drop_session(ws)
                if self._closing.is_set():
                    return
                error = self._closed_error(exc)
                if isinstance(error, GatewayClosed) or not self._reconnect:
                    raise error from None
                logger.info("%s", error)
                self._reconnects += 1
                lasted = asyncio.get_running_loop().time() - self._session_started
                if lasted >= self._backoff_max_s:
                    self._attempt = 0  # that session was healthy: start the backoff afresh
                await self._backoff()
                continue
            message = self._handle(raw)
            if message is not None:
                yield message

    async def _backoff(self) -> None:
        """Wait the next backoff delay, logging the attempt."""
        delay = self._next_delay()
        logger.info("reconnect attempt %d in %.2f s", self._attempt, delay)
        await self._sleep_unless_closing(delay)

    def _handle(self, raw: str | bytes) -> PushMessage | None:
        """Process one frame; return a message to yield, or None."""
        frame = self._decode(raw)
        if frame is None:
            return None
        kind = frame.get("type")
        if kind == "msg":
            try:
                message = PushMessage.from_frame(frame)
            except ValueError as exc:
                logger.warning("dropping a malformed msg frame: %s", exc)
                return None
            is_new = self._seen.add(message.id)
            if self._auto_ack:  # duplicates too: their first ack may not have arrived
                self._queue_ack(message.id)
            if not is_new:
                logger.debug("duplicate message %s", message.id)
                return None
            return message
        if kind == "revoke":
            revoked_id = frame.get("id")
            if isinstance(revoked_id, str):
                self._revoked.add(revoked_id)
        elif kind == "error":
            self._note_error(frame)
        elif kind not in ("pong", "welcome"):
            logger.debug("ignoring unknown frame type %r", kind)
        return None

    def _queue_ack(self, message_id: str) -> None:
        """Buffer an auto-ack; it goes out with the other ids of its burst (see ack_interval_s)."""
        self._ack_buffer[message_id] = None
        self._schedule_acks()

    def _schedule_acks(self) -> None:
        """Arrange for the buffered auto-acks to be sent: at once if a frame is full or the
        last timed send is ``ack_interval_s`` old (on the next turn of the event loop, so the
        rest of the burst joins), else when it will be."""
        if not self._ack_buffer or self._ack_flusher is not None or self._closing.is_set():
            return  # nothing to send, a send under way reschedules when done, close() sends
        loop = asyncio.get_running_loop()
        full = len(self._ack_buffer) >= MAX_ACK_IDS
        if self._ack_timer is not None:
            if not full:
                return
            self._ack_timer.cancel()
        delay = 0.0 if full else self._last_ack_flush + self._ack_interval_s - loop.time()
        self._ack_timer = loop.call_later(max(0.0, delay), self._start_ack_flusher, full)

    def _start_ack_flusher(self, full_only: bool) -> None:
        """Timer callback: send the buffered auto-acks (only whole frames if ``full_only``)."""
        self._ack_timer = None
        self._ack_flusher = asyncio.get_running_loop().create_task(self._flush_acks(full_only))

    def _take_acks(self, count: int) -> list[str]:
        """Remove and return the ``count`` oldest buffered auto-acks."""
        ids = list(itertools.islice(self._ack_buffer, count))
        for message_id in ids:
            del self._ack_buffer[message_id]
        return ids

    async def _flush_acks(self, full_only: bool) -> None:
        """Send the buffered auto-acks; a lost link is fine, the gateway will send those
        messages again on the next connect and they will be acked then.

        ``full_only``: sent early because a frame is full, so send whole frames only; the rest
        waits for its time.
        """
        if full_only:
            ids = self._take_acks(len(self._ack_buffer) // MAX_ACK_IDS * MAX_ACK_IDS)
        else:
            ids = self._take_acks(len(self._ack_buffer))
            self._last_ack_flush = asyncio.get_running_loop().time()
        try:
            await self.ack(*ids)
        except GatewayUnavailable:
            logger.debug("could not ack %d messages: link lost", len(ids))
        finally:
            self._ack_flusher = None
            self._schedule_acks()

    async def _flush_acks_before_close(self) -> None:
        """Send every buffered auto-ack now (close() calls this before closing the link)."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._ack_flusher is not None:
            await asyncio.wait({self._ack_flusher})
        while self._ack_buffer:
            ids = self._take_acks(MAX_ACK_IDS)
            try:
                await self._send({"type": "ack", "ids": ids})
            except GatewayUnavailable:
                logger.debug("could not ack %d messages: link lost", len(ids))
                break
        self._ack_buffer.clear()

    @staticmethod
    def _decode(raw: str | bytes) -> dict[str, Any] | None:
        """Decode a text frame to a JSON object, or log and return None."""
        if isinstance(raw, bytes):
            logger.debug("ignoring a binary frame")
            return None
        try:
            frame = json.loads(raw)
        except ValueError:
            logger.warning("ignoring a frame that is not JSON")
            return None
        if not isinstance(frame, dict):
            logger.warning("ignoring a frame that is not a JSON object")
            return None
        return frame

    async def _send(self, frame: dict[str, Any]) -> None:
        """Send one frame on the open session, or raise GatewayUnavailable."""
        ws = self._ws
        if ws is None:
            raise GatewayUnavailable("not connected to the gateway")
        try:
            await ws.send(_encode(frame))
        except ConnectionClosed as exc:
            raise GatewayUnavailable("gateway link lost while sending") from exc

    async def ack(self, *message_ids: str) -> None:
        """Tell the gateway these messages arrived; sent at once, in frames of at most 256 ids.

        Pass many ids in one call rather than one per call: the gateway limits the frames a
        device may send, and one frame of many ids counts once. Acks are idempotent on the
        server. Raises :class:`GatewayUnavailable` if no session is open (ids not sent will be
        delivered again on the next connect).
        """
        for batch in _chunks(message_ids, MAX_ACK_IDS):
            await self._send({"type": "ack", "ids": batch})

    async def opened(self, message_id: str) -> None:
        """Report that the user opened the notification of ``message_id`` (analytics)."""
        await self._send({"type": "opened", "id": message_id})

    async def ignored(self, message_id: str) -> None:
        """Report that the user dismissed the notification of ``message_id`` without opening
        it (analytics: IgnoreNum)."""
        await self._send({"type": "ignored", "id": message_id})

    async def close(self) -> None:
        """Send the auto-acks not sent yet, close the session and stop the iterator; no
        reconnect follows."""
        self._closing.set()
        await self._flush_acks_before_close()
        ws = self._ws
        if ws is not None:
            self._drop_session(ws)
            await ws.close()

    async def __aenter__(self) -> DeviceClient:
        """Connect (see :meth:`connect`) and return the client."""
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the session."""
        await self.close()
