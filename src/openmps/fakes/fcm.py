"""A stand-in for Firebase Cloud Messaging (HTTP v1) and Google's OAuth2 token endpoint.

Behaviour follows ``shared/reference/vendors-apns-fcm-webpush.md`` section 2 (2.8 is the
spec). One plain-HTTP server on 127.0.0.1 answers:

- ``POST /token``: the JWT-bearer grant. The RS256 assertion is verified against the service
  accounts registered with :meth:`FakeFCM.add_service_account` (or made by
  :meth:`FakeFCM.new_service_account`); the answer is an opaque access token that expires
  after ``token_lifetime_s``. Refusals use the OAuth shape (``invalid_grant`` ...).
- ``POST /v1/projects/{project}/messages:send``: checks, in the vendor's order, the bearer
  token, the project, the JSON and its schema, exactly one target, string ``data`` values,
  reserved ``data`` keys, ``android.ttl``, the 4096-byte payload limit (2048 for topics) and
  the registration token; then answers ``{"name": "projects/.../messages/..."}``. Errors have
  the v1 shape: ``error.code``, ``error.status``, ``error.message`` and ``error.details`` with
  an FcmError ``errorCode`` where FCM gives one.

Faults: ``fake.scenario`` holds :class:`Rule` objects per registration token (or for all);
:meth:`FakeFCM.error` builds the vendor's answer for an FcmError code. ``fake.token_scenario``
does the same for the token endpoint (its rules are answered as given). A send rule's delay
and action come first; its scripted answer is given only to a request that passes the
bearer-token and project checks (an unauthenticated request gets the 401 FCM would give, and
still counts against the rule's ``times``). Everything received is in ``fake.received``;
the HTTP control endpoints of :mod:`openmps.fakes.base` are served on the same port.

The texts of a few answers were never captured from the real service (reference 6.5: invalid
TTL, reserved data key, QuotaFailure contents); those are ours and marked so below.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openmps.fakes.base import (
    Received,
    Recorder,
    Rule,
    Scenario,
    ServedFake,
    UvicornRunner,
    control_routes,
    drop_connection,
    rule_response,
)

__all__ = ["GOOGLE_TOKEN_AUDIENCE", "FakeFCM", "payload_size"]

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # google-auth's constant `aud`
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/firebase.messaging",
        "https://www.googleapis.com/auth/cloud-platform",
    }
)
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
QUOTA_FAILURE_TYPE = "type.googleapis.com/google.rpc.QuotaFailure"

MAX_PAYLOAD_BYTES = 4096  # notification + data of one message
MAX_TOPIC_PAYLOAD_BYTES = 2048
MAX_TTL_S = 2_419_200  # four weeks
MAX_ASSERTION_LIFETIME_S = 3600
MAX_CLOCK_SKEW_S = 300

_REQUEST_KEYS = frozenset({"message", "validate_only"})
_MESSAGE_KEYS = frozenset(
    {
        "name",
        "token",
        "topic",
        "condition",
        "fid",
        "data",
        "notification",
        "android",
        "apns",
        "webpush",
        "fcm_options",
    }
)
_TARGETS = ("token", "topic", "condition", "fid")
_NOTIFICATION_KEYS = frozenset({"title", "body", "image"})
_ANDROID_KEYS = frozenset(
    {
        "collapse_key",
        "priority",
        "ttl",
        "restricted_package_name",
        "data",
        "notification",
        "fcm_options",
        "direct_boot_ok",
        "bandwidth_constrained_ok",
        "restricted_satellite_ok",
    }
)
_PRIORITIES = frozenset({"NORMAL", "HIGH"})
_TTL = re.compile(r"^(\d+)(\.\d{1,9})?s$")
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_:\-.]{1,4096}$")

# Texts FCM and Google's front end give (reference 2.5); not stable, but what clients see.
_MSG_NO_CREDENTIAL = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential."
)
_MSG_BAD_CREDENTIAL = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential."
)
_MSG_BAD_TOKEN = "The registration token is not a valid FCM registration token"
_MSG_NO_TARGET = "Recipient of the message is not set."
_MSG_TOO_BIG = "Android message is too big"  # as observed in a real 400 (reference search)
_MSG_INVALID = "Request contains an invalid argument."

# errorCode -> (HTTP status, google.rpc status, message, has an FcmError detail).
# UNAUTHENTICATED and PERMISSION_DENIED are not FcmError codes: they are the front end's
# answers for a refused OAuth token and for missing IAM rights, with no details at all.
_PRESETS: dict[str, tuple[int, str, str, bool]] = {
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", _MSG_INVALID, True),
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found.", True),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch", True),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for sending messages.", True),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable.", True),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered.", True),
    "THIRD_PARTY_AUTH_ERROR": (
        401,
        "UNAUTHENTICATED",
        "Auth error from APNS or Web Push Service",
        True,
    ),
    "APNS_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service", True),
    "UNSPECIFIED_ERROR": (500, "UNKNOWN", "Unknown error.", True),
    "UNAUTHENTICATED": (401, "UNAUTHENTICATED", _MSG_BAD_CREDENTIAL, False),
    "PERMISSION_DENIED": (
        403,
        "PERMISSION_DENIED",
        "Permission 'cloudmessaging.messages.create' denied on resource (or it may not exist).",
        False,
    ),
}
_QUOTA_DEFAULT_RETRY_AFTER_S = 60  # the ErrorCode page's minimum initial backoff


def _error_body(
    http: int,
    status: str,
    message: str,
    *,
    fcm_error: str | None = None,
    details: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """A google.rpc.Status rendered as JSON, FcmError detail first when there is one."""
    all_details: list[dict[str, Any]] = []
    if fcm_error is not None:
        all_details.append({"@type": FCM_ERROR_TYPE, "errorCode": fcm_error})
    all_details.extend(details)
    error: dict[str, Any] = {"code": http, "message": message, "status": status}
    if all_details:
        error["details"] = all_details
    return {"error": error}


def _bad_request(field: str, description: str) -> dict[str, Any]:
    return {
        "@type": BAD_REQUEST_TYPE,
        "fieldViolations": [{"field": field, "description": description}],
    }


class _Refusal(Exception):
    """An answer other than success, raised from deep inside the checks."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _invalid(
    message: str, *, field: str | None = None, fcm_error: bool = True, bare_detail: bool = False
) -> _Refusal:
    """400 INVALID_ARGUMENT; a BadRequest detail names ``field`` when given."""
    details: tuple[dict[str, Any], ...] = ()
    if field is not None:
        details = (_bad_request(field, message),)
    elif bare_detail:
        details = ({"@type": BAD_REQUEST_TYPE},)
    body = _error_body(
        400,
        "INVALID_ARGUMENT",
        message,
        fcm_error="INVALID_ARGUMENT" if fcm_error else None,
        details=details,
    )
    return _Refusal(400, body)


