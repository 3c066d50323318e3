"""A fake Huawei Push Kit gateway (HMS REST API v1), served on a loopback port.

What it acts out (``shared/reference/vendors-android-cn.md`` section 1 and 7):

- ``POST /oauth2/v3/token`` (and the older ``/oauth2/v2/token``): OAuth client credentials,
  form fields ``grant_type``, ``client_id``, ``client_secret``. Answers a bearer token that
  expires after ``token_ttl_s``; a wrong client answers HTTP 401 with the OAuth error shape.
- ``POST /v1/{appId}/messages:send``: bearer auth (401 ``80200001`` for a missing, unknown or
  other-app token, 401 ``80200003`` for an expired one), request validation (400 with
  ``80100001``, ``80100003``, ``80100004``, ``80300008``, ``80300010``), success
  ``{"code": "80000000"}``, and per-token failures: tokens starting ``invalid-`` (or with an
  ``illegal_token`` rule) are listed in a partial answer ``80100000`` whose ``msg`` is a JSON
  string; when every token is bad the answer is ``80300007``.

:meth:`FakeHuawei.error` builds the vendor's answer for any code, including the legacy
codes the current API no longer sends (100-111 from the old NSP gateway, carried in an
``NSP_STATUS`` header; 80000003-80000008 and 80100002 as business bodies), so that a client's
mapping of those raw codes can be exercised. Rules are looked up per device token; a batch
request takes each token's own rule once and the shared rule (``token=None``) once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

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

__all__ = ["FakeHuawei"]

MAX_TOKENS = 1000  # tokens per send request
MAX_MESSAGE_BYTES = 4096  # request body without the token list
MAX_TTL_S = 15 * 24 * 3600  # [unconfirmed] 15 days
SUCCESS = "80000000"
PARTIAL = 80100000
ALL_INVALID = 80300007

# Rule actions of this fake, beside the shared ones ("close", "expire_auth").
ILLEGAL_TOKEN = "illegal_token"  # this token is listed as failed (80100000 / 80300007)

# Answers of the current v1 API: code -> (HTTP status, msg). The HTTP status is the one the
# reference gives where it gives one; 400 otherwise (the client must not depend on it).
_V1_ERRORS: dict[int, tuple[int, str]] = {
    80100001: (400, "Some request parameters are wrong"),
    80100003: (400, "Illegal payload"),
    80100004: (400, "The ttl or expiry time is invalid"),
    80100016: (400, "The message contains sensitive words"),
    80200001: (401, "OAuth authentication error"),
    80200003: (401, "OAuth token expired"),
    80300002: (400, "No permission to send to these tokens"),
    80300007: (400, "All the tokens are invalid"),
    80300008: (400, "The message body is too large"),
    80300010: (400, "The number of tokens must be between 1 and 1000"),
    80600003: (400, "Request error"),
    81000001: (500, "Internal error"),
}

# Legacy per-device results (Push 2.0 business bodies, HTTP 200).
_LEGACY_BUSINESS: dict[int, str] = {
    80000003: "Device offline",
    80000004: "Application uninstalled",
    80000005: "Response timeout",
    80000006: "No route",
    80000007: "Device in another region",
    80000008: "Route incorrect",
    80100002: "Illegal token list",
}

# Legacy NSP gateway failures, sent in an ``NSP_STATUS`` header [unconfirmed transport].
_LEGACY_NSP: dict[int, str] = {
    100: "unknown parameter",
    101: "invalid API_KEY",
    102: "invalid SESSION_KEY",
    106: "no permission for this service",
    107: "client id and secret must be obtained again",
    109: "nsp_ts drift too large",
    110: "internal error",
    111: "service busy",
}

_TTL = re.compile(r"^\d+(\.\d+)?s$")
_CLICK_TYPE_NEEDS: dict[int, tuple[str, ...]] = {
    1: ("intent", "action"),  # one of them
    2: ("url",),
    3: (),
    4: ("rich_resource",),
}


def _request_id() -> str:
    return f"{time.time_ns() // 1000}{uuid.uuid4().int % 1000:03d}"


def _body(code: int | str, msg: str) -> dict[str, str]:
    return {"code": str(code), "msg": msg, "requestId": _request_id()}


def _answer(status: int, body: Any) -> Response:
    return JSONResponse(body, status_code=status)


@dataclass
class _Issued:
    client_id: str
    expires_at: float  # time.monotonic()


def _parse_form(raw: bytes) -> dict[str, str]:
    return dict(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _message_bytes(body: Mapping[str, Any]) -> int:
    """Size of the request body without the token list, the way the 4096-byte cap counts."""
    message = body.get("message")
    if isinstance(message, Mapping):
        body = {**body, "message": {k: v for k, v in message.items() if k != "token"}}
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8"))


def _check_android(android: Any) -> tuple[int, str] | None:
    if not isinstance(android, Mapping):
        return 80100001, "android must be an object"
    ttl = android.get("ttl")
    if ttl is not None:
        if not isinstance(ttl, str) or not _TTL.match(ttl):
            return 80100004, "ttl must be a number of seconds followed by 's'"
        seconds = float(ttl[:-1])
        if seconds <= 0 or seconds > MAX_TTL_S:
            return 80100004, "ttl out of range"
    collapse_key = android.get("collapse_key")
    if collapse_key is not None and (
        not isinstance(collapse_key, int) or not -1 <= collapse_key <= 100
    ):
        return 80100001, "collapse_key must be within [-1, 100]"
    if android.get("urgency") not in (None, "HIGH", "NORMAL"):
        return 80100001, "urgency must be HIGH or NORMAL"
    data = android.get("data")
    if data is not None and not isinstance(data, str):
        return 80100003, "android.data must be a string"
    notification = android.get("notification")
    if notification is None:
        return None
    if not isinstance(notification, Mapping):
        return 80100003, "android.notification must be an object"
    click = notification.get("click_action")
    if not isinstance(click, Mapping):
        return 80100003, "click_action is mandatory in an android notification"
    kind = click.get("type")
    if not isinstance(kind, int) or kind not in _CLICK_TYPE_NEEDS:
        return 80100003, "click_action.type must be 1, 2, 3 or 4"
    needs = _CLICK_TYPE_NEEDS[kind]
    if needs and not any(isinstance(click.get(name), str) and click[name] for name in needs):
        return 80100003, f"click_action type {kind} needs {' or '.join(needs)}"
    if notification.get("style") == 1 and not (
        notification.get("big_title") and notification.get("big_body")
    ):
        return 80100003, "style 1 needs big_title and big_body"
    if notification.get("importance") not in (None, "LOW", "NORMAL", "HIGH"):
        return 80100001, "importance must be LOW, NORMAL or HIGH"
    return None


def _check(body: Any) -> tuple[int, str] | None:
    """The first validation failure of a send request, as (code, msg), or None."""
    if not isinstance(body, Mapping):
        return 80100001, "the request body must be a JSON object"
    if not isinstance(body.get("validate_only", False), bool):
        return 80100001, "validate_only must be a boolean"
    message = body.get("message")
    if not isinstance(message, Mapping):
        return 80100001, "message is missing"
    targets = [name for name in ("token", "topic", "condition") if message.get(name) is not None]
    if len(targets) != 1:
        return 80100001, "exactly one of token, topic and condition must be set"
    if targets == ["token"]:
        tokens = message["token"]
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            return 80100001, "token must be an array of strings"
        if not 1 <= len(tokens) <= MAX_TOKENS:
            return 80300010, f"the number of tokens must be between 1 and {MAX_TOKENS}"
    if _message_bytes(body) > MAX_MESSAGE_BYTES:
        return 80300008, f"the message is larger than {MAX_MESSAGE_BYTES} bytes"
    data = message.get("data")
    if data is not None and not isinstance(data, str):
        return 80100003, "data must be a string"
    if message.get("notification") is not None and not isinstance(message["notification"], Mapping):
        return 80100003, "notification must be an object"
    android = message.get("android")
    if android is not None:
        failure = _check_android(android)
        if failure is not None:
            return failure
    if (
        data is None
        and message.get("notification") is None
        and not (
            isinstance(android, Mapping) and (android.get("notification") or android.get("data"))
        )
    ):
        return 80100003, "the message has neither data nor a notification"
    return None


class FakeHuawei(ServedFake):
    """Huawei Push Kit v1 on a loopback port: OAuth tokens that expire, ``messages:send``.

    ``credentials`` maps OAuth client ids (the app ids) to their secrets; None accepts any
    non-empty pair. ``token_ttl_s`` is the life of an issued access token.
    ``illegal_tokens_style`` picks how a partial answer lists the failed tokens: ``"v1"``
    (``illegal_tokens`` array) or ``"v3"`` (``illegalTokens`` keyed by reason).
    """

    def __init__(
        self,
        credentials: Mapping[str, str] | None = None,
        *,
        token_ttl_s: float = 3600.0,
        illegal_tokens_style: Literal["v1", "v3"] = "v1",
    ) -> None:
        self.scenario = Scenario()  # rules for send requests, by device token
        self.auth_scenario = Scenario()  # rules for the OAuth endpoint (token=None only)
        self.received = Recorder()  # every request to a vendor path, OAuth ones included
        self.credentials = dict(credentials) if credentials is not None else None
        self.token_ttl_s = token_ttl_s
        self.illegal_tokens_style = illegal_tokens_style
        self.issued_tokens: list[str] = []  # access tokens handed out, oldest first
        self._tokens: dict[str, _Issued] = {}
        self.app = Starlette(
            routes=[
                Route("/oauth2/v3/token", self._token, methods=["POST"]),
                Route("/oauth2/v2/token", self._token, methods=["POST"]),
                Route("/v1/{app_id}/messages:send", self._send, methods=["POST"]),
                *control_routes(
                    self.scenario,
                    self.received,
                    error=self.error,
                    auth_scenario=self.auth_scenario,
                ),
            ]
        )
        self.runner = UvicornRunner(self.app, "Huawei")

    # -- answers tests can ask for ---------------------------------------------------------

    @staticmethod
    def error(code: int) -> Rule:
        """The vendor's exact answer for ``code`` (any code; unknown ones get HTTP 400).

        80100000 is a per-token verdict: the rule makes its token(s) fail inside a partial
        answer (or ``80300007`` when every token of the request fails).
        """
        if code == PARTIAL:
            return Rule(action=ILLEGAL_TOKEN)
        if code in _LEGACY_NSP:
            return Rule(
                status=200,
                headers={"NSP_STATUS": str(code)},
                body={"error": _LEGACY_NSP[code]},
            )
        if code in _LEGACY_BUSINESS:
            return Rule(status=200, body=_body(code, _LEGACY_BUSINESS[code]))
        status, msg = _V1_ERRORS.get(code, (400, "Error"))
        return Rule(status=status, body=_body(code, msg))

    @staticmethod
    def http_error(status: int, retry_after_s: float | None = None) -> Rule:
        """A bare HTTP failure: 503 is Huawei's traffic control, 502 a connection error."""
        headers = {} if retry_after_s is None else {"Retry-After": f"{retry_after_s:g}"}
        return Rule(status=status, body={"error": f"HTTP {status}"}, headers=headers)

    def expire_tokens(self) -> None:
        """Every access token issued so far is expired from now on."""
        for issued in self._tokens.values():
            issued.expires_at = 0.0

    # -- vendor endpoints ----------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        form = _parse_form(await request.body())
        self.received.add(Received(request.url.path, dict(request.headers), form))
        rule = self.auth_scenario.take(None)
        if rule is not None:
            acted = await self._act_out([rule], request)
            if acted is not None:
                return acted

        if form.get("grant_type") != "client_credentials":
            return _answer(
                400, {"error": 1101, "error_description": "grant_type must be client_credentials"}
            )
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        known = self.credentials is None or self.credentials.get(client_id) == secret
        if not client_id or not secret or not known:
            return _answer(
                401, {"error": 1101, "sub_error": 20003, "error_description": "invalid client"}
            )

        # Real tokens are base64 and may hold '/' and '+', which JSON may escape.
        token = "CgB" + base64.b64encode(os.urandom(48)).decode()
        self._tokens[token] = _Issued(client_id, time.monotonic() + self.token_ttl_s)
        self.issued_tokens.append(token)
        expires_in = max(1, math.ceil(self.token_ttl_s))
        return _answer(
            200, {"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}
        )

    async def _send(self, request: Request) -> Response:
        raw = await request.body()
        body = _parse_json(raw)
        message = body.get("message") if isinstance(body, Mapping) else None
        tokens_field = message.get("token") if isinstance(message, Mapping) else None
        tokens = (
            [t for t in tokens_field if isinstance(t, str)]
            if isinstance(tokens_field, list)
            else []
        )
        recorded = body if body is not None else raw.decode("utf-8", errors="replace")
        self.received.add(Received(request.url.path, dict(request.headers), recorded))

        rules = self.scenario.take_many(tokens)
        acted = await self._act_out(list(rules.values()), request)
        if acted is not None:
            return acted

        # The bearer token, then the request itself.
        refused = self._check_auth(request, request.path_params["app_id"])
        if refused is not None:
            return refused
        failure = _check(body)
        if failure is not None:
            code, msg = failure
            return _answer(_V1_ERRORS.get(code, (400, ""))[0], _body(code, msg))

        # Per-token verdicts: listed as failed in a partial answer, or all failed.
        bad = [
            token
            for token in dict.fromkeys(tokens)
            if token.startswith("invalid-")
            or (rules.get(token) is not None and rules[token].action == ILLEGAL_TOKEN)
        ]
        if not bad:
            return _answer(200, _body(SUCCESS, "Success"))
        listing = self._illegal_listing(len(set(tokens)) - len(bad), bad, rules)
        if len(bad) == len(set(tokens)):
            return _answer(400, _body(ALL_INVALID, listing))
        return _answer(200, _body(PARTIAL, listing))

    async def _act_out(self, rules: Sequence[Rule], request: Request) -> Response | None:
        """Apply delay, connection drop, token expiry; return a rule's own answer, if any."""
        delay = max((rule.delay_s for rule in rules), default=0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        actions = {rule.action for rule in rules}
        if "close" in actions:
            return await drop_connection(request)
        if "expire_auth" in actions:
            self.expire_tokens()
        for rule in rules:
            if rule.action == ILLEGAL_TOKEN:
                continue  # a per-token verdict; its body names the v3 reason, not an answer
            if rule.status is not None or rule.body is not None:
                return rule_response(rule)
        return None

    def _check_auth(self, request: Request, app_id: str) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        issued = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if issued is None or issued.client_id != app_id:
            code = 80200001
        elif time.monotonic() >= issued.expires_at:
            code = 80200003
        else:
            return None
        status, msg = _V1_ERRORS[code]
        return _answer(status, _body(code, msg))

    def _illegal_listing(
        self, ok: int, bad: Sequence[str], rules: Mapping[str | None, Rule]
    ) -> str:
        """The JSON string Huawei puts in ``msg`` to name the failed tokens."""
        if self.illegal_tokens_style == "v1":
            return json.dumps({"success": ok, "failure": len(bad), "illegal_tokens": list(bad)})
        by_reason: dict[str, list[str]] = {}
        for token in bad:
            rule = rules.get(token)
            # A rule may name the v3 reason in its body ("noRight", ...); default: bad format.
            reason = rule.body if rule is not None and isinstance(rule.body, str) else None
            by_reason.setdefault(reason or "tokenFormatError", []).append(token)
        return json.dumps({"success": ok, "failure": len(bad), "illegalTokens": by_reason})
