"""Firebase Cloud Messaging, HTTP v1: one request per registration token, OAuth2 bearer auth.

Reference: ``shared/reference/vendors-apns-fcm-webpush.md`` section 2 (protocol), 4.2 and 5.2
(what each answer means) and ``shared/reference/status-codes.md`` (the fcm rows). v1 has no
multicast, so a batch becomes concurrent single sends (at most ``max_in_flight`` at once)
over one pooled HTTP/2 (or HTTP/1.1 keep-alive) client.

Settings (``openmps channel set APP fcm KEY=...``):

- ``service_account`` (secret): the service-account JSON, as a string or a mapping. Its
  ``token_uri`` is used as given, so a fake's token endpoint works.
- ``project_id``: the Firebase project; defaults to the one in the JSON.
- ``base_url``: the send host (default ``https://fcm.googleapis.com``); the channel config's
  own ``base_url`` is used when this is not set.

The access token is cached until five minutes before it expires (half its life when it lives
less than ten minutes) and fetched under a lock, so concurrent sends share one token request.
A 401 without an FcmError detail means FCM refused the access token: the channel fetches a
new one (once for every send that saw the same token) and re-sends once; a second refusal
is (fcm, 90000401), CONFIG.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from openmps import statuses
from openmps.channels._common import TokenCache, parse_retry_after, redact
from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome, VendorChannel
from openmps.errors import ConfigError
from openmps.statuses import ACKED, NONE, Action, Channel, Finality, Status

__all__ = ["FCM_URL", "FCMChannel", "build_message", "status_for"]

FCM_URL = "https://fcm.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
QUOTA_FAILURE_TYPE = "type.googleapis.com/google.rpc.QuotaFailure"

REFRESH_MARGIN_S = 300.0  # fetch a new access token this long before the old one expires
ASSERTION_LIFETIME_S = 3600  # the longest JWT assertion Google accepts
MAX_PAYLOAD_BYTES = 4096  # notification + data of a message to a token
MAX_TTL_S = 2_419_200  # four weeks; FCM refuses more
RESERVED_DATA_KEYS = frozenset({"from", "gcm"})  # and every key starting with "google"
RAW_BODY_CHARS = 1024  # how much of an unmapped answer's body the outcome keeps
DEFAULT_MAX_IN_FLIGHT = 100
DEFAULT_TIMEOUT_S = 10.0


# -- statuses ---------------------------------------------------------------------------


def _proposed(code: int, name: str, action: Action, finality: Finality, text: str) -> Status:
    """A status-codes.md table 2 PROPOSAL row; the status table's own row wins once added."""
    return statuses.find(Channel.FCM, code) or Status(
        Channel.FCM, code, name, text, action, finality
    )


_Y, _E = Finality.FINAL, Finality.AT_END

# The seed's seven fcm rows plus the eleven proposals of status-codes.md table 2.
_STATUS: dict[int, Status] = {s.code: s for s in statuses.by_channel(Channel.FCM)} | {
    s.code: s
    for s in (
        _proposed(90000001, "MissingRegistration", Action.MSG, _Y, "No target is set."),
        _proposed(90000005, "MismatchSenderId", Action.DROP, _Y, "Token of another sender."),
        _proposed(90000006, "InvalidParameters", Action.MSG, _Y, "Invalid parameters."),
        _proposed(90000008, "InvalidDataKey", Action.MSG, _Y, "Reserved key in data."),
        _proposed(90000010, "Unavailable", Action.RETRY, _E, "FCM is unavailable."),
        _proposed(
            90000012,
            "DeviceMessageRateExceeded",
            Action.RETRY,
            _E,
            "Too many messages to one device.",
        ),
        _proposed(
            90000013,
            "TopicsMessageRateExceeded",
            Action.RETRY,
            _E,
            "Too many messages to one topic.",
        ),
        _proposed(
            90000014,
            "InvalidApnsCredential",
            Action.CONFIG,
            _Y,
            "The APNs or Web Push credential in the Firebase project is refused.",
        ),
        _proposed(90000015, "UnspecifiedError", Action.MSG, _Y, "FCM gave no reason."),
        _proposed(90000400, "InvalidJSON", Action.MSG, _Y, "FCM could not parse the request."),
        _proposed(90000429, "QuotaExceeded", Action.RETRY, _E, "The project's quota is spent."),
    )
}