def _unknown_name(name: str, where: str) -> _Refusal:
    text = f"Invalid JSON payload received. Unknown name {json.dumps(name)} at '{where}': "
    return _invalid(text + "Cannot find field.", field=where, fcm_error=False)


def payload_size(message: Mapping[str, Any]) -> int:
    """Bytes of the message's notification and data parts, as compact UTF-8 JSON."""
    parts: dict[str, Any] = {}
    for key in ("notification", "data"):
        if key in message:
            parts[key] = message[key]
    android = message.get("android")
    if isinstance(android, Mapping):
        for key in ("notification", "data"):
            if key in android:
                parts[f"android.{key}"] = android[key]
    if not parts:
        return 0
    return len(json.dumps(parts, separators=(",", ":"), ensure_ascii=False).encode())


@dataclass
class _Account:
    client_email: str
    public_key: rsa.RSAPublicKey
    project_id: str | None  # None: may send for any project
    disabled: bool = False


@dataclass
class _Grant:
    client_email: str
    project_id: str | None
    expires_at: float  # time.monotonic()


@dataclass
class _Device:
    project_id: str | None = None  # None: any project may send to it
    package: str | None = None
    unregistered: bool = False


class FakeFCM(ServedFake):
    """FCM HTTP v1 and its OAuth2 token endpoint on one local port.

    ``token_lifetime_s`` is how long an issued access token stays valid (FCM: 3599 s).
    Registration tokens are accepted unless they look garbled or were marked with
    :meth:`unregister` or :meth:`register_token`.
    """

    def __init__(self, *, token_lifetime_s: float = 3599.0) -> None:
        self.token_lifetime_s = token_lifetime_s
        self.scenario = Scenario()  # rules for the send endpoint, by registration token
        self.token_scenario = Scenario()  # rules for the token endpoint (key None)
        self.received = Recorder()  # every request to /token and messages:send
        self.app = Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/v1/projects/{project}/messages:send", self._send, methods=["POST"]),
                *control_routes(self.scenario, self.received),
            ]
        )
        self.runner = UvicornRunner(self.app, "FCM", graceful_shutdown_s=2)
        self._accounts: dict[str, _Account] = {}  # by client_email
        self._grants: dict[str, _Grant] = {}  # by access token
        self._devices: dict[str, _Device] = {}  # by registration token
        self._next_message = 0

    # -- life cycle (start, stop: ServedFake) ------------------------------------------------

    @property
    def url(self) -> str:
        """Where the fake listens, e.g. ``http://127.0.0.1:41234`` (the send base URL)."""
        host = self.runner.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.runner.port or 0}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    # -- accounts, tokens, devices --------------------------------------------------------

    def add_service_account(
        self, client_email: str, public_key_pem: str | bytes, project_id: str | None = None
    ) -> None:
        """Accept assertions signed by this key for ``client_email``.

        With ``project_id`` the account may only send for that project (403 otherwise).
        """
        pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("a service account key must be RSA")
        self._accounts[client_email] = _Account(client_email, key, project_id)

    def disable_service_account(self, client_email: str) -> None:
        """The token endpoint answers ``invalid_client`` for this account from now on."""
        self._accounts[client_email].disabled = True

    def new_service_account(
        self,
        project_id: str,
        *,
        register: bool = True,
        key: rsa.RSAPrivateKey | None = None,
    ) -> tuple[dict[str, str], rsa.RSAPrivateKey]:
        """A new service account: its JSON (``token_uri`` pointing here) and its RSA key.

        Registered at once unless ``register`` is false (for an account the fake must
        refuse). ``key`` reuses an existing key instead of generating one (2048-bit RSA
        generation takes a noticeable fraction of a second).
        """
        if key is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        account_id = secrets.token_hex(4)
        info = {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": f"fcm-{account_id}@{project_id}.iam.gserviceaccount.com",
            "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "universe_domain": "googleapis.com",
        }
        if register:
            public_pem = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            self.add_service_account(info["client_email"], public_pem, project_id)
        return info, key

    def reset(self) -> None:
        """Back to a fresh fake: no rules, nothing received, no marked devices.

        Service accounts and issued access tokens stay, so a fake shared by many tests
        keeps working for channels that were set up against it.
        """
        self.scenario.clear()
        self.token_scenario.clear()
        self.received.clear()
        self._devices.clear()

    def expire_tokens(self) -> None:
        """Every access token issued so far is expired from now on."""
        for grant in self._grants.values():
            grant.expires_at = 0.0

    def register_token(
        self, token: str, *, project_id: str | None = None, package: str | None = None
    ) -> None:
        """Bind a registration token to a project (403 SENDER_ID_MISMATCH from any other)
        and an app package (400 for another ``restricted_package_name``)."""
        self._devices[token] = _Device(project_id, package)

    def unregister(self, token: str) -> None:
        """Sends to this registration token get 404 UNREGISTERED."""
        self._devices.setdefault(token, _Device()).unregistered = True

    @property
    def token_requests(self) -> int:
        """How many requests reached the token endpoint (kept in ``received``)."""
        return sum(1 for item in self.received.items if item.path == "/token")

    @property
    def send_requests(self) -> list[Received]:
        return [item for item in self.received.items if item.path != "/token"]

    # -- scripted answers -----------------------------------------------------------------

    @staticmethod
    def error(
        error_code: str,
        status: int | None = None,
        *,
        message: str | None = None,
        field: str | None = None,
        quota: str | None = None,
        retry_after: float | str | None = None,
        times: int | None = None,
        delay_s: float = 0.0,
    ) -> Rule:
        """The answer FCM gives for ``error_code``, as a :class:`Rule`.

        ``error_code`` is an FcmError code (``UNREGISTERED``, ``INVALID_ARGUMENT``,
        ``SENDER_ID_MISMATCH``, ``QUOTA_EXCEEDED``, ``UNAVAILABLE``, ``INTERNAL``,
        ``THIRD_PARTY_AUTH_ERROR``, ``APNS_AUTH_ERROR``, ``UNSPECIFIED_ERROR``) or one of the
        front end's detail-less refusals ``UNAUTHENTICATED`` (401) and ``PERMISSION_DENIED``
        (403). ``status`` overrides the HTTP status. ``field`` adds a BadRequest detail naming
        that field (``message.token``, ``message.android.ttl``, ...); ``quota`` adds a
        QuotaFailure detail for ``device``, ``topic`` or ``project`` (texts ours, reference
        6.5). ``retry_after`` sets the Retry-After header (QUOTA_EXCEEDED: 60 s unless
        given).
        """
        if error_code not in _PRESETS:
            raise ValueError(f"unknown FCM error code {error_code!r}; one of {sorted(_PRESETS)}")
        http, rpc_status, default_message, has_detail = _PRESETS[error_code]
        text = message
        if text is None:
            text = _MSG_BAD_TOKEN if field == "message.token" else default_message
        details: list[dict[str, Any]] = []
        if field is not None:
            details.append(_bad_request(field, text))
        if quota is not None:
            violation = {"subject": quota, "description": f"{quota.capitalize()} rate exceeded."}
            details.append({"@type": QUOTA_FAILURE_TYPE, "violations": [violation]})
        http = status if status is not None else http
        body = _error_body(
            http,
            rpc_status,
            text,
            fcm_error=error_code if has_detail else None,
            details=tuple(details),
        )
        if retry_after is None and error_code == "QUOTA_EXCEEDED":
            retry_after = _QUOTA_DEFAULT_RETRY_AFTER_S
        headers: dict[str, str] = {}
        if retry_after is not None:
            if isinstance(retry_after, float) and retry_after.is_integer():
                retry_after = int(retry_after)
            headers["Retry-After"] = str(retry_after)
        return Rule(status=http, body=body, headers=headers, times=times, delay_s=delay_s)

    # -- the token endpoint ---------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        raw = (await request.body()).decode("utf-8", "replace")
        form = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        self.received.add(Received(request.url.path, dict(request.headers), form))

        rule = self.token_scenario.take(None)
        if rule is not None:
            answer = await self._act(request, rule)
            if answer is not None:
                return answer
        try:
            return JSONResponse(self._grant(form))
        except _Refusal as refusal:
            return JSONResponse(refusal.body, refusal.status)

    def _grant(self, form: Mapping[str, str]) -> dict[str, Any]:
        if form.get("grant_type") != JWT_BEARER_GRANT:
            raise _oauth_error(400, "unsupported_grant_type", "Invalid grant_type.")
        assertion = form.get("assertion", "")
        if not assertion:
            raise _oauth_error(400, "invalid_request", "Missing required parameter: assertion")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _oauth_error(400, "invalid_grant", "Invalid JWT Signature.") from None
        if header.get("alg") != "RS256":
            raise _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")

        account = self._accounts.get(str(claims.get("iss", "")))
        if account is None:
            raise _oauth_error(400, "invalid_grant", "Invalid grant: account not found")
        if account.disabled:
            raise _oauth_error(401, "invalid_client", "The OAuth client was disabled.")
        try:
            jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                audience=[self.token_uri, GOOGLE_TOKEN_AUDIENCE],
                options={"require": ["iss", "aud", "iat", "exp"], "verify_exp": False},
                leeway=MAX_CLOCK_SKEW_S,
            )
        except jwt.InvalidSignatureError:
            raise _oauth_error(400, "invalid_grant", "Invalid JWT Signature.") from None
        except jwt.InvalidAudienceError:
            raise _oauth_error(
                400, "invalid_grant", "Invalid JWT: Failed audience check."
            ) from None
        except jwt.PyJWTError as exc:
            raise _oauth_error(400, "invalid_grant", f"Invalid JWT: {exc}") from None

        now = time.time()
        iat, exp = float(claims["iat"]), float(claims["exp"])
        if iat > now + MAX_CLOCK_SKEW_S or exp < now or exp - iat > MAX_ASSERTION_LIFETIME_S:
            raise _oauth_error(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim.",
            )
        scopes = set(str(claims.get("scope", "")).split())
        if not scopes & FCM_SCOPES:
            raise _oauth_error(400, "invalid_scope", "No FCM scope was requested.")

        access_token = "ya29.fake-" + secrets.token_urlsafe(32)
        expires_at = time.monotonic() + self.token_lifetime_s
        self._grants[access_token] = _Grant(account.client_email, account.project_id, expires_at)
        return {
            "access_token": access_token,
            "expires_in": int(self.token_lifetime_s),
            "token_type": "Bearer",
        }

    # -- the send endpoint ----------------------------------------------------------------

    async def _send(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.received.add(Received(request.url.path, dict(request.headers), body))

        registration = _target_token(body)
        rule = self.scenario.take(registration)
        if rule is not None:
            answer = await self._act(request, rule, answer_later=True)
            if answer is not None:
                return answer
        try:
            self._check_auth(request, request.path_params["project"])
            if rule is not None and rule.status is not None:
                return rule_response(rule, text_type="text/html")
            return JSONResponse(self._accept(request.path_params["project"], body))
        except _Refusal as refusal:
            return JSONResponse(refusal.body, refusal.status)

    def _check_auth(self, request: Request, project: str) -> None:
        authorization = request.headers.get("authorization", "")
        scheme, _, credential = authorization.partition(" ")
        if not authorization:
            body = _error_body(401, "UNAUTHENTICATED", _MSG_NO_CREDENTIAL)
            raise _Refusal(401, body)
        grant = self._grants.get(credential) if scheme.lower() == "bearer" else None
        if grant is None or grant.expires_at <= time.monotonic():
            raise _Refusal(401, _error_body(401, "UNAUTHENTICATED", _MSG_BAD_CREDENTIAL))
        if grant.project_id is not None and grant.project_id != project:
            text = (
                "Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{project}' "
                "(or it may not exist)."
            )
            raise _Refusal(403, _error_body(403, "PERMISSION_DENIED", text))

    def _accept(self, project: str, body: Any) -> dict[str, Any]:
        """Validate one send request in FCM's order; the success answer or a _Refusal."""
        if not isinstance(body, dict):
            raise _invalid(
                "Invalid JSON payload received. Unexpected token.", field="", fcm_error=False
            )
        for key in body:
            if key not in _REQUEST_KEYS:
                raise _unknown_name(key, "")
        message = body.get("message")
        if not isinstance(message, dict):
            raise _invalid(_MSG_NO_TARGET)
        _check_message(message)

        token = message.get("token")
        if isinstance(token, str):
            self._check_device(project, token, message)
        if body.get("validate_only") is True:
            return {"name": f"projects/{project}/messages/fake_message_id"}
        self._next_message += 1
        stamp = int(time.time() * 1_000_000)
        suffix = f"{self._next_message:08x}{secrets.token_hex(4)}"
        return {"name": f"projects/{project}/messages/0:{stamp}%{suffix}"}

    def _check_device(self, project: str, token: str, message: Mapping[str, Any]) -> None:
        if not _TOKEN_CHARS.match(token):
            raise _invalid(_MSG_BAD_TOKEN, field="message.token")
        device = self._devices.get(token)
        if device is None:
            return
        if device.unregistered:
            body = _error_body(
                404, "NOT_FOUND", "Requested entity was not found.", fcm_error="UNREGISTERED"
            )
            raise _Refusal(404, body)
        if device.project_id is not None and device.project_id != project:
            body = _error_body(
                403, "PERMISSION_DENIED", "SenderId mismatch", fcm_error="SENDER_ID_MISMATCH"
            )
            raise _Refusal(403, body)
        android = message.get("android")
        package = android.get("restricted_package_name") if isinstance(android, dict) else None
        if package is not None and device.package is not None and package != device.package:
            raise _invalid(
                "The registration token does not belong to the restricted package name.",
                field="message.android.restricted_package_name",
            )

    # -- scenario -------------------------------------------------------------------------

    async def _act(
        self, request: Request, rule: Rule, *, answer_later: bool = False
    ) -> Response | None:
        """Play a rule's delay and action; its answer now, or None to go on judging.

        With ``answer_later`` a status rule is answered by the caller after the auth check.
        """
        if rule.delay_s > 0:
            await asyncio.sleep(rule.delay_s)
        if rule.action == "expire_auth":
            self.expire_tokens()
        elif rule.action == "close":
            return await drop_connection(request, abort=True)
        elif rule.action is not None:
            raise ValueError(f"fake FCM cannot act out {rule.action!r}")
        if rule.status is not None and not answer_later:
            return rule_response(rule, text_type="text/html")
        return None


def _oauth_error(status: int, error: str, description: str) -> _Refusal:
    """The token endpoint's refusals: RFC 6749 shape, not google.rpc (reference 2.2)."""
    return _Refusal(status, {"error": error, "error_description": description})


def _target_token(body: Any) -> str | None:
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, dict):
            token = message.get("token")
            if isinstance(token, str):
                return token
    return None


