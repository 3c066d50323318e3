"""A fake vivo push gateway (PUSH-UPS-API v2.9) on a real loopback socket.

It follows ``shared/reference/vendors-android-cn.md`` section 4: a signed ``/message/auth``
(MD5 of appId + appKey + timestamp + appSecret) hands out ``authToken`` values that expire;
``/message/send`` (one target) and ``/message/saveListPayload`` + ``/message/pushToList``
(2 to 1000 regIds) take JSON with the ``authToken`` header, check the fields and their limits,
and answer ``{"result", "desc", ...}`` with HTTP 200, business errors included.

Ways to make it misbehave, besides sending it bad requests:

- ``fake.scenario.set(FakeVivo.error(code), token=reg_id)``: answer vivo's body for ``code``.
  In ``pushToList`` a 10302 rule becomes that regId's ``invalidUsers`` entry (status 1) and
  any other code answers the whole request.
- ``FakeVivo.invalid_user(status)``: accepted, but the target is reported in
  ``invalidUser`` / ``invalidUsers`` with that status (1 unknown, 2 uninstalled or
  notifications off, 3 offline 90 days, 4 not a test device).
- ``Rule(action="expire_auth")``, ``Rule(status=500)``, ``Rule(delay_s=...)``;
  ``fake.auth_scenario`` for ``/message/auth`` (over HTTP: token ``"__auth__"``).
- regIds starting ``invalid-`` (10302), ``quota-`` (10070), ``busy-`` (10072) or ``boom-``
  (HTTP 500) answer so without any scenario (reference 7).

vivo publishes no codes for some field errors (content empty, bad notifyType or timeToLive,
missing requestId, auth timestamp and sign); those answers use the codes in ``MESSAGES``
marked "ours". Not acted out: ``Rule(action="close")``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

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
    "PUSH_TO_LIST_PATH",
    "SAVE_LIST_PAYLOAD_PATH",
    "SEND_PATH",
    "FakeVivo",
]

AUTH_PATH = "/message/auth"
SEND_PATH = "/message/send"
SAVE_LIST_PAYLOAD_PATH = "/message/saveListPayload"
PUSH_TO_LIST_PATH = "/message/pushToList"

OK_DESC = "请求成功"
PARAM_ERROR = 10099  # ours: a field vivo checks but publishes no code for

# vivo's meaning of its codes (reference 4.4); "ours" marks numbers the reference lacks.
MESSAGES: dict[int, str] = {
    0: OK_DESC,
    10000: "权限认证失败",  # permission authentication failed
    10040: "已达到资源上限，请稍后再试",
    10050: "alias和regId不能都为空",
    10055: "title不能为空",
    10056: "title长度不能超过40个字符",
    10057: "content不能为空",  # ours (vivo's number for it is not in the reference)
    10058: "content长度不能超过100个字符",
    10066: "自定义键值对不能超过10个",
    10067: "自定义键值对不合法",
    10070: "发送总量超过限制",
    10071: "发送时间不在允许范围内",
    10072: "推送速度过快，请稍后再试",
    10094: "appId与鉴权appId不一致",
    10101: "消息内容审核不通过",
    10102: "vivo服务器未知异常",
    10103: "推送内容包含敏感信息",
    10104: "请发送正式消息，不要发送测试内容",
    10110: "请配置商业消息发送频率",
    10200: "appId不能为空",
    10201: "appKey不能为空",
    10202: "timestamp不合法",  # ours: "further 1020x for timestamp/sign" in the reference
    10203: "sign不合法",  # ours, same
    10252: "批量消息体超过当日限制",
    10254: "全量推送超过当日次数",
    10302: "regId不合法",
    10303: "requestId已存在",
    PARAM_ERROR: "参数不合法",  # ours
}

# regId prefixes that answer vivo's code without a scenario (and boom-: HTTP 500).
TRIGGERS: dict[str, int] = {"invalid-": 10302, "quota-": 10070, "busy-": 10072}

TITLE_MAX = 40  # width: a CJK character counts 2
CONTENT_MAX = 100  # same
ALIAS_MAX = 40
CUSTOM_PAIRS_MAX = 10
CUSTOM_CHARS_MAX = 1024  # all keys and values together
TTL_MIN_S = 60
TTL_MAX_S = 7 * 24 * 3600
URL_MAX = 1000  # skipType 2
SKIP_CONTENT_MAX = 1024  # skipType 3, 4
CALLBACK_MAX = 128
CALLBACK_PARAM_MAX = 64
REQUEST_ID_MAX = 64
LIST_MIN, LIST_MAX = 2, 1000
TIMESTAMP_WINDOW_MS = 10 * 60 * 1000

_TEST_WORD = re.compile(r"(?<![A-Za-z])test(?![A-Za-z])", re.IGNORECASE)


class _Problem(Exception):
    """A request vivo refuses with ``code``."""

    def __init__(self, code: int, detail: str | None = None) -> None:
        super().__init__(detail or MESSAGES.get(code, ""))
        self.code = code
        self.detail = detail or MESSAGES.get(code, "")


def width(text: str) -> int:
    """Length as vivo counts it: wide (CJK) characters count 2, others 1."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def looks_like_test(content: str) -> bool:
    """vivo 10104: formal content may not be only digits, only English letters, only symbols
    or symbols and digits, nor contain "test", braces or brackets. Whitespace counts as a
    symbol, so an English sentence is not "only letters"."""
    if _TEST_WORD.search(content) or any(c in content for c in "{}[]"):
        return True
    kinds = set()
    for c in content:
        if c.isascii() and c.isdigit():
            kinds.add("digit")
        elif c.isascii() and c.isalpha():
            kinds.add("letter")
        elif unicodedata.category(c)[0] in "PSZ" or c.isspace():
            kinds.add("symbol")
        else:
            kinds.add("other")  # CJK and other scripts
    return bool(kinds) and (kinds == {"letter"} or kinds <= {"digit", "symbol"})


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Problem(PARAM_ERROR, f"{name} must be a string")
    return value


