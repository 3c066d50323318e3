"""A fake OPPO push gateway (OPUSH server API v1) on a real loopback socket.

It follows ``shared/reference/vendors-android-cn.md`` section 3: a signed ``/server/v1/auth``
(SHA-256 of app_key + timestamp + master_secret) hands out ``auth_token`` values that expire;
``unicast``, ``unicast_batch``, ``save_message_content`` and ``broadcast`` take form fields,
check the notification fields and their limits, and answer ``{"code", "message", "data"}``
with HTTP 200, business errors included.

Ways to make it misbehave, besides sending it bad requests:

- ``fake.scenario.set(FakeOPPO.error(code), token=regid)``: answer OPPO's body for ``code``.
  ``errorCode`` 10000 is reported per element in ``unicast_batch`` (and per target in
  ``broadcast``); any other code answers the whole request.
- ``Rule(action="expire_auth")``: every token issued so far expires, then the request is
  judged as usual (code 11). ``Rule(status=500)``: an HTTP 5xx. ``Rule(delay_s=...)``.
- ``fake.auth_scenario``: the same rules for ``/server/v1/auth`` (over HTTP: token
  ``"__auth__"``).
- Registration ids starting ``invalid-`` (10000), ``quota-`` (33, daily quota), ``busy-``
  (-2, flow control) or ``boom-`` (HTTP 500) answer so without any scenario (reference 7).

Not acted out: ``Rule(action="close")``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openmps.fakes.base import (
    IssuedTokens,
    Received,
    Recorder,
    Rule,
    Scenario,
    ServedFake,
    UvicornRunner,
    act_before_judging,
    control_routes,
    rule_response,
    target_answer,
)

__all__ = [
    "AUTH_PATH",
    "BROADCAST_PATH",
    "SAVE_CONTENT_PATH",
    "UNICAST_BATCH_PATH",
    "UNICAST_PATH",
    "FakeOPPO",
]

AUTH_PATH = "/server/v1/auth"
UNICAST_PATH = "/server/v1/message/notification/unicast"
UNICAST_BATCH_PATH = "/server/v1/message/notification/unicast_batch"
SAVE_CONTENT_PATH = "/server/v1/message/notification/save_message_content"
BROADCAST_PATH = "/server/v1/message/notification/broadcast"

# OPPO's own words for its codes (reference 3.6).
MESSAGES: dict[int, str] = {
    -2: "Service in Flow Control",
    -1: "Service Currently Unavailable",
    0: "Success",
    11: "Invalid AuthToken",
    12: "Http Action Not Allowed",
    13: "App Call Limited",
    14: "Invalid App Key",
    15: "Missing App Key",
    16: "Invalid Signature",
    17: "Missing Signature",
    18: "Missing Timestamp",
    19: "Invalid Timestamp",
    20: "Invalid Method",
    21: "Missing Method",
    22: "Missing Version",
    23: "Invalid Version",
    24: "Unsupported Version",
    25: "Invalid Encoding",
    26: "IP Black List",
    27: "Access Denied",
    28: "App Disabled",
    29: "Missing Auth Token",
    30: "Api Permission Denied",
    31: "Data Not Exist",
    32: "Data Duplicate",
    33: "Daily Message Quota Exceeded",
    34: "Daily Picture Upload Quota Exceeded",
    40: "Missing Required Arguments",
    41: "Invalid Arguments",
    51: "Invalid Picture",
    55: "App Call Frequency Limit",
    59: "UseSecondaryAction Permission Denied",
    67: "Category Error",
    10000: "Invalid Registration_id",
}

# Codes OPPO reports per target inside a successful batch answer, not for the whole request.
PER_TARGET_CODES = frozenset({10000})

# Registration id prefixes that answer OPPO's code without a scenario (and boom-: HTTP 500).
TRIGGERS: dict[str, int] = {"invalid-": 10000, "quota-": 33, "busy-": -2}

TITLE_MAX = 50
SUB_TITLE_MAX = 10
# Content cap per style: 1 standard (200 on the current page; older copies say 50), 2 long
# text, 3 big picture.
CONTENT_MAX = {1: 200, 2: 128, 3: 50}
CLICK_ACTION_TYPES = frozenset({0, 1, 2, 4, 5})
CLICK_URL_MAX = 2000
ACTION_PARAMETERS_MAX = 4000
CALLBACK_URL_MAX = 200
CATEGORIES = frozenset(
    {"IM", "ACCOUNT", "TODO", "DEVICE_REMINDER", "ORDER", "SUBSCRIPTION"}  # service
    | {"NEWS", "CONTENT", "MARKETING", "SOCIAL"}  # marketing
)
NOTIFY_LEVELS = frozenset({1, 2, 16})
MAX_TARGETS = 1000
TIMESTAMP_WINDOW_MS = 10 * 60 * 1000  # OPPO's window is not published; vivo's ±10 min used

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


class _Problem(Exception):
    """A request OPPO refuses with ``code``."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _now_ms() -> int:
    return int(time.time() * 1000)