def _check_message(message: Mapping[str, Any]) -> None:
    """Schema, target, data, ttl and size checks, in the order FCM applies them."""
    for key in message:
        if key not in _MESSAGE_KEYS:
            raise _unknown_name(key, "message")
    targets = [name for name in _TARGETS if message.get(name) not in (None, "")]
    if not targets:
        raise _invalid(_MSG_NO_TARGET)
    if len(targets) > 1:
        raise _invalid(
            "Invalid value at 'message' (oneof), oneof field 'target' is already set. "
            f"Cannot set '{targets[1]}'",
            field="message",
            fcm_error=False,
        )
    for name in targets:
        if not isinstance(message[name], str):
            raise _type_error(f"message.{name}", "TYPE_STRING", message[name])

    _check_string_map(message.get("data"), "message.data")
    notification = message.get("notification")
    if notification is not None:
        _check_notification(notification, "message.notification")
    android = message.get("android")
    if android is not None:
        _check_android(android)
    android_data = android.get("data") if isinstance(android, dict) else None
    for path, data in (
        ("message.data", message.get("data")),
        ("message.android.data", android_data),
    ):
        for key in data or {}:
            if key in ("from", "gcm") or key.lower().startswith("google"):
                # Text ours: the real description was never captured (reference 6.5).
                raise _invalid(f"Invalid data key {key!r}: the key is reserved.", field=path)

    if isinstance(android, dict) and "ttl" in android:
        match = _TTL.match(android["ttl"])
        if match is None:
            raise _type_error(
                "message.android.ttl",
                "type.googleapis.com/google.protobuf.Duration",
                android["ttl"],
            )
        if int(match.group(1)) > MAX_TTL_S:
            # Text ours (reference 6.5); the field path is what clients decide by.
            raise _invalid(
                f"TTL must be between 0 and {MAX_TTL_S} seconds.", field="message.android.ttl"
            )

    topical = targets[0] in ("topic", "condition")
    limit = MAX_TOPIC_PAYLOAD_BYTES if topical else MAX_PAYLOAD_BYTES
    if payload_size(message) > limit:
        raise _invalid(_MSG_TOO_BIG, bare_detail=True)


