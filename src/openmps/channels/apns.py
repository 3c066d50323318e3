"""Apple Push Notification service: pushes over HTTP/2, Apple's answers as statuses.

Reference: ``shared/reference/vendors-apns-fcm-webpush.md`` section 1 and tables 4.1 / 5.1;
statuses per ``shared/reference/status-codes.md``.

Transport: one HTTP/2 connection (TLS, ALPN ``h2``) per channel, driven with ``h2`` on asyncio
rather than httpx, because the channel must see per stream what APNs did not process (a
GOAWAY's ``last_stream_id``, ``REFUSED_STREAM``) to send exactly those pushes again, and
because this is the hot path: each delivery is one stream and a whole batch is in flight at
once, bounded by the server's ``SETTINGS_MAX_CONCURRENT_STREAMS``. The ``http`` client
``create`` is offered is not used.

Auth: one ES256 provider token (JWT) per key, shared by every request and connection of the
channel and renewed after ``token_refresh_s`` (40 minutes; Apple wants 20 to 60). When APNs
answers ``ExpiredProviderToken``, one new token is minted however many streams said so at
once, and those pushes are sent once more; a second ``ExpiredProviderToken`` is final
(CONFIG, note N1).

Or certificate auth (reference 1.5.2): the app's client certificate (``certificate``, with
its key in the same PEM or in ``certificate_key``) is presented in every TLS handshake and no
``authorization`` header is sent. An app gives one kind or the other: both or neither is a
ConfigError naming the settings. APNs refuses a certificate with 403 ``BadCertificate`` /
``BadCertificateEnvironment``, as an answer or as a GOAWAY right after the handshake (both
map to 2014 / 2013, CONFIG); a TLS alert about our certificate during the handshake (the
server could not verify it) is taken as ``BadCertificate`` too, not as 2025, since connecting
again cannot help.

Codes the contract marks PROPOSAL (2012, 2015-2022, 2026-2034) are not in
``openmps.statuses`` yet: until they are added there, those answers are recorded as
(common, 99999999) NONE with the raw answer kept, and still steer the dispatcher through the
``Next`` given in ``_VERDICTS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httpx
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hpack import Encoder, HeaderTuple, NeverIndexedHeaderTuple
from hyperframe.frame import Frame, GoAwayFrame

from openmps import statuses
from openmps.channels._common import parse_retry_after
from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome, VendorChannel
from openmps.devices import mask
from openmps.errors import ConfigError
from openmps.statuses import Channel, Status

__all__ = [
    "COLLAPSE_ID_LIMIT_B",
    "PAYLOAD_LIMIT_B",
    "PRODUCTION_HOST",
    "SANDBOX_HOST",
    "VOIP_PAYLOAD_LIMIT_B",
    "APNsChannel",
]

logger = logging.getLogger(__name__)
# hpack logs every header it encodes or decodes at DEBUG, bearer tokens and device tokens
# included; keep it at INFO whatever the root level is.
logging.getLogger("hpack").setLevel(logging.INFO)

PRODUCTION_HOST = "api.push.apple.com"
SANDBOX_HOST = "api.sandbox.push.apple.com"
PAYLOAD_LIMIT_B = 4096  # serialized body, every push type but VoIP (reference 1.4)
VOIP_PAYLOAD_LIMIT_B = 5120
COLLAPSE_ID_LIMIT_B = 64

# apns-push-type -> what the bundle id needs appended to make the topic (reference 1.3).
# "mdm" is missing on purpose: its topic comes from an MDM certificate, not a bundle id.
_TOPIC_SUFFIX: dict[str, str] = {
    "alert": "",
    "background": "",
    "voip": ".voip",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity",
    "location": ".location-query",
    "pushtotalk": ".voip-ptt",
    "widgets": ".push-type.widgets",
    "controls": ".push-type.controls",
}

# (HTTP status, reason) -> (apns code of the contract, what the dispatcher does next).
# Apple's table: reference 1.6; codes: status-codes.md table 1 (seed) and table 2 (PROPOSAL).
_VERDICTS: dict[tuple[int, str], tuple[int, Next]] = {
    # The body we sent was empty: our bug; this message cannot go as built.
    (400, "PayloadEmpty"): (2001, Next.MESSAGE),
    # Body over 4096 B (5120 B VoIP); normally caught here before sending.
    (413, "PayloadTooLarge"): (2002, Next.MESSAGE),
    # apns-topic malformed: the topic is the app's `topic` setting.
    (400, "BadTopic"): (2003, Next.CONFIG),
    # Our key / team may not push to this topic: fix the app's settings.
    (400, "TopicDisallowed"): (2004, Next.CONFIG),
    # apns-id not a lowercase 8-4-4-4-12 UUID (we send none; APNs makes one).
    (400, "BadMessageId"): (2005, Next.MESSAGE),
    # apns-expiration not UNIX seconds.
    (400, "BadExpirationDate"): (2006, Next.MESSAGE),
    # apns-priority not 10/5/1, or 10 on a background push (seed: "Invalid weight").
    (400, "BadPriority"): (2007, Next.MESSAGE),
    # Nothing after /3/device/: the delivery carries no device token.
    (400, "MissingDeviceToken"): (2008, Next.MESSAGE),
    # Malformed token, or a token of the other environment (N4): drop it.
    (400, "BadDeviceToken"): (2009, Next.DROP_TOKEN),
    # The token belongs to another topic (app, VoIP, Live Activity) (N4): drop it.
    (400, "DeviceTokenNotForTopic"): (2010, Next.DROP_TOKEN),
    # The token is no longer active for the topic; body carries `timestamp` (ms).
    (410, "Unregistered"): (2011, Next.DROP_TOKEN),
    # A header sent twice: our bug. PROPOSAL 2012.
    (400, "DuplicateHeaders"): (2012, Next.MESSAGE),
    # Client certificate of the other environment (N5); certificate auth only.
    (403, "BadCertificateEnvironment"): (2013, Next.CONFIG),
    # Client certificate rejected (N5); certificate auth only.
    (403, "BadCertificate"): (2014, Next.CONFIG),
    # Action not allowed for our credentials. PROPOSAL 2015.
    (403, "Forbidden"): (2015, Next.CONFIG),
    # :path is not /3/device/...: our bug. PROPOSAL 2016.
    (404, "BadPath"): (2016, Next.MESSAGE),
    # :method not POST: our bug. PROPOSAL 2017.
    (405, "MethodNotAllowed"): (2017, Next.MESSAGE),
    # Too many pushes in a row to this device token: later, this token only. PROPOSAL 2018.
    (429, "TooManyRequests"): (2018, Next.RETRY),
    # The connection idled out (usually a GOAWAY): at once on a new connection. PROPOSAL 2019.
    (400, "IdleTimeout"): (2019, Next.RETRY),
    # This APNs server is shutting down: at once on a new connection. PROPOSAL 2020.
    (503, "Shutdown"): (2020, Next.RETRY),
    # APNs internal error: with backoff. PROPOSAL 2021.
    (500, "InternalServerError"): (2021, Next.RETRY),
    # APNs unavailable: with backoff. PROPOSAL 2022.
    (503, "ServiceUnavailable"): (2022, Next.RETRY),
    # No apns-topic although required: the topic comes from the app's settings.
    (400, "MissingTopic"): (2023, Next.CONFIG),
    # apns-collapse-id over 64 B (we never send one that long). PROPOSAL 2026.
    (400, "BadCollapseId"): (2026, Next.MESSAGE),
    # apns-push-type not one Apple knows: the `push_type` setting. PROPOSAL 2027.
    (400, "InvalidPushType"): (2027, Next.MESSAGE),
    # JWT iat over an hour old; reaches here only if it survives one new token. PROPOSAL 2028.
    (403, "ExpiredProviderToken"): (2028, Next.CONFIG),
    # JWT unreadable, bad signature, unknown kid or wrong iss. PROPOSAL 2029.
    (403, "InvalidProviderToken"): (2029, Next.CONFIG),
    # No authorization header (and no client certificate). PROPOSAL 2030.
    (403, "MissingProviderToken"): (2030, Next.CONFIG),
    # Token changed more than once per 20 minutes on a connection: wait. PROPOSAL 2031.
    (429, "TooManyProviderTokenUpdates"): (2031, Next.RETRY),
    # Key unrelated to the one first used on this connection: new connection. PROPOSAL 2032.
    (403, "UnrelatedKeyIdInToken"): (2032, Next.RETRY),
    # The key belongs to the other environment. PROPOSAL 2033.
    (403, "BadEnvironmentKeyIdInToken"): (2033, Next.CONFIG),
    # The device token itself expired. PROPOSAL 2034.
    (410, "ExpiredToken"): (2034, Next.DROP_TOKEN),
}

# Answers after which this connection takes no new streams (the next push opens another).
_RECONNECT_REASONS = frozenset({"IdleTimeout", "Shutdown", "UnrelatedKeyIdInToken"})

# OpenSSL's names for the TLS alerts a server sends when it refuses the client certificate.
_CLIENT_CERT_ALERTS = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_ACCESS_DENIED",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    }
)


def _status(code: int) -> Status:
    found = statuses.find(Channel.APNS, code)
    return statuses.NONE if found is None else found


_ANSWERS: dict[tuple[int, str], tuple[Status, Next]] = {
    key: (_status(code), next_) for key, (code, next_) in _VERDICTS.items()
}
_BY_REASON: dict[str, tuple[Status, Next]] = {r: v for (_, r), v in _ANSWERS.items()}
_PAYLOAD_TOO_LARGE = statuses.get(Channel.APNS, 2002)
_BAD_DEVICE_TOKEN = statuses.get(Channel.APNS, 2009)
_CONN_CLOSED = statuses.get(Channel.APNS, 2024)
_CONN_UNAVAILABLE = statuses.get(Channel.APNS, 2025)

_HEX = re.compile(r"[0-9A-Fa-f]*")
_RAW_BODY_LIMIT = 200  # characters of an unreadable error body kept in Outcome.raw
_NOT_SENT_TRIES = 3  # times a push may find its connection retired before its stream opened
_SWEEP_MIN_STREAMS = 256  # h2's stream table is swept once it holds more than this


class _NoConnection(Exception):
    """No connection could be opened (seed 2025), or it ended during the handshake."""

    def __init__(self, raw: str, reason: str | None = None) -> None:
        super().__init__(raw)
        self.raw = raw
        self.reason = reason  # a GOAWAY's reason, when that is how it ended


class _NoAnswer(Exception):
    """A stream ended without an answer.

    ``sent`` False: it never left us, so sending it elsewhere costs nothing. ``resend``: the
    server said it did not process it (GOAWAY above ``last_stream_id``, ``REFUSED_STREAM``).
    """

    def __init__(
        self, raw: str, *, sent: bool = True, resend: bool = False, reason: str | None = None
    ) -> None:
        super().__init__(raw)
        self.raw = raw
        self.sent = sent
        self.resend = resend
        self.reason = reason


@dataclass(slots=True)
class _Answer:
    status: int
    body: bytes
    retry_after: bytes | None


@dataclass(slots=True)
class _Pending:
    """One stream waiting for its answer."""

    future: asyncio.Future[_Answer]
    status: int = 0
    body: bytearray = field(default_factory=bytearray)
    retry_after: bytes | None = None
    timer: asyncio.TimerHandle | None = None


class _PlainEncoder(Encoder):
    """HPACK without Huffman coding: Huffman is optional in HPACK and, in pure Python, costs
    about three times the rest of encoding a request's headers."""

    def encode(
        self,
        headers: Iterable[
            HeaderTuple
            | tuple[bytes | str, bytes | str]
            | tuple[bytes | str, bytes | str, bool | None]
        ]
        | dict[bytes | str, bytes | str],
        huffman: bool = False,
    ) -> bytes:
        return super().encode(headers, huffman=False)