_NEXT: dict[Action, Next] = {
    Action.DONE: Next.DONE,
    Action.RETRY: Next.RETRY,
    Action.DROP: Next.DROP_TOKEN,
    Action.CONFIG: Next.CONFIG,
    Action.REAUTH: Next.CONFIG,  # only reached once the one refresh has been spent
    Action.MSG: Next.MESSAGE,
    Action.WAIT: Next.RETRY,
    Action.UNKNOWN: Next.MESSAGE,
}


@dataclass(frozen=True, slots=True)
class _Row:
    """One way FCM can answer. ``reason`` is the FcmError ``errorCode`` when the answer has
    one, else its google.rpc ``status``, else ``HTTP <code>`` (the client rule of reference
    2.5); every other given test must pass too."""

    code: int
    reason: str
    field: str | None = None  # a BadRequest field path starts with this
    text: str | None = None  # the message or a field description contains this (lowercase)
    quota: str | None = None  # the QuotaFailure detail contains this (lowercase)


# Tried in order; the first row that fits names the status. Sources: reference 2.5, 2.7, 4.2;
# status-codes.md N13 (the INVALID_ARGUMENT split) and N14 (90000401).
_ROWS: tuple[_Row, ...] = (
    # 404 NOT_FOUND, FE UNREGISTERED: token unregistered, expired, or the app is gone.
    _Row(90000003, "UNREGISTERED"),
    # 400, the BadRequest names message.token: malformed or not an FCM token (seed's
    # "nvalidRegistration"). DROP.
    _Row(90000002, "INVALID_ARGUMENT", field="message.token"),
    # 400 about restricted_package_name: the package comes from our settings, CONFIG.
    _Row(90000004, "INVALID_ARGUMENT", field="message.android.restricted_package_name"),
    # 400 about android.ttl: outside 0..2,419,200 s or badly formatted.
    _Row(90000009, "INVALID_ARGUMENT", field="message.android.ttl"),
    # 400 about a reserved data key (from, gcm, google...). PROPOSAL code.
    _Row(90000008, "INVALID_ARGUMENT", field="message.data", text="reserved"),
    _Row(90000008, "INVALID_ARGUMENT", field="message.android.data", text="reserved"),
    # 400 "Android message is too big": over 4096 B (2048 B to topics).
    _Row(90000007, "INVALID_ARGUMENT", text="too big"),
    # 400 "Recipient of the message is not set.": no target. PROPOSAL code.
    _Row(90000001, "INVALID_ARGUMENT", text="recipient of the message is not set"),
    # 400 "Invalid JSON payload received": FCM could not parse what we sent. PROPOSAL code.
    _Row(90000400, "INVALID_ARGUMENT", text="invalid json payload"),
    # 400 with token wording but no field ("The registration token is not a valid FCM
    # registration token"): same as the message.token row.
    _Row(90000002, "INVALID_ARGUMENT", text="registration token"),
    # Any other 400 INVALID_ARGUMENT: a field we filled wrongly. PROPOSAL code. MSG.
    _Row(90000006, "INVALID_ARGUMENT"),
    # 403 FE SENDER_ID_MISMATCH: the token belongs to another project. The "id check" of
    # status-codes.md is implied: without an FcmError a 403 is an IAM refusal (below), so
    # this answer came after FCM accepted our credentials for our project. PROPOSAL code.
    _Row(90000005, "SENDER_ID_MISMATCH"),
    # 429 FE QUOTA_EXCEEDED, by the QuotaFailure detail: one device, one topic, or the
    # project-wide rate. PROPOSAL codes. RETRY, honouring Retry-After.
    _Row(90000012, "QUOTA_EXCEEDED", quota="device"),
    _Row(90000013, "QUOTA_EXCEEDED", quota="topic"),
    _Row(90000429, "QUOTA_EXCEEDED"),
    _Row(90000429, "RESOURCE_EXHAUSTED"),  # a 429 without the FcmError detail
    _Row(90000429, "HTTP 429"),  # a 429 whose body we cannot read
    # 503 UNAVAILABLE, and the front end's 502/504 pages: FCM overloaded. PROPOSAL code.
    _Row(90000010, "UNAVAILABLE"),
    _Row(90000010, "HTTP 502"),
    _Row(90000010, "HTTP 503"),
    _Row(90000010, "HTTP 504"),
    # 500 INTERNAL: FCM's own fault. RETRY.
    _Row(90000011, "INTERNAL"),
    _Row(90000011, "HTTP 500"),
    # 401 FE THIRD_PARTY_AUTH_ERROR (APNS_AUTH_ERROR is its old name): the APNs or Web Push
    # credential uploaded to Firebase is refused. PROPOSAL code. CONFIG.
    _Row(90000014, "THIRD_PARTY_AUTH_ERROR"),
    _Row(90000014, "APNS_AUTH_ERROR"),
    # FE UNSPECIFIED_ERROR: FCM names no reason. PROPOSAL code. MSG, raw kept.
    _Row(90000015, "UNSPECIFIED_ERROR"),
    # 401 without FcmError after the one token refresh, or 403 PERMISSION_DENIED without
    # FcmError (IAM right missing, unknown project): our credentials. CONFIG.
    _Row(90000401, "UNAUTHENTICATED"),
    _Row(90000401, "HTTP 401"),
    _Row(90000401, "PERMISSION_DENIED"),
)


