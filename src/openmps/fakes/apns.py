"""A stand-in for the APNs provider API: HTTP/2 over TLS, token or certificate auth.

Follows ``shared/reference/vendors-apns-fcm-webpush.md`` section 1; 1.9 is this fake's spec.
``POST /3/device/<token>`` is checked in one fixed order (APNs does not publish its own):
method (405) -> path (404 ``BadPath``, 400 ``MissingDeviceToken``) -> repeated headers
(``DuplicateHeaders``) -> provider token (403 family, 429 ``TooManyProviderTokenUpdates``) ->
header values (``BadMessageId``, ``BadExpirationDate``, ``BadPriority``, ``InvalidPushType``,
``BadCollapseId``) -> topic (``MissingTopic``, ``BadTopic``, ``TopicDisallowed``) -> body
(``PayloadEmpty``, 413 ``PayloadTooLarge``) -> device token (``BadDeviceToken``,
``DeviceTokenNotForTopic``, 410 ``Unregistered``/``ExpiredToken``) -> the scenario's answer,
else 200. Any non-empty body is accepted (APNs' reaction to non-JSON is undocumented); it is
recorded parsed when it is JSON.

Provider tokens: ES256 JWTs checked against keys added with :meth:`FakeAPNs.add_key`; ``iss``
must be the key's team; ``iat`` older than ``token_max_age_s`` is ``ExpiredProviderToken``.
A connection allows ``streams_before_auth`` streams until a token passes, then
``max_concurrent_streams``. Replacing a still-valid token on a connection within
``token_update_floor_s`` of its first use there is 429 ``TooManyProviderTokenUpdates``
(replacing an expired one is allowed: that is how a client recovers); a second key id on one
connection is 403 ``UnrelatedKeyIdInToken`` (related keys are not modelled).

Scenario actions (``Rule.action``) besides the shared ones: ``"goaway"`` sends GOAWAY with
``last_stream_id`` just below the matching stream (``Rule.body`` is the debug data, default
``{"reason": "Shutdown"}``), answers the streams at or below it, ignores the rest and closes;
``"refuse"`` resets the stream with ``REFUSED_STREAM``. Neither the refused, the GOAWAY'd nor
a ``"close"``'d request is recorded in ``received``: APNs never processed them.

Control over HTTP/2 on the same port (see ``fakes/base.py``): ``/__fake__/scenario``,
``/__fake__/received``, and ``POST /__fake__/keys`` ``{"team_id", "key_id",
"public_key_pem"}``. HTTP/1.1 is not served (ALPN offers ``h2`` only).

Client certificates (reference 1.5.2): the TLS server asks for one (``CERT_OPTIONAL``) and
verifies it against the fake's CA, so a certificate some other CA signed fails the handshake
(a TLS alert, as a real server refuses a certificate it cannot verify).
:meth:`FakeAPNs.issue_client_certificate` signs one with the subject UID set to the topic, as
Apple's are, and remembers its topics and environment by serial number. On a connection with
a certificate the ``authorization`` header is ignored (Apple ignores it there too), the stream
limit is ``max_concurrent_streams`` at once, and the provider-token step of the order above
is replaced by the certificate's: a topic it does not list is 400 ``TopicDisallowed``, a
request to the other environment's host (``:authority`` containing ``sandbox`` or not) is 403
``BadCertificateEnvironment``. A CA-signed certificate the fake did not issue or has revoked
(:meth:`FakeAPNs.revoke_client_certificate`) gets a GOAWAY with ``{"reason":
"BadCertificate"}`` right after the handshake, the way APNs reports it in practice.

Not done: environment-bound keys (``BadEnvironmentKeyIdInToken``), the certificate topic
extension ``1.2.840.113635.100.6.3.6`` (topics are remembered, not encoded), and the broadcast
(Live Activity channel) API.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import re
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hyperframe.frame import GoAwayFrame

from openmps.fakes.base import Received, Recorder, Rule, Scenario

# hpack logs every header at DEBUG, provider tokens included: keep it at INFO.
logging.getLogger("hpack").setLevel(logging.INFO)

__all__ = ["PAYLOAD_LIMIT_B", "PUSH_TYPES", "REASON_STATUS", "VOIP_PAYLOAD_LIMIT_B", "FakeAPNs"]

# Every reason string of Apple's table (reference 1.6) and the HTTP status it comes with.
REASON_STATUS: dict[str, int] = {
    "BadCollapseId": 400,
    "BadDeviceToken": 400,
    "BadExpirationDate": 400,
    "BadMessageId": 400,
    "BadPriority": 400,
    "BadTopic": 400,
    "DeviceTokenNotForTopic": 400,
    "DuplicateHeaders": 400,
    "IdleTimeout": 400,
    "InvalidPushType": 400,
    "MissingDeviceToken": 400,
    "MissingTopic": 400,
    "PayloadEmpty": 400,
    "TopicDisallowed": 400,
    "BadCertificate": 403,
    "BadCertificateEnvironment": 403,
    "ExpiredProviderToken": 403,
    "Forbidden": 403,
    "InvalidProviderToken": 403,
    "MissingProviderToken": 403,
    "UnrelatedKeyIdInToken": 403,
    "BadEnvironmentKeyIdInToken": 403,
    "BadPath": 404,
    "MethodNotAllowed": 405,
    "ExpiredToken": 410,
    "Unregistered": 410,
    "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
    "Shutdown": 503,
}

PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "voip",
        "complication",
        "fileprovider",
        "liveactivity",
        "location",
        "pushtotalk",
        "widgets",
        "controls",
        "mdm",
    }
)
PAYLOAD_LIMIT_B = 4096
VOIP_PAYLOAD_LIMIT_B = 5120
COLLAPSE_ID_LIMIT_B = 64

_DEVICE_PATH = "/3/device/"
_CONTROL_PATH = "/__fake__/"
_ACTIONS = frozenset({None, "close", "goaway", "expire_auth", "refuse"})
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_HEX_TOKEN = re.compile(r"(?:[0-9a-fA-F]{2})+\Z")
_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_MAX_BODY_B = 1 << 20  # bodies past this are not buffered: the stream is reset
_VERIFIED_CACHE_SIZE = 4096  # JWT strings whose signature was already checked
_SWEEP_MIN_STREAMS = 256  # h2's stream table is swept once it holds more than this


class _H2Server(h2.connection.H2Connection):
    """h2's server connection, counting open streams in O(1).

    h2 walks its whole stream table for every new stream (O(n^2) for n in flight); here the
    count is the set of streams the fake has not finished, and h2's walk (which also forgets
    closed streams) runs only once the table has doubled since the last one.
    """

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        self.open_ids: set[int] = set()  # streams not yet closed on both sides
        self._sweep_above = _SWEEP_MIN_STREAMS

    @property
    def open_inbound_streams(self) -> int:
        if len(self.streams) > self._sweep_above:
            _ = super().open_inbound_streams
            self._sweep_above = max(_SWEEP_MIN_STREAMS, 2 * len(self.streams))
        return len(self.open_ids)


@dataclass(frozen=True, slots=True)
class _Claims:
    team_id: str
    key_id: str
    iat: int


@dataclass(frozen=True, slots=True)
class _ClientCert:
    topics: frozenset[str]
    environment: str  # "production", "sandbox" or "both" (Apple's universal certificate)


@dataclass(slots=True)
class _Request:
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)


class FakeAPNs:
    """The fake APNs server. ``start`` it, trust ``cert_pem``, send to ``url``."""

    def __init__(
        self,
        *,
        max_concurrent_streams: int = 1000,
        streams_before_auth: int | None = 1,
        token_max_age_s: float = 3600.0,
        token_update_floor_s: float = 1200.0,
        topics: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``streams_before_auth=None`` allows ``max_concurrent_streams`` from the start;
        ``topics=None`` allows every topic; ``clock`` gives UNIX seconds (for JWT ages)."""
        self.scenario = Scenario()
        self.received = Recorder()
        self.max_concurrent_streams = max_concurrent_streams
        self.streams_before_auth = streams_before_auth
        self.token_max_age_s = token_max_age_s
        self.token_update_floor_s = token_update_floor_s
        self.topics = None if topics is None else frozenset(topics)
        self.clock = clock
        self.connections_accepted = 0  # TLS connections served since start
        self.peak_open_streams = 0  # most requests one connection held unanswered at once
        self.cert_pem, self._key_pem, self._leaf_pem, self._ca_key = _make_certificates()
        self._client_certs: dict[int, _ClientCert] = {}  # serial number -> what it allows
        self._keys: dict[str, tuple[str, ec.EllipticCurvePublicKey]] = {}  # kid -> team, key
        self._verified: dict[str, _Claims | None] = {}  # JWT -> its claims, None if bad
        self._expired: set[str] = set()  # JWTs turned expired by "expire_auth"
        self._dead_tokens: dict[str, tuple[str, int]] = {}  # device token -> reason, ms
        self._token_topics: dict[str, str] = {}  # device token -> the only topic it serves
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.host = "127.0.0.1"
        self.port = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    # -- setup -------------------------------------------------------------------------------

    def add_key(self, team_id: str, key_id: str, public_key_pem: str | bytes) -> None:
        """Accept JWTs signed by this key (``kid`` = ``key_id``, ``iss`` = ``team_id``)."""
        pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("an APNs key is an EC P-256 key")
        self._keys[key_id] = (team_id, key)
        self._verified.clear()

    def issue_client_certificate(
        self, topic: str, *, extra_topics: Iterable[str] = (), environment: str = "both"
    ) -> tuple[str, str]:
        """A client certificate for ``topic`` (and ``extra_topics``, e.g. the ``.voip`` one)
        signed by this fake's CA: ``(certificate PEM, private key PEM)``. ``environment`` is
        ``production``, ``sandbox`` or ``both`` (Apple's universal certificate)."""
        if environment not in ("production", "sandbox", "both"):
            raise ValueError(f"environment must be production, sandbox or both: {environment!r}")
        cert_pem, key_pem, serial = _client_certificate(self._ca_key, self.cert_pem, topic)
        self._client_certs[serial] = _ClientCert(frozenset({topic, *extra_topics}), environment)
        return cert_pem, key_pem

    def revoke_client_certificate(self, cert_pem: str | bytes) -> None:
        """Refuse this certificate from now on (new connections get GOAWAY BadCertificate)."""
        pem = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
        self._client_certs.pop(x509.load_pem_x509_certificate(pem).serial_number, None)

    def unregister(
        self, token: str, *, reason: str = "Unregistered", at_ms: int | None = None
    ) -> None:
        """Answer 410 ``reason`` (``Unregistered`` or ``ExpiredToken``) for this device token."""
        if REASON_STATUS.get(reason) != 410:
            raise ValueError(f"{reason!r} is not a 410 reason")
        self._dead_tokens[token] = (reason, int(self.clock() * 1000) if at_ms is None else at_ms)

    def bind_token(self, token: str, topic: str) -> None:
        """This device token serves only ``topic``; others get ``DeviceTokenNotForTopic``."""
        self._token_topics[token] = topic

    @staticmethod
    def error(
        reason: str, status: int | None = None, *, retry_after_s: float | None = None
    ) -> Rule:
        """A rule answering ``reason`` with the HTTP status APNs uses for it (410 with a
        ``timestamp`` in ms); ``status`` is required for a reason Apple does not list."""
        if status is None:
            if reason not in REASON_STATUS:
                raise ValueError(f"unknown APNs reason {reason!r}: give its HTTP status")
            status = REASON_STATUS[reason]
        body: dict[str, Any] = {"reason": reason}
        if status == 410:
            body["timestamp"] = int(time.time() * 1000)
        headers = {} if retry_after_s is None else {"retry-after": f"{retry_after_s:g}"}
        return Rule(status=status, body=body, headers=headers)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on (host, port) and return the port (a free one when ``port`` is 0)."""
        context = self._server_context()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, ssl=context)
        self.host = host
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def drop_connections(self) -> None:
        """Close every open connection at once (clients see a reset, then reconnect)."""
        for connection in list(self._connections):
            connection.close()

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["h2"])
        # load_cert_chain reads files only; the directory lives for this call alone.
        with tempfile.TemporaryDirectory() as tmp:
            cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
            cert_file.write_text(self._leaf_pem + self.cert_pem)
            key_file.write_text(self._key_pem)
            context.load_cert_chain(cert_file, key_file)
        context.verify_mode = ssl.CERT_OPTIONAL  # client certificates: reference 1.5.2
        context.load_verify_locations(cadata=self.cert_pem)
        return context

    # -- judging one push --------------------------------------------------------------------

    def _claims(self, token: str) -> _Claims | None:
        """The JWT's claims if its ES256 signature and ``iss`` check out, else None."""
        if token in self._verified:
            return self._verified[token]
        claims: _Claims | None = None
        try:
            header = jwt.get_unverified_header(token)
            entry = self._keys.get(str(header.get("kid")))
            if header.get("alg") == "ES256" and entry is not None:
                team_id, key = entry
                decoded = jwt.decode(
                    token,
                    key,
                    algorithms=["ES256"],
                    options={"verify_iat": False, "require": ["iss", "iat"]},
                )
                iat = decoded["iat"]
                if decoded["iss"] == team_id and isinstance(iat, int) and not isinstance(iat, bool):
                    claims = _Claims(team_id, str(header["kid"]), iat)
        except jwt.PyJWTError:
            claims = None
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def _expire_all_tokens(self) -> None:
        self._expired.update(t for t, c in self._verified.items() if c is not None)

    def _token_expired(self, token: str, claims: _Claims) -> bool:
        return token in self._expired or self.clock() - claims.iat > self.token_max_age_s

    def _judge(
        self, connection: _Connection, method: str, path: str, request: _Request
    ) -> str | None:
        """The reason APNs would refuse this request with, or None if it would accept it."""
        if method != "POST":
            return "MethodNotAllowed"
        if not path.startswith(_DEVICE_PATH):
            return "BadPath"
        device_token = path[len(_DEVICE_PATH) :]
        if not device_token:
            return "MissingDeviceToken"

        names = [name for name, _ in request.headers if not name.startswith(":")]
        if len(names) != len(set(names)):
            return "DuplicateHeaders"
        headers = dict(request.headers)

        certificate = connection.certificate
        if certificate is None:
            refusal = connection.authenticate(headers.get("authorization", ""))
            if refusal is not None:
                return refusal
        elif certificate.environment != "both":
            sandbox = "sandbox" in headers.get(":authority", "")
            if sandbox != (certificate.environment == "sandbox"):
                return "BadCertificateEnvironment"

        apns_id = headers.get("apns-id")
        if apns_id is not None and not _UUID.match(apns_id):
            return "BadMessageId"
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            return "BadExpirationDate"
        priority = headers.get("apns-priority")
        if priority is not None and priority not in ("1", "5", "10"):
            return "BadPriority"
        push_type = headers.get("apns-push-type", "alert")
        if push_type not in PUSH_TYPES:
            return "InvalidPushType"
        if push_type == "background" and priority == "10":
            return "BadPriority"  # reference 1.3: background pushes must use priority 5
        collapse_id = headers.get("apns-collapse-id")
        if collapse_id is not None and len(collapse_id.encode()) > COLLAPSE_ID_LIMIT_B:
            return "BadCollapseId"

        topic = headers.get("apns-topic")
        if not topic:
            return "MissingTopic"
        if not _TOPIC.match(topic):
            return "BadTopic"
        if self.topics is not None and topic not in self.topics:
            return "TopicDisallowed"
        if certificate is not None and topic not in certificate.topics:
            return "TopicDisallowed"

        if not request.body:
            return "PayloadEmpty"
        limit = VOIP_PAYLOAD_LIMIT_B if push_type == "voip" else PAYLOAD_LIMIT_B
        if len(request.body) > limit:
            return "PayloadTooLarge"

        if not _HEX_TOKEN.match(device_token):
            return "BadDeviceToken"
        bound_topic = self._token_topics.get(device_token)
        if bound_topic is not None and bound_topic != topic:
            return "DeviceTokenNotForTopic"
        if device_token in self._dead_tokens:
            return self._dead_tokens[device_token][0]
        return None

    def _error_body(self, reason: str, device_token: str) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason}
        if REASON_STATUS[reason] == 410:
            dead = self._dead_tokens.get(device_token)
            body["timestamp"] = dead[1] if dead is not None else int(self.clock() * 1000)
        return body