class _H2Client(h2.connection.H2Connection):
    """h2's connection with two changes, both for a whole batch in flight on one connection.

    A GOAWAY lets the streams it covers finish: h2 moves to CLOSED on any GOAWAY and then
    refuses further frames, so the answers to streams at or below ``last_stream_id``, which
    the server may still send (RFC 9113, 6.8), would be lost and those pushes sent twice. The
    channel opens no new stream after a GOAWAY.

    Counting open streams is O(1): h2 walks its whole stream table for every new stream
    (O(n^2) for n in flight). The count comes from the streams the channel tracks; h2's walk,
    which also forgets closed streams, runs only once the table has doubled since the last.
    """

    def __init__(self, config: h2.config.H2Configuration, tracked: dict[int, Any]) -> None:
        super().__init__(config=config)
        self._tracked = tracked  # the channel's open streams, by id
        self._sweep_above = _SWEEP_MIN_STREAMS

    @property
    def open_outbound_streams(self) -> int:
        if len(self.streams) > self._sweep_above:
            _ = super().open_outbound_streams
            self._sweep_above = max(_SWEEP_MIN_STREAMS, 2 * len(self.streams))
        return len(self._tracked)

    def _receive_goaway_frame(
        self, frame: GoAwayFrame
    ) -> tuple[list[Frame], list[h2.events.Event]]:
        frames, events = super()._receive_goaway_frame(frame)
        self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return frames, events