@dataclass(frozen=True, slots=True)
class _Answer:
    """What an FCM error answer says, read once."""

    http: int
    fcm_error: str | None  # the FcmError detail's errorCode
    rpc_status: str | None  # error.status
    fields: tuple[str, ...]  # BadRequest field paths
    text: str  # error.message and field descriptions, lowercase
    quota: str  # the QuotaFailure detail as JSON, lowercase
    body: str

    @property
    def reason(self) -> str:
        return self.fcm_error or self.rpc_status or f"HTTP {self.http}"

    @property
    def summary(self) -> str:
        parts = [str(self.http), self.rpc_status, self.fcm_error, *self.fields[:1]]
        return " ".join(part for part in parts if part)

    @classmethod
    def read(cls, response: httpx.Response) -> _Answer:
        body = response.text
        fcm_error = rpc_status = None
        fields: list[str] = []
        texts: list[str] = []
        quota: list[Any] = []
        error = _json_object(body).get("error")
        if isinstance(error, dict):
            rpc_status = _str_or_none(error.get("status"))
            texts.append(str(error.get("message", "")))
            details = error.get("details")
            for detail in details if isinstance(details, list) else []:
                if not isinstance(detail, dict):
                    continue
                kind = detail.get("@type")
                if kind == FCM_ERROR_TYPE:
                    fcm_error = _str_or_none(detail.get("errorCode"))
                elif kind == BAD_REQUEST_TYPE:
                    violations = detail.get("fieldViolations")
                    for violation in violations if isinstance(violations, list) else []:
                        if isinstance(violation, dict):
                            fields.append(str(violation.get("field", "")))
                            texts.append(str(violation.get("description", "")))
                elif kind == QUOTA_FAILURE_TYPE:
                    quota.append(detail.get("violations"))
        return cls(
            http=response.status_code,
            fcm_error=fcm_error,
            rpc_status=rpc_status,
            fields=tuple(fields),
            text=" ".join(texts).lower(),
            quota=json.dumps(quota).lower() if quota else "",
            body=body,
        )

    def fits(self, row: _Row) -> bool:
        if row.reason != self.reason:
            return False
        if row.field is not None and not any(f.startswith(row.field) for f in self.fields):
            return False
        if row.text is not None and row.text not in self.text:
            return False
        return row.quota is None or row.quota in self.quota