def _int(body: Mapping[str, Any], name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Problem(PARAM_ERROR, f"{name} must be a number")
    return value


def check_payload(body: Mapping[str, Any]) -> None:
    """The notification fields shared by send and saveListPayload; _Problem when refused."""
    title, content = _text(body, "title"), _text(body, "content")
    if not title.strip():
        raise _Problem(10055)
    if width(title) > TITLE_MAX:
        raise _Problem(10056)
    if not content.strip():
        raise _Problem(10057)
    if width(content) > CONTENT_MAX:
        raise _Problem(10058)
    if _int(body, "notifyType") not in (1, 2, 3, 4):
        raise _Problem(PARAM_ERROR, "notifyType must be 1, 2, 3 or 4")
    ttl = _int(body, "timeToLive", 24 * 3600)
    if not TTL_MIN_S <= ttl <= TTL_MAX_S:
        raise _Problem(PARAM_ERROR, f"timeToLive must be {TTL_MIN_S}..{TTL_MAX_S} s")

    skip = _int(body, "skipType")
    if skip not in (1, 2, 3, 4):
        raise _Problem(PARAM_ERROR, "skipType must be 1, 2, 3 or 4")
    skip_content = _text(body, "skipContent")
    if skip != 1 and not skip_content:
        raise _Problem(PARAM_ERROR, "skipContent is required for skipType 2, 3 and 4")
    if len(skip_content) > (URL_MAX if skip == 2 else SKIP_CONTENT_MAX):
        raise _Problem(PARAM_ERROR, "skipContent is too long")
    if _int(body, "networkType", -1) not in (-1, 1):
        raise _Problem(PARAM_ERROR, "networkType must be -1 or 1")
    if _int(body, "classification", 0) not in (0, 1):
        raise _Problem(PARAM_ERROR, "classification must be 0 or 1")
    push_mode = _int(body, "pushMode", 0)
    if push_mode not in (0, 1):
        raise _Problem(PARAM_ERROR, "pushMode must be 0 or 1")

    custom = body.get("clientCustomMap")
    if custom is not None:
        if not isinstance(custom, dict):
            raise _Problem(10067)
        if len(custom) > CUSTOM_PAIRS_MAX:
            raise _Problem(10066)
        if not all(isinstance(v, str) for v in custom.values()):
            raise _Problem(10067)
        if sum(len(k) + len(v) for k, v in custom.items()) > CUSTOM_CHARS_MAX:
            raise _Problem(10067)
    extra = body.get("extra")
    if extra is not None:
        if not isinstance(extra, dict):
            raise _Problem(PARAM_ERROR, "extra must be an object")
        if len(str(extra.get("callback", ""))) > CALLBACK_MAX:
            raise _Problem(PARAM_ERROR, "extra.callback is too long")
        if len(str(extra.get("callback.param", ""))) > CALLBACK_PARAM_MAX:
            raise _Problem(PARAM_ERROR, "extra.callback.param is too long")
    if push_mode == 0 and looks_like_test(content):
        raise _Problem(10104)


def _answer(code: int, **extra: Any) -> JSONResponse:
    return JSONResponse({"result": code, "desc": MESSAGES.get(code, ""), **extra})


def _invalid_status(rule: Rule | None) -> int | None:
    """The invalidUser status a rule gives its target in a list push, if any."""
    if rule is None or rule.status != 200 or not isinstance(rule.body, dict):
        return None
    if rule.body.get("result") == 10302:
        return 1
    user = rule.body.get("invalidUser")
    if isinstance(user, dict) and isinstance(user.get("status"), int):
        return int(user["status"])
    return None


class FakeVivo(IssuedTokens, ServedFake):
    """The vivo gateway, with scenario control and a record of what it received."""

    def __init__(
        self,
        *,
        app_id: int = 10004,
        app_key: str = "fake-vivo-app-key",
        app_secret: str = "fake-vivo-app-secret",
        token_ttl_s: float = 24 * 3600.0,
    ) -> None:
        self.app_id = app_id  # accepted appId (an integer on the wire)
        self.app_key = app_key  # accepted appKey
        self.app_secret = app_secret  # the secret the auth sign is checked with
        self.token_ttl_s = token_ttl_s  # life of an issued authToken
        self.scenario = Scenario()  # rules for send requests, by regId
        self.auth_scenario = Scenario()  # rules for /message/auth
        self.received = Recorder()  # every request, auth included, oldest first
        self._tokens: dict[str, float] = {}  # authToken -> expiry (monotonic)
        self._lists: dict[str, dict[str, Any]] = {}  # saveListPayload taskId -> body
        self._request_ids: set[str] = set()  # requestIds of accepted requests
        self.app = Starlette(
            routes=[
                Route(AUTH_PATH, self._auth, methods=["POST"]),
                Route(SEND_PATH, self._send, methods=["POST"]),
                Route(SAVE_LIST_PAYLOAD_PATH, self._save_list_payload, methods=["POST"]),
                Route(PUSH_TO_LIST_PATH, self._push_to_list, methods=["POST"]),
                *control_routes(
                    self.scenario,
                    self.received,
                    error=self.error,
                    auth_scenario=self.auth_scenario,
                ),
            ]
        )
        self.runner = UvicornRunner(self.app, "vivo")

    # -- building answers -----------------------------------------------------------------

    @staticmethod
    def error(code: int, desc: str | None = None) -> Rule:
        """vivo's exact answer for ``code``: HTTP 200, ``{"result", "desc"}``."""
        return Rule(status=200, body={"result": code, "desc": desc or MESSAGES.get(code, "")})

    @staticmethod
    def invalid_user(status: int) -> Rule:
        """Accepted, but the target comes back in ``invalidUser(s)`` with ``status``."""
        return Rule(
            status=200,
            body={"result": 0, "desc": OK_DESC, "invalidUser": {"userid": "", "status": status}},
        )

    def sign(self, timestamp: int) -> str:
        """The auth sign vivo expects for ``timestamp`` (ms)."""
        payload = f"{self.app_id}{self.app_key}{timestamp}{self.app_secret}".strip()
        return hashlib.md5(payload.encode()).hexdigest()

    # -- request plumbing -----------------------------------------------------------------

    async def _json(self, request: Request) -> dict[str, Any]:
        """Record the request and return its JSON object body."""
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.received.add(Received(request.url.path, dict(request.headers), body))
        if not isinstance(body, dict):
            raise _Problem(PARAM_ERROR, "the body must be a JSON object")
        return body

    async def _act(self, rules: Iterable[Rule | None]) -> Response | None:
        """Act out what the rules ask before judging: expiry, delay, HTTP faults."""
        return await act_before_judging(rules, self.expire_tokens)

    def _check_token(self, request: Request, body: Mapping[str, Any]) -> None:
        token = request.headers.get("authToken", "")
        expiry = self._tokens.get(token)
        if not token or expiry is None or expiry <= time.monotonic():
            raise _Problem(10000)
        if body.get("appId") != self.app_id:
            raise _Problem(10094)

    def _check_request_id(self, body: Mapping[str, Any]) -> str:
        request_id = _text(body, "requestId")
        if not request_id or len(request_id) > REQUEST_ID_MAX:
            raise _Problem(PARAM_ERROR, f"requestId is required, at most {REQUEST_ID_MAX} chars")
        if request_id in self._request_ids:
            raise _Problem(10303)
        return request_id

    @staticmethod
    def _target_answer(target: str, rule: Rule | None) -> Rule | None:
        """The rule for one target, or the answer its regId triggers."""
        return target_answer(target, rule, TRIGGERS, FakeVivo.error)

    # -- endpoints ------------------------------------------------------------------------

    async def _auth(self, request: Request) -> Response:
        try:
            body = await self._json(request)
            early = await self._act([self.auth_scenario.take(None)])
            if early is not None:
                return early
            app_id, timestamp = body.get("appId"), body.get("timestamp")
            if app_id in (None, "") or app_id != self.app_id:
                raise _Problem(10200)
            if not body.get("appKey") or body.get("appKey") != self.app_key:
                raise _Problem(10201)
            if not isinstance(timestamp, int) or isinstance(timestamp, bool):
                raise _Problem(10202)
            if abs(timestamp - int(time.time() * 1000)) > TIMESTAMP_WINDOW_MS:
                raise _Problem(10202)
            sign = body.get("sign")
            if not isinstance(sign, str) or not secrets.compare_digest(sign, self.sign(timestamp)):
                raise _Problem(10203)
        except _Problem as problem:
            return _answer(problem.code)
        token = secrets.token_hex(20)
        self._tokens[token] = time.monotonic() + self.token_ttl_s
        return _answer(0, authToken=token)

    async def _send(self, request: Request) -> Response:
        try:
            body = await self._json(request)
            reg_id, alias = _text(body, "regId"), _text(body, "alias")
            target = reg_id or alias
            rule = self.scenario.take(target or None)
            early = await self._act([rule])
            if early is not None:
                return early
            self._check_token(request, body)
            if not target:
                raise _Problem(10050)
            if not reg_id and len(alias) > ALIAS_MAX:
                raise _Problem(PARAM_ERROR, f"alias is longer than {ALIAS_MAX} characters")
            check_payload(body)
            request_id = self._check_request_id(body)

            answer = self._target_answer(target, rule)
            task_id = secrets.token_hex(6)
            if answer is not None:
                status = _invalid_status(answer)
                if status is None or answer.body.get("result") != 0:
                    return rule_response(answer)
                self._request_ids.add(request_id)
                user = {"userid": target, "status": status}
                return _answer(0, taskId=task_id, invalidUser=user)
            self._request_ids.add(request_id)
            return _answer(0, taskId=task_id)
        except _Problem as problem:
            return JSONResponse({"result": problem.code, "desc": problem.detail})

    async def _save_list_payload(self, request: Request) -> Response:
        try:
            body = await self._json(request)
            early = await self._act([self.scenario.take(None)])
            if early is not None:
                return early
            self._check_token(request, body)
            check_payload(body)
            task_id = secrets.token_hex(6)
            self._lists[task_id] = dict(body)
            return _answer(0, taskId=task_id)
        except _Problem as problem:
            return JSONResponse({"result": problem.code, "desc": problem.detail})

    async def _push_to_list(self, request: Request) -> Response:
        try:
            body = await self._json(request)
            reg_ids = body.get("regIds")
            if not isinstance(reg_ids, list) or not all(isinstance(r, str) for r in reg_ids):
                raise _Problem(PARAM_ERROR, "regIds must be a list of strings")
            rules = [self.scenario.take(reg_id) for reg_id in reg_ids]
            early = await self._act(rules)
            if early is not None:
                return early
            self._check_token(request, body)
            if not LIST_MIN <= len(reg_ids) <= LIST_MAX:
                raise _Problem(PARAM_ERROR, f"regIds must hold {LIST_MIN}..{LIST_MAX} ids")
            if _text(body, "taskId") not in self._lists:
                raise _Problem(PARAM_ERROR, "taskId is unknown")
            request_id = self._check_request_id(body)

            # 10302 and invalid_user rules stay with their regId; other answers are the call's.
            invalid: list[dict[str, Any]] = []
            for reg_id, rule in zip(reg_ids, rules, strict=True):
                answer = self._target_answer(reg_id, rule)
                if answer is None:
                    continue
                status = _invalid_status(answer)
                if status is None:
                    return rule_response(answer)
                invalid.append({"userId": reg_id, "status": status})
            self._request_ids.add(request_id)
            extra: dict[str, Any] = {"requestId": request_id}
            if invalid:
                extra["invalidUsers"] = invalid
            return _answer(0, **extra)
        except _Problem as problem:
            return JSONResponse({"result": problem.code, "desc": problem.detail})