class _Connection(asyncio.Protocol):
    """One client connection: HTTP/2 framing, per-connection auth state, answers."""

    def __init__(self, fake: FakeAPNs) -> None:
        self.fake = fake
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = _H2Server(config)
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, _Request] = {}  # streams still receiving their request
        self.outgoing: dict[int, bytearray] = {}  # answer bodies waiting for window
        self.unanswered = 0  # requests received and not answered yet
        self.delayed = 0  # requests sleeping on a rule's delay
        self.highest_done = 0  # highest stream id answered (or being answered)
        self.goaway_last: int | None = None  # set once we sent GOAWAY
        self.token: str | None = None  # the provider token in use on this connection
        self.token_iat = 0
        self.token_since = 0.0  # when that token was first accepted here
        self.key_id: str | None = None  # the first key accepted here
        self.authed = False
        self.certificate: _ClientCert | None = None  # the client certificate's grants
        self.closed = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.fake.connections_accepted += 1
        self.fake._connections.add(self)
        first = self.fake.streams_before_auth or self.fake.max_concurrent_streams
        tls = self.transport.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        if der:
            serial = x509.load_der_x509_certificate(der).serial_number
            self.certificate = self.fake._client_certs.get(serial)
            if self.certificate is not None:
                self.authed = True
                first = self.fake.max_concurrent_streams
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: first,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 8000,
            },
        )
        self.h2.initiate_connection()
        if der and self.certificate is None:
            # CA-signed but not issued here (or revoked): SETTINGS and GOAWAY in one write.
            debug = json.dumps({"reason": "BadCertificate"}).encode()
            self.h2.close_connection(error_code=0, additional_data=debug, last_stream_id=0)
            self.close()
            return
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fake._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                assert event.stream_id is not None
                self.h2.open_ids.add(event.stream_id)
                self.requests[event.stream_id] = _Request(_text_headers(event.headers))
                self.unanswered += 1
                self.fake.peak_open_streams = max(self.fake.peak_open_streams, self.unanswered)
            elif isinstance(event, h2.events.DataReceived):
                self._on_data(event)
            elif isinstance(event, h2.events.StreamEnded):
                request = self.requests.pop(event.stream_id, None)
                if request is not None:
                    self._on_request(event.stream_id, request)
            elif isinstance(event, h2.events.StreamReset):
                self.h2.open_ids.discard(event.stream_id or 0)
                if self.requests.pop(event.stream_id, None) is not None:
                    self.unanswered -= 1
                self.outgoing.pop(event.stream_id, None)
            elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                self._send_waiting_bodies()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.close()
                return
        self.flush()
        self._finish_goaway()

    def _on_data(self, event: h2.events.DataReceived) -> None:
        assert event.stream_id is not None and event.data is not None
        self.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
        request = self.requests.get(event.stream_id)
        if request is None:
            return
        request.body += event.data
        if len(request.body) > _MAX_BODY_B:
            del self.requests[event.stream_id]
            self.unanswered -= 1
            self._reset(event.stream_id, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    def _reset(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        self.h2.open_ids.discard(stream_id)
        self.outgoing.pop(stream_id, None)
        self.h2.reset_stream(stream_id, code)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.flush()
            self.transport.close()
        self.closed = True

    # -- requests ----------------------------------------------------------------------------

    def _past_goaway(self, stream_id: int) -> bool:
        """True (and the request forgotten) if a GOAWAY we sent excluded this stream."""
        if self.goaway_last is None or stream_id <= self.goaway_last:
            return False
        self.unanswered -= 1
        return True

    def _on_request(self, stream_id: int, request: _Request) -> None:
        if self._past_goaway(stream_id):
            return  # not processed: the client resends it elsewhere
        path = _header(request.headers, ":path")
        if path.startswith(_CONTROL_PATH):
            self._control(stream_id, _header(request.headers, ":method"), path, request)
            return
        device_token = path[len(_DEVICE_PATH) :] if path.startswith(_DEVICE_PATH) else None
        rule = self.fake.scenario.take(device_token)
        if rule is not None and rule.delay_s > 0:
            self.delayed += 1
            task = asyncio.get_running_loop().create_task(self._later(stream_id, request, rule))
            self.fake._tasks.add(task)
            task.add_done_callback(self.fake._tasks.discard)
            return
        self._handle(stream_id, request, rule)

    async def _later(self, stream_id: int, request: _Request, rule: Rule) -> None:
        try:
            await asyncio.sleep(rule.delay_s)
        finally:
            self.delayed -= 1
        if self.closed:
            return
        self._handle(stream_id, request, rule)
        self.flush()
        self._finish_goaway()

    def _handle(self, stream_id: int, request: _Request, rule: Rule | None) -> None:
        if self._past_goaway(stream_id):
            return
        action = rule.action if rule is not None else None
        if action == "close":
            self.close()
            return
        if action == "refuse":
            self.unanswered -= 1
            self._reset(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        if action == "goaway" and rule is not None and self._goaway(stream_id, rule):
            return
        headers = dict(request.headers)
        if action == "expire_auth":
            self.fake._expire_all_tokens()
            token = _bearer(headers.get("authorization", ""))
            if token:
                self.fake._expired.add(token)

        method, path = headers.get(":method", ""), headers.get(":path", "")
        self.fake.received.add(Received(path=path, headers=headers, body=_parse(request.body)))
        apns_id = headers.get("apns-id", "")
        if not _UUID.match(apns_id):
            apns_id = str(uuid.uuid4())  # APNs makes one up when the request has none
        extra = [("apns-id", apns_id)]
        if "sandbox" in headers.get(":authority", ""):
            extra.append(("apns-unique-id", str(uuid.uuid4())))

        reason = self.fake._judge(self, method, path, request)
        device_token = path[len(_DEVICE_PATH) :]
        if reason is not None:
            body = self.fake._error_body(reason, device_token)
            self._answer(stream_id, REASON_STATUS[reason], body, extra)
        elif rule is not None and rule.status is not None:
            extra.extend(rule.headers.items())
            self._answer(stream_id, rule.status, rule.body, extra)
        else:
            self._answer(stream_id, 200, None, extra)

    def authenticate(self, authorization: str) -> str | None:
        """Check the provider token on this connection; the refusal reason or None."""
        fake = self.fake
        token = _bearer(authorization)
        if not token:
            return "MissingProviderToken"
        claims = fake._claims(token)
        if claims is None:
            return "InvalidProviderToken"
        if fake._token_expired(token, claims):
            return "ExpiredProviderToken"
        if self.key_id is not None and claims.key_id != self.key_id:
            return "UnrelatedKeyIdInToken"
        now = fake.clock()
        if token != self.token:
            if self.token is not None:
                old = _Claims("", self.key_id or "", self.token_iat)
                old_valid = not fake._token_expired(self.token, old)
                if old_valid and now - self.token_since < fake.token_update_floor_s:
                    return "TooManyProviderTokenUpdates"
            self.token, self.token_iat, self.token_since = token, claims.iat, now
            self.key_id = claims.key_id
        if not self.authed:
            self.authed = True
            if fake.streams_before_auth is not None:
                limit = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
                self.h2.update_settings({limit: fake.max_concurrent_streams})
        return None

    def _goaway(self, stream_id: int, rule: Rule) -> bool:
        """Send GOAWAY for this stream and above; False if it was already past the line."""
        last = max(stream_id - 2, self.highest_done, 0)
        self.goaway_last = last
        debug = rule.body if rule.body is not None else {"reason": "Shutdown"}
        frame = GoAwayFrame(0, last_stream_id=last, error_code=0)
        frame.additional_data = json.dumps(debug).encode()
        # Sent around h2: its state machine would refuse to answer the streams at or below
        # ``last``, which HTTP/2 (RFC 9113, 6.8) lets the server finish.
        self.flush()
        if self.transport is not None and not self.closed:
            self.transport.write(frame.serialize())
        if stream_id <= last:
            return False
        self.unanswered -= 1
        for pending in [sid for sid in self.requests if sid > last]:
            del self.requests[pending]
            self.unanswered -= 1
        return True

    def _finish_goaway(self) -> None:
        """After a GOAWAY, close once every stream at or below its line has its answer."""
        if self.goaway_last is None or self.closed or self.delayed or self.outgoing:
            return
        if any(sid <= self.goaway_last for sid in self.requests):
            return
        self.close()

    # -- answers -----------------------------------------------------------------------------

    def _answer(
        self, stream_id: int, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> None:
        self.unanswered -= 1
        self.highest_done = max(self.highest_done, stream_id)
        data = b"" if body is None else json.dumps(body).encode()
        response = [(":status", str(status)), *headers]
        if data:
            response.append(("content-type", "application/json"))
        try:
            self.h2.send_headers(stream_id, response, end_stream=not data)
        except h2.exceptions.ProtocolError:
            self.h2.open_ids.discard(stream_id)
            return  # the client reset the stream meanwhile
        if not data:
            self.h2.open_ids.discard(stream_id)
        else:
            self.outgoing[stream_id] = bytearray(data)
            self._send_waiting_bodies()

    def _send_waiting_bodies(self) -> None:
        for stream_id in list(self.outgoing):
            data = self.outgoing[stream_id]
            try:
                while data:
                    window = self.h2.local_flow_control_window(stream_id)
                    size = min(window, self.h2.max_outbound_frame_size, len(data))
                    if size <= 0:
                        break
                    chunk, data[:size] = bytes(data[:size]), b""
                    self.h2.send_data(stream_id, chunk, end_stream=not data)
            except h2.exceptions.ProtocolError:
                data.clear()
            if not data:
                del self.outgoing[stream_id]
                self.h2.open_ids.discard(stream_id)

    # -- control endpoints -------------------------------------------------------------------

    def _control(self, stream_id: int, method: str, path: str, request: _Request) -> None:
        fake = self.fake
        try:
            body = json.loads(request.body) if request.body else {}
            route = (method, path.split("?", 1)[0])
            if route == ("POST", "/__fake__/scenario"):
                # {"error": "<reason>"} is the short way to answer as APNs does for it.
                rule = FakeAPNs.error(body["error"]) if "error" in body else Rule(**body["rule"])
                if rule.action not in _ACTIONS:
                    raise ValueError(f"unknown action {rule.action!r}")
                fake.scenario.set(rule, body.get("token"))
                answer: Any = {"ok": True}
            elif route == ("GET", "/__fake__/scenario"):
                answer = {"scenario": fake.scenario.as_json()}
            elif route == ("DELETE", "/__fake__/scenario"):
                fake.scenario.clear()
                answer = {"scenario": {}}
            elif route == ("GET", "/__fake__/received"):
                answer = {"received": [asdict(item) for item in fake.received.items]}
            elif route == ("DELETE", "/__fake__/received"):
                fake.received.clear()
                answer = {"received": []}
            elif route == ("POST", "/__fake__/keys"):
                fake.add_key(body["team_id"], body["key_id"], body["public_key_pem"])
                answer = {"keys": sorted(fake._keys)}
            else:
                self._answer(stream_id, 404, {"error": f"no control endpoint {method} {path}"}, [])
                return
        except (ValueError, TypeError, KeyError) as exc:
            self._answer(stream_id, 400, {"error": f"{type(exc).__name__}: {exc}"}, [])
            return
        self._answer(stream_id, 200, answer, [])


def _text_headers(
    headers: Iterable[tuple[bytes | str, bytes | str]] | None,
) -> list[tuple[str, str]]:
    # h2 decodes them already (header_encoding="utf-8"); this only satisfies the types.
    return [
        (k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
        for k, v in headers or ()
    ]


def _header(headers: list[tuple[str, str]], name: str) -> str:
    for key, value in headers:
        if key == name:
            return value
    return ""


def _bearer(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _parse(body: bytearray) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _make_certificates() -> tuple[str, str, str, ec.EllipticCurvePrivateKey]:
    """A throwaway CA (its PEM is what clients trust) and a server certificate it signed,
    valid for localhost, 127.0.0.1, ::1 and both APNs host names.
    Returns (CA, key, leaf, CA key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openmps fake APNs CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("api.push.apple.com"),
        x509.DNSName("api.sandbox.push.apple.com"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return (
        ca.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem,
        leaf.public_bytes(serialization.Encoding.PEM).decode(),
        ca_key,
    )


def _client_certificate(
    ca_key: ec.EllipticCurvePrivateKey, ca_pem: str, topic: str
) -> tuple[str, str, int]:
    """A client certificate shaped like Apple's (subject UID = topic) signed by the CA.
    Returns (certificate PEM, key PEM, serial number)."""
    now = datetime.datetime.now(datetime.UTC)
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.USER_ID, topic),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Apple Push Services: {topic}"),
        ]
    )
    serial = x509.random_serial_number()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem, serial