def _type_error(field: str, kind: str, value: Any) -> _Refusal:
    text = f"Invalid value at '{field}' ({kind}), {json.dumps(value)}"
    return _invalid(text, field=field, fcm_error=False)


def _check_string_map(value: Any, field: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _type_error(field, "TYPE_MESSAGE", value)
    for index, item in enumerate(value.values()):
        if not isinstance(item, str):
            raise _type_error(f"{field}[{index}].value", "TYPE_STRING", item)


def _check_notification(value: Any, field: str) -> None:
    if not isinstance(value, dict):
        raise _type_error(field, "TYPE_MESSAGE", value)
    if field == "message.notification":
        for key, item in value.items():
            if key not in _NOTIFICATION_KEYS:
                raise _unknown_name(key, field)
            if not isinstance(item, str):
                raise _type_error(f"{field}.{key}", "TYPE_STRING", item)


def _check_android(android: Any) -> None:
    if not isinstance(android, dict):
        raise _type_error("message.android", "TYPE_MESSAGE", android)
    for key in android:
        if key not in _ANDROID_KEYS:
            raise _unknown_name(key, "message.android")
    priority = android.get("priority")
    if priority is not None and (
        not isinstance(priority, str) or priority.upper() not in _PRIORITIES
    ):
        raise _type_error("message.android.priority", "TYPE_ENUM", priority)
    if "ttl" in android and not isinstance(android["ttl"], str):
        raise _type_error(
            "message.android.ttl", "type.googleapis.com/google.protobuf.Duration", android["ttl"]
        )
    _check_string_map(android.get("data"), "message.android.data")
    if android.get("notification") is not None:
        _check_notification(android["notification"], "message.android.notification")