def _snake(key: str) -> str:
    """``clickActionType`` -> ``click_action_type`` (OPPO's example uses camelCase)."""
    return _CAMEL.sub(r"_\1", key).lower()


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise _Problem(41, f"{name} must be a number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    raise _Problem(41, f"{name} must be a number")


def _text(n: Mapping[str, Any], name: str, *, required: bool = False, limit: int) -> str:
    value = n.get(name)
    if value is None or value == "":
        if required:
            raise _Problem(40, f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise _Problem(41, f"{name} must be a string")
    if len(value) > limit:
        raise _Problem(41, f"{name} is longer than {limit} characters")
    return value


def check_notification(raw: Mapping[str, Any], *, broadcast: bool = False) -> dict[str, Any]:
    """The notification with snake_case keys; raise _Problem for what OPPO refuses."""
    n = {_snake(k): v for k, v in raw.items()}
    style = _as_int(n.get("style", 1), "style")
    if style not in CONTENT_MAX:
        raise _Problem(41, "style must be 1, 2 or 3")
    if style == 3 and not broadcast:
        raise _Problem(41, "style 3 (big picture) is for broadcast only")
    if style == 3 and not n.get("big_picture_id"):
        raise _Problem(40, "style 3 needs big_picture_id")
    _text(n, "title", required=True, limit=TITLE_MAX)
    _text(n, "sub_title", limit=SUB_TITLE_MAX)
    _text(n, "content", required=True, limit=CONTENT_MAX[style])

    click = _as_int(n.get("click_action_type", 0), "click_action_type")
    if click not in CLICK_ACTION_TYPES:
        raise _Problem(41, "click_action_type must be 0, 1, 2, 4 or 5")
    _text(n, "click_action_activity", required=click in (1, 4), limit=CLICK_URL_MAX)
    _text(n, "click_action_url", required=click in (2, 5), limit=CLICK_URL_MAX)

    parameters = _text(n, "action_parameters", limit=ACTION_PARAMETERS_MAX)
    if parameters:
        try:
            parsed = json.loads(parameters)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _Problem(41, "action_parameters must be a JSON object string")

    if "off_line_ttl" in n and _as_int(n["off_line_ttl"], "off_line_ttl") < 0:
        raise _Problem(41, "off_line_ttl must not be negative")
    _text(n, "call_back_url", limit=CALLBACK_URL_MAX)
    category = n.get("category")
    if category not in (None, "") and category not in CATEGORIES:
        raise _Problem(67, f"category {category!r} is not one of OPPO's")
    if "notify_level" in n and _as_int(n["notify_level"], "notify_level") not in NOTIFY_LEVELS:
        raise _Problem(67, "notify_level must be 1, 2 or 16")
    return n


def _check_message(message: Any) -> tuple[str, dict[str, Any]]:
    """A unicast ``message`` object: (target, notification); _Problem when refused."""
    if not isinstance(message, dict):
        raise _Problem(41, "message must be a JSON object")
    if _as_int(message.get("target_type"), "target_type") not in (2, 5):
        raise _Problem(41, "target_type must be 2 (registration_id) or 5 (alias)")
    target = message.get("target_value")
    if not isinstance(target, str) or not target:
        raise _Problem(40, "target_value is required")
    notification = message.get("notification")
    if not isinstance(notification, dict):
        raise _Problem(40, "notification is required")
    return target, check_notification(notification)


def _target_of(message: Any) -> str | None:
    if isinstance(message, dict) and isinstance(message.get("target_value"), str):
        return str(message["target_value"])
    return None


def _answer(code: int, data: Any = None, message: str | None = None) -> JSONResponse:
    text = MESSAGES.get(code, "") if message is None else message
    body: dict[str, Any] = {"code": code, "message": text}
    if data is not None:
        body["data"] = data
    return JSONResponse(body)


def _code_of(rule: Rule) -> int | None:
    """The OPPO code a 200 rule answers with, if it is one of OPPO's bodies."""
    if rule.status == 200 and isinstance(rule.body, dict):
        code = rule.body.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    return None


class FakeOPPO(IssuedTokens, ServedFake):
    """The OPPO gateway, with scenario control and a record of what it received."""

    def __init__(
        self,
        *,
        app_key: str = "fake-oppo-app-key",
        master_secret: str = "fake-oppo-master-secret",
        app_id: str = "30000001",
        token_ttl_s: float = 24 * 3600.0,
    ) -> None:
        self.app_key = app_key  # accepted AppKey
        self.master_secret = master_secret  # the secret the auth sign is checked with
        self.app_id = app_id  # prefix of message ids
        self.token_ttl_s = token_ttl_s  # life of an issued auth_token
        self.scenario = Scenario()  # rules for send requests, by registration id
        self.auth_scenario = Scenario()  # rules for /server/v1/auth
        self.received = Recorder()  # every request, auth included, oldest first
        self._tokens: dict[str, float] = {}  # auth_token -> expiry (monotonic)
        self._contents: dict[str, dict[str, Any]] = {}  # save_message_content id -> fields
        self._sent: dict[tuple[str, str], str] = {}  # (app_message_id, target) -> messageId
        self.app = Starlette(
            routes=[
                Route(AUTH_PATH, self._auth, methods=["GET", "POST"]),
                Route(UNICAST_PATH, self._unicast, methods=["GET", "POST"]),
                Route(UNICAST_BATCH_PATH, self._unicast_batch, methods=["GET", "POST"]),
                Route(SAVE_CONTENT_PATH, self._save_content, methods=["GET", "POST"]),
                Route(BROADCAST_PATH, self._broadcast, methods=["GET", "POST"]),
                *control_routes(
                    self.scenario,
                    self.received,
                    error=self.error,
                    auth_scenario=self.auth_scenario,
                ),
            ]
        )
        self.runner = UvicornRunner(self.app, "OPPO")

    # -- building answers -----------------------------------------------------------------

    @staticmethod
    def error(code: int, message: str | None = None) -> Rule:
        """OPPO's exact answer for ``code``: HTTP 200, ``{"code", "message"}``."""
        return Rule(status=200, body={"code": code, "message": message or MESSAGES.get(code, "")})

    def sign(self, timestamp: str) -> str:
        """The auth sign OPPO expects for ``timestamp``."""
        payload = f"{self.app_key}{timestamp}{self.master_secret}".encode()
        return hashlib.sha256(payload).hexdigest()

    # -- request plumbing -----------------------------------------------------------------

    async def _form(self, request: Request) -> dict[str, str]:
        """Record the request and return its form fields; _Problem 25 for bad UTF-8."""
        raw = await request.body()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.received.add(Received(request.url.path, dict(request.headers), raw.hex()))
            raise _Problem(25, "the body is not UTF-8") from None
        form = dict(parse_qsl(text, keep_blank_values=True))
        self.received.add(Received(request.url.path, dict(request.headers), form))
        if request.method != "POST":
            raise _Problem(12, "use POST")
        return form

    def _take(self, targets: Iterable[str | None]) -> list[Rule | None]:
        return [self.scenario.take(target) for target in targets]

    async def _act(self, rules: Iterable[Rule | None]) -> Response | None:
        """Act out what the rules ask before judging: expiry, delay, HTTP faults."""
        return await act_before_judging(rules, self.expire_tokens)

    def _check_token(self, form: Mapping[str, str]) -> None:
        token = form.get("auth_token")
        if not token:
            raise _Problem(29, "auth_token is missing")
        expiry = self._tokens.get(token)
        if expiry is None or expiry <= time.monotonic():
            raise _Problem(11, "auth_token is invalid or expired")

    def _deliver(self, target: str, notification: Mapping[str, Any]) -> str:
        """Accept one message for ``target``; the same app_message_id is kept only once."""
        key = (str(notification.get("app_message_id") or ""), target)
        if key[0] and key in self._sent:
            return self._sent[key]
        message_id = f"{self.app_id}-1-1-{secrets.token_hex(12)}"
        if key[0]:
            self._sent[key] = message_id
        return message_id

    @staticmethod
    def _target_answer(target: str, rule: Rule | None) -> Rule | None:
        """The rule for one target, or the answer its registration id triggers."""
        return target_answer(target, rule, TRIGGERS, FakeOPPO.error)

    # -- endpoints ------------------------------------------------------------------------

    async def _auth(self, request: Request) -> Response:
        try:
            form = await self._form(request)
        except _Problem as problem:
            return _answer(problem.code, message=problem.detail)
        early = await self._act([self.auth_scenario.take(None)])
        if early is not None:
            return early
        app_key, timestamp, sign = (form.get(k, "") for k in ("app_key", "timestamp", "sign"))
        if not app_key:
            return _answer(15)
        if app_key != self.app_key:
            return _answer(14)
        if not sign:
            return _answer(17)
        if not timestamp:
            return _answer(18)
        if not timestamp.isdigit() or abs(int(timestamp) - _now_ms()) > TIMESTAMP_WINDOW_MS:
            return _answer(19)
        if not secrets.compare_digest(sign, self.sign(timestamp)):
            return _answer(16)
        token = secrets.token_hex(20)
        self._tokens[token] = time.monotonic() + self.token_ttl_s
        return _answer(0, {"auth_token": token, "create_time": _now_ms()}, "Success")

    async def _unicast(self, request: Request) -> Response:
        try:
            form = await self._form(request)
            message = _json_field(form, "message")
            target = _target_of(message)
            rules = self._take([target])
            early = await self._act(rules)
            if early is not None:
                return early
            self._check_token(form)
            target, notification = _check_message(message)
            answer = self._target_answer(target, rules[0])
            if answer is not None:
                return rule_response(answer)
            return _answer(0, {"messageId": self._deliver(target, notification)}, "")
        except _Problem as problem:
            return _answer(problem.code, message=problem.detail)

    async def _unicast_batch(self, request: Request) -> Response:
        try:
            form = await self._form(request)
            messages = _json_field(form, "messages")
            if not isinstance(messages, list) or not messages:
                raise _Problem(41, "messages must be a non-empty JSON array")
            if len(messages) > MAX_TARGETS:
                raise _Problem(41, f"at most {MAX_TARGETS} messages per call")
            rules = self._take(_target_of(m) for m in messages)
            early = await self._act(rules)
            if early is not None:
                return early
            self._check_token(form)
            checked = [_check_message(m) for m in messages]

            # A per-target code stays in its element; any other answer is the request's.
            answers = [self._target_answer(t, r) for (t, _), r in zip(checked, rules, strict=True)]
            for answer in answers:
                if answer is not None and _code_of(answer) not in PER_TARGET_CODES:
                    return rule_response(answer)
            data: list[dict[str, Any]] = []
            for (target, notification), answer in zip(checked, answers, strict=True):
                element: dict[str, Any] = {"registrationId": target}
                code = None if answer is None else _code_of(answer)
                if code is None:
                    element["messageId"] = self._deliver(target, notification)
                else:
                    element["messageId"] = f"{self.app_id}-1-1-{secrets.token_hex(12)}"
                    element["errorCode"] = code
                    element["errorMessage"] = MESSAGES.get(code, "")
                data.append(element)
            return _answer(0, data, "")
        except _Problem as problem:
            return _answer(problem.code, message=problem.detail)

    async def _save_content(self, request: Request) -> Response:
        try:
            form = await self._form(request)
            early = await self._act(self._take([None]))
            if early is not None:
                return early
            self._check_token(form)
            fields_ = {k: v for k, v in form.items() if k != "auth_token"}
            notification = check_notification(fields_, broadcast=True)
            key = str(notification.get("app_message_id") or "")
            for message_id, stored in self._contents.items():
                if key and stored.get("app_message_id") == key:
                    return _answer(0, {"message_id": message_id}, "")
            message_id = secrets.token_hex(12)
            self._contents[message_id] = notification
            return _answer(0, {"message_id": message_id}, "")
        except _Problem as problem:
            return _answer(problem.code, message=problem.detail)

    async def _broadcast(self, request: Request) -> Response:
        try:
            form = await self._form(request)
            target_type = _as_int(form.get("target_type"), "target_type")
            values = [v for v in form.get("target_value", "").split(",") if v]
            rules = self._take(values or [None])
            early = await self._act(rules)
            if early is not None:
                return early
            self._check_token(form)
            message_id = form.get("message_id", "")
            if not message_id:
                raise _Problem(40, "message_id is required")
            if message_id not in self._contents:
                raise _Problem(31, "message_id does not exist")
            if target_type not in (1, 2, 5, 6):
                raise _Problem(41, "target_type must be 1, 2, 5 or 6")
            if target_type != 1 and not values:
                raise _Problem(40, "target_value is required")
            if len(values) > MAX_TARGETS:
                raise _Problem(41, f"at most {MAX_TARGETS} targets per call")

            data: dict[str, Any] = {"message_id": message_id, "task_id": secrets.token_hex(8)}
            failed: dict[str, list[str]] = {}
            for target, rule in zip(values, rules, strict=False):
                answer = self._target_answer(target, rule)
                code = None if answer is None else _code_of(answer)
                if answer is not None and code not in PER_TARGET_CODES:
                    return rule_response(answer)
                if code is not None:
                    failed.setdefault(str(code), []).append(target)
            data.update(failed)
            return _answer(0, data, "")
        except _Problem as problem:
            return _answer(problem.code, message=problem.detail)


def _json_field(form: Mapping[str, str], name: str) -> Any:
    value = form.get(name)
    if not value:
        raise _Problem(40, f"{name} is required")
    try:
        return json.loads(value)
    except ValueError:
        raise _Problem(41, f"{name} is not valid JSON") from None