class _Link(asyncio.Protocol):
    """One HTTP/2 connection to APNs: streams, their answers, and how many may be open."""

    def __init__(self, *, response_timeout_s: float, client_certificate: bool = False) -> None:
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,  # we build every header ourselves
            normalize_outbound_headers=False,
        )
        self._streams: dict[int, _Pending] = {}  # open streams by id
        self._h2 = _H2Client(config, self._streams)
        self._h2.encoder = _PlainEncoder()
        self._loop = asyncio.get_running_loop()
        self._timeout_s = response_timeout_s  # per stream, from opening to the answer
        self._client_certificate = client_certificate  # our TLS handshakes present one
        self._heard = False  # any byte received from the server after the TLS handshake
        self._transport: asyncio.Transport | None = None
        self._open = 0  # streams counted against the server's limit
        self._slot_waiters: deque[asyncio.Future[bool]] = deque()  # True: a slot is yours
        self._window_waiters: list[asyncio.Future[None]] = []  # sends blocked on flow control
        self._flush_scheduled = False
        self.ready: asyncio.Future[None] = self._loop.create_future()  # server SETTINGS seen
        self.ready.add_done_callback(_retrieve)
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.retired = False  # takes no new streams
        self.goaway: _NoConnection | None = None  # set by the server's GOAWAY
        self.lost = False  # the transport is gone

    @property
    def usable(self) -> bool:
        return not self.retired and not self.lost

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have the same methods.
        self._transport = cast(asyncio.Transport, transport)
        self._h2.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.ENABLE_PUSH: 0}
        )
        self._h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        self._heard = True
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            logger.warning("apns: HTTP/2 protocol error from the server: %s", exc)
            self._flush()
            self.close()
            return
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                assert event.stream_id is not None
                self._h2.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
                pending = self._streams.get(event.stream_id)
                if pending is not None and event.data:
                    pending.body += event.data
            elif isinstance(event, h2.events.ResponseReceived):
                pending = self._streams.get(event.stream_id or 0)
                if pending is not None:
                    for name, value in event.headers or ():
                        if name == b":status":
                            pending.status = int(value)
                        elif name == b"retry-after":
                            pending.retry_after = bytes(value)
            elif isinstance(event, h2.events.StreamEnded):
                pending = self._streams.pop(event.stream_id or 0, None)
                if pending is not None:
                    self._release()
                    answer = _Answer(pending.status, bytes(pending.body), pending.retry_after)
                    _settle(pending, answer)
            elif isinstance(event, h2.events.StreamReset):
                self._on_reset(event)
            elif isinstance(event, h2.events.WindowUpdated):
                self._wake_senders()
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                if not self.ready.done():
                    self.ready.set_result(None)
                self._grant()
                self._wake_senders()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._on_goaway(event)
        self._flush()
        if self.retired and not self._streams:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.retired = True
        raw = "connection closed before an answer" + (f" ({exc})" if exc else "")
        for pending in self._streams.values():
            _settle(pending, _NoAnswer(raw))
        self._streams.clear()
        self._open = 0
        self._refuse_waiters()
        self._wake_senders()
        if not self.ready.done():
            refused = None
            if self._client_certificate and not self._heard:
                refused = _refused_certificate(exc)
            self.ready.set_exception(
                refused or _NoConnection("connection closed during the HTTP/2 setup")
            )
        if not self.closed.done():
            self.closed.set_result(None)

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        pending = self._streams.pop(event.stream_id or 0, None)
        if pending is None:
            return
        self._release()
        code = event.error_code
        name = code.name if isinstance(code, h2.errors.ErrorCodes) else str(code)
        refused = code == h2.errors.ErrorCodes.REFUSED_STREAM
        _settle(pending, _NoAnswer(f"RST_STREAM {name}", resend=refused))

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.retired = True
        last = event.last_stream_id or 0
        reason = _goaway_reason(event.additional_data)
        code = event.error_code
        name = code.name if isinstance(code, h2.errors.ErrorCodes) else str(code)
        raw = f"GOAWAY {reason or name} (last stream {last})"
        unprocessed = [sid for sid in self._streams if sid > last]
        logger.info(
            "apns: server sent GOAWAY (%s, last stream %d); %d pushes go to a new connection",
            reason or name,
            last,
            len(unprocessed),
        )
        for stream_id in unprocessed:
            pending = self._streams.pop(stream_id)
            self._open -= 1
            _settle(pending, _NoAnswer(raw, resend=True, reason=reason))
        self._refuse_waiters()
        self.goaway = _NoConnection(raw, reason)
        if not self.ready.done():
            self.ready.set_exception(self.goaway)

    # -- sending -----------------------------------------------------------------------------

    async def request(self, headers: list[tuple[bytes, bytes]], body: bytes) -> _Answer:
        """Send one request on a new stream and wait for its answer."""
        await self._take_slot()
        h2conn = self._h2
        try:
            stream_id = h2conn.get_next_available_stream_id()
            h2conn.send_headers(stream_id, headers)
        except h2.exceptions.ProtocolError as exc:
            self._release()
            raise _NoAnswer(f"stream not opened: {exc}", sent=False) from exc
        pending = _Pending(self._loop.create_future())
        self._streams[stream_id] = pending
        pending.timer = self._loop.call_later(self._timeout_s, self._expire, stream_id)
        try:
            while not pending.future.done() and h2conn.local_flow_control_window(stream_id) < len(
                body
            ):
                await self._window_changed()
            if pending.future.done():
                # Answered (or given up) before the body left: close our side too, so that
                # h2's view of open streams matches the count it gets from us.
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    h2conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            else:
                h2conn.send_data(stream_id, body, end_stream=True)
            self._schedule_flush()
            return await pending.future
        except asyncio.CancelledError:
            self._drop(stream_id, None)
            raise
        finally:
            pending.timer.cancel()

    async def _take_slot(self) -> None:
        if not self.usable:
            raise _NoAnswer("connection retired before the push was sent", sent=False)
        if self._open < self._limit() and not self._slot_waiters:
            self._open += 1
            return
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._slot_waiters.append(waiter)
        try:
            granted = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._release()
            raise
        if not granted:
            raise _NoAnswer("connection retired before the push was sent", sent=False)

    def _limit(self) -> int:
        return self._h2.remote_settings.max_concurrent_streams

    def _release(self) -> None:
        self._open -= 1
        self._grant()

    def _grant(self) -> None:
        while self._slot_waiters and self._open < self._limit():
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(True)

    def _refuse_waiters(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)

    async def _window_changed(self) -> None:
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._window_waiters.append(waiter)
        await waiter

    def _wake_senders(self) -> None:
        waiters, self._window_waiters = self._window_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _expire(self, stream_id: int) -> None:
        self._drop(stream_id, _NoAnswer(f"no answer within {self._timeout_s:g} s"))

    def _drop(self, stream_id: int, error: _NoAnswer | None) -> None:
        """Give up on a stream: reset it and free its slot."""
        pending = self._streams.pop(stream_id, None)
        if pending is None:
            return
        self._release()
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self._schedule_flush()
        if error is not None:
            _settle(pending, error)

    def _schedule_flush(self) -> None:
        # Streams opened in one pass of the event loop leave in one write.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self.lost:
            self._transport.write(data)

    def retire(self) -> None:
        """Take no new streams; close once the open ones have their answers."""
        self.retired = True
        self._refuse_waiters()
        if not self._streams:
            self.close()

    def close(self) -> None:
        self.retired = True
        self._refuse_waiters()
        if self._transport is None or self.lost:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection()
        self._flush()
        self._transport.close()