def status_for(answer: httpx.Response) -> tuple[Status, Next, str]:
    """The status, next step and raw summary of one FCM error answer (not a 2xx)."""
    read = _Answer.read(answer)
    for row in _ROWS:
        if read.fits(row):
            status = _STATUS[row.code]
            return status, _NEXT[status.action], read.summary
    # Unmapped (status-codes.md section 5): NONE, raw kept; a 5xx was still a transport
    # failure and is worth a retry, anything else is final; the token is never dropped.
    next_ = Next.RETRY if read.http >= 500 else Next.MESSAGE
    return NONE, next_, f"{read.summary} {read.body[:RAW_BODY_CHARS]}"


# -- service account and access tokens ----------------------------------------------------


@dataclass(frozen=True, repr=False)
class _ServiceAccount:
    client_email: str
    private_key: rsa.RSAPrivateKey
    private_key_id: str | None
    token_uri: str
    project_id: str | None


def _read_service_account(value: Any) -> _ServiceAccount:
    """Parse and check the ``service_account`` setting; ConfigError names what is wrong."""
    where = "fcm: setting 'service_account'"
    hint = "; set it to the JSON key file of a Firebase service account"
    info: Any = value
    if isinstance(value, str | bytes):
        try:
            info = json.loads(value)
        except ValueError as exc:
            # The message leaves the document out: it holds a private key.
            line = getattr(exc, "lineno", "?")
            raise ConfigError(f"{where} is not valid JSON (line {line}){hint}") from None
    if not isinstance(info, Mapping):
        raise ConfigError(f"{where} must be a JSON object{hint}")
    if info.get("type") != "service_account":
        raise ConfigError(f"{where}: 'type' must be 'service_account'{hint}")
    for field in ("client_email", "private_key", "token_uri"):
        if not isinstance(info.get(field), str) or not info[field]:
            raise ConfigError(f"{where}: field {field!r} is missing{hint}")
    token_uri = info["token_uri"]
    if not token_uri.startswith(("https://", "http://")):
        raise ConfigError(f"{where}: field 'token_uri' is not an http(s) URL")
    try:
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{where}: field 'private_key' is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{where}: field 'private_key' is not an RSA key")
    project_id = info.get("project_id")
    key_id = info.get("private_key_id")
    return _ServiceAccount(
        client_email=info["client_email"],
        private_key=key,
        private_key_id=key_id if isinstance(key_id, str) and key_id else None,
        token_uri=token_uri,
        project_id=project_id if isinstance(project_id, str) and project_id else None,
    )


@dataclass(frozen=True, slots=True)
class _AuthFailure:
    """Why no access token could be had; every send waiting on it gets this outcome."""

    status: Status
    next: Next
    raw: str
    retry_after_s: float | None = None

    def outcome(self, delivery_id: int) -> Outcome:
        return Outcome(delivery_id, self.status, self.next, self.raw, self.retry_after_s)


class _AuthFailed(Exception):
    """A token fetch failed; raised again to the sends that waited for it."""

    def __init__(self, failure: _AuthFailure) -> None:
        super().__init__(failure.raw)
        self.failure = failure