def _settle(pending: _Pending, outcome: _Answer | Exception) -> None:
    if pending.future.done():
        return
    if isinstance(outcome, Exception):
        pending.future.set_exception(outcome)
    else:
        pending.future.set_result(outcome)


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Marks an exception as seen, so that a future nobody awaited does not log it at exit.
    if not future.cancelled():
        future.exception()


def _goaway_reason(data: bytes | None) -> str | None:
    if not data:
        return None
    try:
        reason = json.loads(data).get("reason")
    except (ValueError, AttributeError):
        return None
    return reason if isinstance(reason, str) else None


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A push as it goes on the wire, less the provider token."""

    item: Outbound
    head: list[tuple[bytes, bytes]]
    tail: list[tuple[bytes, bytes]]
    body: bytes

    def headers(self, bearer: bytes) -> list[tuple[bytes, bytes]]:
        """With ``bearer`` empty (certificate auth), no authorization header."""
        if not bearer:
            return [*self.head, *self.tail]
        # Never indexed (HPACK), as Apple asks for :path and authorization.
        return [*self.head, NeverIndexedHeaderTuple(b"authorization", bearer), *self.tail]


class APNsChannel(VendorChannel):
    """APNs for one app, with token (JWT) or certificate auth. Build it with :meth:`create`.

    Settings (``ChannelConfig.values``): token auth ``team_id``, ``key_id``, ``private_key``
    (the .p8 PEM; secret), or certificate auth ``certificate`` (the client certificate PEM,
    its key included or in ``certificate_key``; both secret); ``topic`` (the bundle id),
    ``environment`` (``production``, the default, or ``sandbox``), ``push_type`` (default
    ``alert``), ``ca_pem`` (extra CA to trust, for fakes). ``ChannelConfig.base_url``
    (``https://host:port``) overrides the environment's host.
    """

    name = "apns"
    max_batch = 1000
    secret_keys = frozenset({"private_key", "certificate", "certificate_key"})

    def __init__(
        self,
        *,
        team_id: str = "",
        key_id: str = "",
        private_key: ec.EllipticCurvePrivateKey | None = None,
        topic: str,
        push_type: str = "alert",
        host: str = PRODUCTION_HOST,
        port: int = 443,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout_s: float = 10.0,
        response_timeout_s: float = 30.0,
        token_refresh_s: float = 2400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``connect_timeout_s`` covers TCP, TLS and the first HTTP/2 SETTINGS;
        ``response_timeout_s`` one stream from opening to its answer; ``token_refresh_s``
        the provider token's age at which a new one is minted (Apple: 1200 to 3600 s);
        ``clock`` gives UNIX seconds (the tokens' ``iat``). ``private_key`` None is
        certificate auth: ``ssl_context`` must then carry the client certificate."""
        if not 1200.0 <= token_refresh_s <= 3600.0:
            raise ConfigError(
                f"apns: token_refresh_s must be between 1200 and 3600 (Apple refuses "
                f"faster updates and older tokens), got {token_refresh_s:g}"
            )
        self._team_id = team_id
        self._key_id = key_id
        self._key = private_key  # None: certificate auth, no provider token
        self._topic = topic.encode()  # the bundle id: background pushes
        self._push_type = push_type.encode()
        self._push_topic = (topic + _TOPIC_SUFFIX[push_type]).encode()  # visible pushes
        self._payload_limit_b = VOIP_PAYLOAD_LIMIT_B if push_type == "voip" else PAYLOAD_LIMIT_B
        self._host = host
        self._port = port
        self._authority = (host if port == 443 else f"{_bracket(host)}:{port}").encode()
        self._ssl = ssl_context if ssl_context is not None else _ssl_context(None)
        self._connect_timeout_s = connect_timeout_s
        self._response_timeout_s = response_timeout_s
        self._token_refresh_s = token_refresh_s
        self._clock = clock
        self._bearer: bytes | None = None  # b"bearer <JWT>"
        self._bearer_iat = 0.0  # when it was minted, by ``clock``
        self._generation = 0  # bumps with every new token
        self._auth_lock = asyncio.Lock()  # one renewal at a time
        self._link: _Link | None = None  # the connection new streams go to
        self._links: set[_Link] = set()  # every connection not closed yet
        self._connecting: asyncio.Task[_Link] | None = None  # shared by concurrent pushes
        self.tokens_minted = 0  # provider tokens made since start

    def __repr__(self) -> str:
        return (
            f"APNsChannel(team_id={self._team_id!r}, key_id={self._key_id!r}, "
            f"topic={self._topic.decode()!r}, endpoint={self.endpoint!r})"
        )

    @property
    def endpoint(self) -> str:
        return f"https://{self._authority.decode()}"

    @classmethod
    def create(
        cls,
        config: ChannelConfig,
        http: httpx.AsyncClient | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> APNsChannel:
        token_auth = bool(config.values.get("private_key"))
        certificate = config.values.get("certificate") or None
        if token_auth and certificate is not None:
            raise ConfigError(
                "apns: give either token auth ('team_id', 'key_id', 'private_key') or "
                "certificate auth ('certificate'), not both"
            )
        if not token_auth and certificate is None:
            raise ConfigError(
                "apns: missing setting 'private_key' (token auth, with 'team_id' and "
                "'key_id') or 'certificate' (certificate auth)"
            )
        team_id = key_id = ""
        private_key: ec.EllipticCurvePrivateKey | None = None
        if token_auth:
            team_id = str(config.require("team_id")).strip()
            key_id = str(config.require("key_id")).strip()
            private_key = _load_key(config.require("private_key"))
        topic = str(config.require("topic")).strip()
        environment = str(config.values.get("environment") or "production")
        if environment not in ("production", "sandbox"):
            raise ConfigError(
                f"apns: setting 'environment' must be 'production' or 'sandbox', "
                f"got {environment!r}"
            )
        push_type = str(config.values.get("push_type") or "alert")
        if push_type not in _TOPIC_SUFFIX:
            raise ConfigError(
                f"apns: setting 'push_type' must be one of {', '.join(_TOPIC_SUFFIX)}, "
                f"got {push_type!r}"
            )
        ca_pem = config.values.get("ca_pem") or None
        host, port = PRODUCTION_HOST if environment == "production" else SANDBOX_HOST, 443
        if config.base_url:
            host, port = _parse_base_url(config.base_url)
        return cls(
            team_id=team_id,
            key_id=key_id,
            private_key=private_key,
            topic=topic,
            push_type=push_type,
            host=host,
            port=port,
            ssl_context=_ssl_context(
                ca_pem, certificate, config.values.get("certificate_key") or None
            ),
            clock=clock,
        )

    # -- sending -----------------------------------------------------------------------------

    async def send(self, batch: Sequence[Outbound]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        ready: list[_Prepared] = []
        for item in batch:
            prepared = self._prepare(item)
            if isinstance(prepared, Outcome):
                outcomes.append(prepared)
            else:
                ready.append(prepared)
        if ready:
            outcomes.extend(await asyncio.gather(*(self._deliver(p) for p in ready)))
        return outcomes

    def _prepare(self, item: Outbound) -> _Prepared | Outcome:
        """The push as bytes, or the outcome that makes sending it pointless."""
        if not _HEX.fullmatch(item.token):
            # APNs would answer BadDeviceToken; the token could also break the :path.
            raw = "device token is not hexadecimal; not sent"
            return Outcome(item.delivery_id, _BAD_DEVICE_TOKEN, Next.DROP_TOKEN, raw=raw)
        if "aps" in item.extras:
            raw = "extras key 'aps' is reserved for APNs; not sent"
            return Outcome(item.delivery_id, statuses.NONE, Next.MESSAGE, raw=raw)

        aps: dict[str, Any]
        if item.silent:
            aps = {"content-available": 1}
            push_type, topic, priority = b"background", self._topic, b"5"
        else:
            alert = {"body": item.content}
            if item.title:
                alert = {"title": item.title, "body": item.content}
            aps = {"alert": alert}
            push_type, topic, priority = self._push_type, self._push_topic, b"10"
        payload = {"aps": aps, **item.extras}
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        limit = PAYLOAD_LIMIT_B if item.silent else self._payload_limit_b
        if len(body) > limit:
            raw = f"payload is {len(body)} B, over APNs' {limit} B; not sent"
            return Outcome(item.delivery_id, _PAYLOAD_TOO_LARGE, Next.MESSAGE, raw=raw)

        head: list[tuple[bytes, bytes]] = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            NeverIndexedHeaderTuple(b":path", b"/3/device/" + item.token.encode()),
            (b":authority", self._authority),
        ]
        tail: list[tuple[bytes, bytes]] = [
            (b"apns-topic", topic),
            (b"apns-push-type", push_type),
            (b"apns-priority", priority),
            # Unique per push: kept out of the HPACK table so they do not evict the rest.
            NeverIndexedHeaderTuple(b"apns-expiration", b"%d" % _unix_seconds(item.expires_at)),
        ]
        collapse_id = item.msg_key.encode()
        if collapse_id and len(collapse_id) <= COLLAPSE_ID_LIMIT_B:
            tail.append(NeverIndexedHeaderTuple(b"apns-collapse-id", collapse_id))
        return _Prepared(item, head, tail, body)

    async def _deliver(self, push: _Prepared) -> Outcome:
        item = push.item
        resent = renewed = False
        not_sent = 0
        while True:
            bearer, generation = self._current_bearer()
            try:
                link = await self._connection()
                answer = await link.request(push.headers(bearer), push.body)
            except _NoConnection as exc:
                return _transport_outcome(item, exc.raw, exc.reason, _CONN_UNAVAILABLE)
            except _NoAnswer as exc:
                if not exc.sent and not_sent < _NOT_SENT_TRIES:
                    not_sent += 1
                    continue
                if exc.resend and not resent:
                    resent = True
                    continue
                return _transport_outcome(item, exc.raw, exc.reason, _CONN_CLOSED)
            expired = answer.status == 403 and _reason(answer.body) == "ExpiredProviderToken"
            if expired and not renewed and self._key is not None:
                renewed = True
                await self._renew_token(generation)
                continue
            return self._verdict(item, answer, link)

    def _verdict(self, item: Outbound, answer: _Answer, link: _Link) -> Outcome:
        if answer.status == 200:
            return Outcome(item.delivery_id, statuses.ACKED, Next.DONE)
        reason = _reason(answer.body)
        found = _ANSWERS.get((answer.status, reason)) if reason is not None else None
        if found is not None:
            status, next_ = found
        else:  # status-codes.md section 5: by HTTP family, raw kept
            status = statuses.NONE
            next_ = Next.RETRY if answer.status >= 500 or answer.status == 429 else Next.MESSAGE
        if reason in _RECONNECT_REASONS:
            link.retire()
        if reason is None:
            text = answer.body.decode("utf-8", "replace")[:_RAW_BODY_LIMIT]
            raw = f"{answer.status} {text}".rstrip()
        else:
            raw = f"{answer.status} {reason}"
            timestamp = _timestamp(answer.body) if answer.status == 410 else None
            if timestamp is not None:
                raw += f" (timestamp {timestamp} ms)"
        logger.debug("apns: %s for token %s", raw, mask(item.token))
        retry_after_s = _retry_after_s(answer.retry_after)
        return Outcome(item.delivery_id, status, next_, raw=raw, retry_after_s=retry_after_s)

    # -- connections -------------------------------------------------------------------------

    async def _connection(self) -> _Link:
        link = self._link
        if link is not None and link.usable:
            return link
        task = self._connecting
        if task is None:
            task = asyncio.get_running_loop().create_task(self._connect())
            task.add_done_callback(self._connected)
            self._connecting = task
        return await asyncio.shield(task)

    def _connected(self, task: asyncio.Task[_Link]) -> None:
        self._connecting = None
        if task.cancelled() or task.exception() is not None:
            return
        link = task.result()
        self._link = link
        self._links.add(link)
        link.closed.add_done_callback(lambda _: self._links.discard(link))

    async def _connect(self) -> _Link:
        loop = asyncio.get_running_loop()
        transport: asyncio.BaseTransport | None = None
        timeout_s = self._connect_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                transport, link = await loop.create_connection(
                    lambda: _Link(
                        response_timeout_s=self._response_timeout_s,
                        client_certificate=self._key is None,
                    ),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host,
                )
                tls = transport.get_extra_info("ssl_object")
                if tls is None or tls.selected_alpn_protocol() != "h2":
                    raise _NoConnection("the server did not agree to HTTP/2 (ALPN h2)")
                await link.ready
                if link.goaway is not None:  # SETTINGS then GOAWAY (a refused certificate)
                    raise link.goaway
        except _NoConnection as exc:
            failure = exc
        except OSError as exc:  # refused, DNS, TLS (ssl.SSLError), TimeoutError
            raw = f"no connection within {timeout_s:g} s" if isinstance(exc, TimeoutError) else ""
            refused = _refused_certificate(exc) if self._key is None else None
            failure = refused or _NoConnection(raw or f"{type(exc).__name__}: {exc}")
        else:
            logger.info("apns: connected to %s:%d", self._host, self._port)
            return link
        if transport is not None:
            transport.close()
        logger.warning("apns: cannot connect to %s:%d: %s", self._host, self._port, failure.raw)
        raise failure

    async def close(self) -> None:
        connecting = self._connecting
        if connecting is not None:  # let it finish, so that its connection is closed too
            with contextlib.suppress(_NoConnection):
                await asyncio.shield(connecting)
        links = list(self._links)
        self._link = None
        for link in links:
            link.close()
        if links:
            await asyncio.wait([link.closed for link in links], timeout=1.0)

    # -- provider token ----------------------------------------------------------------------

    def _current_bearer(self) -> tuple[bytes, int]:
        if self._key is None:  # certificate auth
            return b"", 0
        bearer = self._bearer
        if bearer is None or self._clock() - self._bearer_iat >= self._token_refresh_s:
            bearer = self._mint()
        return bearer, self._generation

    def _mint(self) -> bytes:
        assert self._key is not None
        now = self._clock()
        token = jwt.encode(
            {"iss": self._team_id, "iat": int(now)},
            self._key,
            algorithm="ES256",
            headers={"kid": self._key_id, "typ": None},  # Apple's header: alg and kid only
        )
        self._bearer = b"bearer " + token.encode()
        self._bearer_iat = now
        self._generation += 1
        self.tokens_minted += 1
        logger.debug("apns: minted provider token %d (key %s)", self._generation, self._key_id)
        return self._bearer

    async def _renew_token(self, generation: int) -> None:
        """After ExpiredProviderToken on a token of ``generation``: mint a new one, unless
        another push already did since (so a hundred such answers make one token)."""
        async with self._auth_lock:
            if generation == self._generation:
                logger.info("apns: provider token expired early; minting a new one")
                self._mint()


def _transport_outcome(item: Outbound, raw: str, reason: str | None, fallback: Status) -> Outcome:
    """A push that got no HTTP answer: a GOAWAY's known reason (N5), else ``fallback``."""
    known = _BY_REASON.get(reason) if reason is not None else None
    if known is not None and known[0] is not statuses.NONE:
        return Outcome(item.delivery_id, known[0], known[1], raw=raw)
    return Outcome(item.delivery_id, fallback, Next.RETRY, raw=raw)


def _reason(body: bytes) -> str | None:
    if not body:
        return None
    try:
        reason = json.loads(body).get("reason")
    except (ValueError, AttributeError):
        return None
    return reason if isinstance(reason, str) and reason else None


def _timestamp(body: bytes) -> int | None:
    try:
        value = json.loads(body).get("timestamp")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _retry_after_s(value: bytes | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None if absent or unreadable."""
    return parse_retry_after(None if value is None else value.decode("latin-1"))


def _unix_seconds(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int(when.timestamp()))


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _load_key(value: Any) -> ec.EllipticCurvePrivateKey:
    data = value.encode() if isinstance(value, str) else value
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # ``from None``: the parser's message is no help and the key must stay out of logs.
        raise ConfigError(
            "apns: setting 'private_key' is not a readable PEM private key; give the whole "
            "AuthKey_<KeyID>.p8 file from Apple, BEGIN and END lines included"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError("apns: setting 'private_key' must be an EC P-256 key (Apple's .p8 file)")
    return key


def _refused_certificate(exc: BaseException | None) -> _NoConnection | None:
    """A connection ended during its setup, as BadCertificate if that is what it means: a TLS
    alert about our client certificate, or (``exc`` None) a close right after the handshake
    with not one byte of HTTP/2, which is how a TLS 1.3 server's verdict on the client
    certificate usually reaches asyncio (the alert is lost with the connection)."""
    if exc is None:
        raw = (
            "the server closed the connection right after the TLS handshake, before HTTP/2 "
            "SETTINGS: it refused the client certificate"
        )
        return _NoConnection(raw, "BadCertificate")
    if not isinstance(exc, ssl.SSLError) or exc.reason not in _CLIENT_CERT_ALERTS:
        return None
    return _NoConnection(
        f"TLS alert {exc.reason}: the server refused the client certificate", "BadCertificate"
    )


def _ssl_context(
    ca_pem: Any, certificate: Any = None, certificate_key: Any = None
) -> ssl.SSLContext:
    try:
        if ca_pem is None:
            context = ssl.create_default_context()
        else:
            text = ca_pem.decode() if isinstance(ca_pem, bytes) else str(ca_pem)
            context = ssl.create_default_context(cadata=text)
    except (ssl.SSLError, ValueError):
        raise ConfigError(
            "apns: setting 'ca_pem' is not a PEM certificate; give the CA certificate the "
            "server's chain ends in (only needed for fakes or private gateways)"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    if certificate is not None:
        _load_client_certificate(context, certificate, certificate_key)
    return context


def _load_client_certificate(context: ssl.SSLContext, certificate: Any, key: Any) -> None:
    """``load_cert_chain`` reads files only: the PEMs go to a private temporary directory
    (0700, files 0600) that is removed as soon as they are loaded."""

    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    with tempfile.TemporaryDirectory(prefix="openmps-apns-") as tmp:
        cert_file = Path(tmp, "certificate.pem")
        key_file = Path(tmp, "key.pem") if key is not None else None
        for path, value in ((cert_file, certificate), (key_file, key)):
            if path is not None:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(text(value))
        try:
            context.load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, ValueError, OSError):
            # ``from None``: the key must stay out of logs and tracebacks.
            raise ConfigError(
                "apns: settings 'certificate' / 'certificate_key' are not a readable PEM "
                "client certificate and its unencrypted private key (give the certificate "
                "with its key in one PEM, or the key in 'certificate_key')"
            ) from None


def _parse_base_url(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    try:
        port = parts.port or 443
    except ValueError:
        port = 0
    if parts.scheme != "https" or not parts.hostname or not port:
        raise ConfigError(f"apns: base_url must look like https://host[:port], got {base_url!r}")
    return parts.hostname, port