async def _fetch_access_token(
    account: _ServiceAccount, http: httpx.AsyncClient
) -> tuple[str, float]:
    """A new access token for ``account`` and how long to use it: until five minutes before
    it expires, or half its life when that is shorter. Raises _AuthFailed."""
    now = int(time.time())
    claims = {
        "iss": account.client_email,
        "scope": SCOPE,
        "aud": account.token_uri,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_S,
    }
    headers = {"kid": account.private_key_id} if account.private_key_id else None
    assertion = jwt.encode(claims, account.private_key, algorithm="RS256", headers=headers)
    form = {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
    try:
        response = await http.post(account.token_uri, data=form)
    except httpx.TransportError as exc:
        # An unreachable auth endpoint is a transport failure (status-codes.md N16).
        raw = f"token endpoint: {type(exc).__name__}"
        raise _AuthFailed(_AuthFailure(_STATUS[90000010], Next.RETRY, raw)) from exc

    body = _json_object(response.text)
    token, lifetime = body.get("access_token"), body.get("expires_in")
    if response.status_code == 200 and isinstance(token, str) and token:
        life = float(lifetime) if isinstance(lifetime, int | float) else 3600.0
        return token, life - min(REFRESH_MARGIN_S, life / 2)
    raise _AuthFailed(_token_failure(response, body))


def _token_failure(response: httpx.Response, body: Mapping[str, Any]) -> _AuthFailure:
    """What a refusal from the token endpoint means (status-codes.md N14, N16)."""
    error = _str_or_none(body.get("error"))
    raw = f"token endpoint: {response.status_code} {error or response.text[:RAW_BODY_CHARS]}"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if response.status_code in (400, 401) and error in ("invalid_grant", "invalid_client"):
        # The account is unknown, disabled, or its key or clock is wrong.
        return _AuthFailure(_STATUS[90000401], Next.CONFIG, raw)
    if response.status_code >= 500:
        return _AuthFailure(_STATUS[90000010], Next.RETRY, raw, retry_after)
    # Unmapped; still about our credentials, so surfaced rather than tried per message.
    return _AuthFailure(NONE, Next.CONFIG, raw, retry_after)


# -- the message --------------------------------------------------------------------------


def build_message(item: Outbound, now: datetime | None = None) -> dict[str, Any]:
    """The v1 request body for one delivery.

    ``data`` carries the extras (all values strings); a silent delivery is data-only (no
    ``notification``, NORMAL priority). ``android.ttl`` is the time left until
    ``expires_at``, in whole seconds, within 0..2,419,200.
    """
    now = now or datetime.now(UTC)
    expires_at = item.expires_at
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    ttl = min(MAX_TTL_S, max(0, math.floor((expires_at - now).total_seconds())))
    message: dict[str, Any] = {"token": item.token}
    if not item.silent:
        message["notification"] = {"title": item.title, "body": item.content}
    data = {str(key): str(value) for key, value in item.extras.items()}
    if data:
        message["data"] = data
    message["android"] = {"ttl": f"{ttl}s", "priority": "NORMAL" if item.silent else "HIGH"}
    return {"message": message}


def _payload_size(message: Mapping[str, Any]) -> int:
    """Bytes of the notification and data parts as compact UTF-8 JSON (what FCM limits)."""
    parts = {key: message[key] for key in ("notification", "data") if key in message}
    if not parts:
        return 0
    return len(json.dumps(parts, separators=(",", ":"), ensure_ascii=False).encode())


def _local_refusal(item: Outbound, body: Mapping[str, Any]) -> Outcome | None:
    """What FCM would refuse for sure, answered without a request (reference 2.7 end)."""
    message = body["message"]
    if not item.token:
        return _local(item, 90000001, "local check: no registration token")
    for key in message.get("data", {}):
        if key in RESERVED_DATA_KEYS or key.lower().startswith("google"):
            return _local(item, 90000008, f"local check: data key {key!r} is reserved")
    size = _payload_size(message)
    if size > MAX_PAYLOAD_BYTES:
        return _local(
            item, 90000007, f"local check: payload is {size} bytes, at most {MAX_PAYLOAD_BYTES}"
        )
    return None


def _local(item: Outbound, code: int, raw: str) -> Outcome:
    status = _STATUS[code]
    return Outcome(item.delivery_id, status, _NEXT[status.action], raw)


# -- the channel --------------------------------------------------------------------------


class FCMChannel(VendorChannel):
    """FCM HTTP v1 for one app (one Firebase project)."""

    name = "fcm"
    max_batch = 500
    secret_keys = frozenset({"service_account"})

    def __init__(
        self,
        account: _ServiceAccount,
        project_id: str,
        *,
        base_url: str = FCM_URL,
        http: httpx.AsyncClient | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``http``: a client to share (its HTTP/2 setting and limits are then the caller's);
        without one the channel opens its own and closes it in :meth:`close`.
        ``max_in_flight``: most sends on the wire at once. ``clock``: monotonic seconds, for
        the access token's expiry."""
        self.project_id = project_id
        self.send_url = f"{base_url.rstrip('/')}/v1/projects/{quote(project_id, safe='')}"
        self.send_url += "/messages:send"
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            http2=True,
            timeout=DEFAULT_TIMEOUT_S,
            limits=httpx.Limits(
                max_connections=max_in_flight, max_keepalive_connections=max_in_flight
            ),
        )
        self._in_flight = asyncio.Semaphore(max_in_flight)  # sends on the wire at once
        # One token request at a time; the sends that waited for a failed one, or hold the
        # token it was to replace, share its failure.
        self._tokens = TokenCache(
            lambda: _fetch_access_token(account, self._http), forget_on_failure=True, clock=clock
        )

    @classmethod
    def create(cls, config: ChannelConfig, http: httpx.AsyncClient | None = None) -> FCMChannel:
        account = _read_service_account(config.require("service_account"))
        project_id = config.values.get("project_id") or account.project_id
        if not isinstance(project_id, str) or not project_id:
            raise ConfigError(
                "fcm: setting 'project_id' is missing and the service account names none; "
                "set it with `openmps channel set APP fcm project_id=...`"
            )
        base_url = config.values.get("base_url") or config.base_url or FCM_URL
        if not isinstance(base_url, str) or not base_url.startswith(("https://", "http://")):
            raise ConfigError(f"fcm: setting 'base_url' is not an http(s) URL: {base_url!r}")
        return cls(account, project_id, base_url=base_url, http=http)

    async def send(self, batch: Sequence[Outbound]) -> list[Outcome]:
        if len(batch) > self.max_batch:
            raise ValueError(f"fcm: {len(batch)} deliveries in one batch; most is {self.max_batch}")
        now = datetime.now(UTC)
        return list(await asyncio.gather(*(self._send_one(item, now) for item in batch)))

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def _send_one(self, item: Outbound, now: datetime) -> Outcome:
        body = build_message(item, now)
        refused = _local_refusal(item, body)
        if refused is not None:
            return refused
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

        async with self._in_flight:
            try:
                access = await self._tokens.current()
                response = await self._post(content, access)

                # FCM refused the access token itself: one new token, one more try.
                if isinstance(response, httpx.Response) and _token_refused(response):
                    access = await self._tokens.renew(access)
                    response = await self._post(content, access)
            except _AuthFailed as failed:
                return failed.failure.outcome(item.delivery_id)

        if isinstance(response, Exception):
            # No answer at all (refused, reset, timed out): reference 4.2, after retries.
            return Outcome(item.delivery_id, _STATUS[90000010], Next.RETRY, type(response).__name__)
        if response.status_code == 200:
            name = _json_object(response.text).get("name")
            if isinstance(name, str) and name:
                return Outcome(item.delivery_id, ACKED, Next.DONE)
            raw = f"200 without a message name: {response.text[:RAW_BODY_CHARS]}"
            return Outcome(item.delivery_id, NONE, Next.MESSAGE, _redact(raw, item.token))
        status, next_, raw = status_for(response)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return Outcome(item.delivery_id, status, next_, _redact(raw, item.token), retry_after)

    async def _post(self, content: bytes, access_token: str) -> httpx.Response | Exception:
        headers = {
            "Authorization": f"Bearer {access_token}",
            "Content-Type": "application/json; charset=UTF-8",
        }
        try:
            return await self._http.post(self.send_url, content=content, headers=headers)
        except httpx.TransportError as exc:
            return exc


# -- helpers --------------------------------------------------------------------------------


def _token_refused(response: httpx.Response) -> bool:
    """A 401 without an FcmError detail: FCM refused our access token (reference 5.2 RA)."""
    return response.status_code == 401 and _Answer.read(response).fcm_error is None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _redact(raw: str, token: str) -> str:
    """Outcomes keep the vendor's words, never the device token."""
    return redact(raw, [token], lambda _: "<token>")
