"""A fake Xiaomi MiPush server API, served on a loopback port.

What it acts out (``shared/reference/vendors-android-cn.md`` section 2 and 7):

- ``POST /v3/message/regid`` (and ``/v2/message/regid``), form-urlencoded, authorised by
  ``Authorization: key=<AppSecret>``; a missing or unknown secret answers ``21301``.
- Validation of the form: ``registration_id`` (comma list, at most 1000), the package name,
  ``pass_through``, ``title`` (not blank, under 50 characters) and ``description`` (not blank,
  under 128) for notifications, ``notify_type``, ``notify_id``, ``time_to_live``, and a
  4096-byte ``payload`` [unconfirmed cap].
- Every business outcome is HTTP 200 with ``code`` in the JSON body: ``{"result": "ok",
  "code": 0, ...}`` or ``{"result": "error", "code": N, "description": ..., "reason": ...}``.
- Regids starting ``invalid-`` (or with an ``invalid_target`` rule) are unknown targets: listed
  in ``data.bad_regids`` of a success answer [unconfirmed field], or, when every regid of the
  request is unknown, answered ``20301``.

Xiaomi has no access token, so the shared ``expire_auth`` action changes nothing here: the
request is judged as usual. Rules are looked up per regid; a batch request takes each regid's
own rule once and the shared rule (``token=None``) once.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
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

__all__ = ["FakeXiaomi"]

MAX_REGIDS = 1000  # per call (some libraries cap at 100; the reference says 1000)
MAX_TITLE = 49  # "length < 50"
MAX_DESCRIPTION = 127  # "length < 128"
MAX_PAYLOAD_BYTES = 4096  # [unconfirmed]
INVALID_TARGET = 20301

# Rule action of this fake, beside the shared ones ("close", "expire_auth").
INVALID_TARGET_ACTION = "invalid_target"  # this regid is unknown (bad_regids / 20301)

# Code -> description, for the answers this fake can give (our wording, in English).
_DESCRIPTIONS: dict[int, str] = {
    -1: "unknown error",
    100: "parameter must not be empty",
    10001: "system error",
    10002: "service suspended",
    10003: "remote service error",
    10004: "IP not allowed",
    10005: "the resource needs appkey authorization",
    10006: "appkey missing",
    10007: "unsupported mime type",
    10008: "parameter error",
    10009: "system busy",
    10010: "job expired",
    10011: "RPC error",
    10012: "illegal request",
    10013: "invalid user",
    10014: "API access of the app is restricted",
    10016: "required parameter missing",
    10017: "illegal parameter value",
    10018: "request too large",
    10020: "API not found",
    10021: "HTTP method not supported",
    10022: "IP request rate over limit",
    10023: "user request rate over limit",
    10024: "user request rate over limit for this API",
    10025: "illegal callback URL",
    10026: "app blacklisted",
    10027: "app calls the API too often",
    10028: "app calls the API too many times in total",
    10029: "invalid device",
    20301: "no valid target",
    21301: "authentication failed",
    22000: "illegal app",
    22001: "app does not exist",
    22002: "app revoked",
    22003: "app update failed",
    22004: "app information missing",
    22005: "illegal app name",
    22006: "illegal app id",
    22007: "illegal app key",
    22008: "illegal app secret",
    22020: "illegal app description",
    22021: "app not authorized by the user",
    22022: "illegal package name",
    22100: "illegal notification data format",
    22101: "too many notifications",
    22102: "sending the notification failed",
    22103: "illegal notify id",
}

_INT = re.compile(r"^-?\d+$")


def _trace_id() -> str:
    return "Xcm" + uuid.uuid4().hex[:20]


def _error_body(code: int, reason: str | None = None) -> dict[str, Any]:
    description = _DESCRIPTIONS.get(code, "error")
    return {
        "result": "error",
        "trace_id": _trace_id(),
        "code": code,
        "description": description,
        "reason": reason or description,
    }


def _check(form: Mapping[str, str], regids: Sequence[str]) -> tuple[int, str] | None:
    """The first validation failure of a regid send, as (code, reason), or None."""
    if not regids:
        return 10016, "registration_id is required"
    if len(regids) > MAX_REGIDS:
        return 10017, f"at most {MAX_REGIDS} registration ids per call"
    for name in ("pass_through", "notify_type", "notify_id", "time_to_live", "time_to_send"):
        value = form.get(name)
        if value is not None and not _INT.match(value):
            return 10017, f"{name} must be an integer"
    if form.get("pass_through", "0") not in ("0", "1"):
        return 10017, "pass_through must be 0 or 1"
    notify_type = int(form.get("notify_type", "-1"))
    if notify_type != -1 and not 0 <= notify_type <= 7:
        return 10017, "notify_type must be -1 or a mask of 1, 2 and 4"
    if int(form.get("time_to_live", "0")) < 0:
        return 10017, "time_to_live must not be negative"
    if form.get("pass_through", "0") == "0":
        title, description = form.get("title", ""), form.get("description", "")
        if not title.strip():
            return 10017, "title must not be blank"
        if len(title) > MAX_TITLE:
            return 10017, f"title must be shorter than {MAX_TITLE + 1} characters"
        if not description.strip():
            return 10017, "description must not be blank"
        if len(description) > MAX_DESCRIPTION:
            return 10017, f"description must be shorter than {MAX_DESCRIPTION + 1} characters"
    if len(form.get("payload", "").encode("utf-8")) > MAX_PAYLOAD_BYTES:
        return 10018, f"payload is larger than {MAX_PAYLOAD_BYTES} bytes"
    return None


class FakeXiaomi(ServedFake):
    """MiPush server API on a loopback port: ``key=<AppSecret>`` auth, regid sends.

    ``apps`` maps AppSecrets to the package name of their app; None accepts any non-empty
    secret and any package name.
    """

    def __init__(self, apps: Mapping[str, str] | None = None) -> None:
        self.scenario = Scenario()  # rules for send requests, by regid
        self.received = Recorder()  # every request to a vendor path
        self.apps = dict(apps) if apps is not None else None
        self.app = Starlette(
            routes=[
                Route("/v3/message/regid", self._send, methods=["POST"]),
                Route("/v2/message/regid", self._send, methods=["POST"]),
                *control_routes(self.scenario, self.received, error=self.error),
            ]
        )
        self.runner = UvicornRunner(self.app, "Xiaomi")

    # -- answers tests can ask for ---------------------------------------------------------

    @staticmethod
    def error(code: int) -> Rule:
        """The vendor's exact answer for ``code``: HTTP 200 and ``{"result": "error", ...}``.

        20301 is a per-regid verdict: the rule makes its regid(s) unknown targets, listed in
        ``bad_regids`` (or the whole answer is 20301 when every regid of the call is unknown).
        """
        if code == INVALID_TARGET:
            return Rule(action=INVALID_TARGET_ACTION)
        return Rule(status=200, body=_error_body(code))

    @staticmethod
    def http_error(status: int, retry_after_s: float | None = None) -> Rule:
        """A bare HTTP failure (5xx: the SDK returns nothing and retries)."""
        headers = {} if retry_after_s is None else {"Retry-After": f"{retry_after_s:g}"}
        return Rule(status=status, body=f"HTTP {status}", headers=headers)

    # -- vendor endpoint -----------------------------------------------------------------------

    async def _send(self, request: Request) -> Response:
        raw = await request.body()
        form = dict(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))
        self.received.add(Received(request.url.path, dict(request.headers), form))
        regids = list(
            dict.fromkeys(
                r.strip() for r in form.get("registration_id", "").split(",") if r.strip()
            )
        )

        rules = self.scenario.take_many(regids)
        acted = await self._act_out(list(rules.values()), request)
        if acted is not None:
            return acted

        # The AppSecret, then the form.
        scheme, _, secret = request.headers.get("authorization", "").partition("=")
        secret = secret.strip()
        known = self.apps is None or secret in self.apps
        if scheme.strip() != "key" or not secret or not known:
            return JSONResponse(_error_body(21301, "check the AppSecret"))
        packages = [p.strip() for p in form.get("restricted_package_name", "").split(",")]
        if not any(packages):
            return JSONResponse(_error_body(10016, "restricted_package_name is required"))
        if self.apps is not None and self.apps[secret] not in packages:
            return JSONResponse(_error_body(22022, "the package does not belong to this app"))
        failure = _check(form, regids)
        if failure is not None:
            return JSONResponse(_error_body(*failure))

        bad = [
            regid
            for regid in regids
            if regid.startswith("invalid-")
            or (rules.get(regid) is not None and rules[regid].action == INVALID_TARGET_ACTION)
        ]
        if len(bad) == len(regids):
            return JSONResponse(_error_body(INVALID_TARGET, "no valid registration id"))
        data: dict[str, Any] = {"id": "scm" + uuid.uuid4().hex[:22]}
        if bad:
            data["bad_regids"] = ",".join(bad)
        return JSONResponse(
            {
                "result": "ok",
                "trace_id": _trace_id(),
                "code": 0,
                "data": data,
                "description": "成功",
                "info": f"Received push messages for {len(regids) - len(bad)} REGID",
            }
        )

    async def _act_out(self, rules: Sequence[Rule], request: Request) -> Response | None:
        """Apply delay and connection drop; return a rule's own answer, if any."""
        delay = max((rule.delay_s for rule in rules), default=0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        if any(rule.action == "close" for rule in rules):
            return await drop_connection(request)
        # "expire_auth": nothing to expire, Xiaomi has no access token.
        for rule in rules:
            if rule.status is not None or rule.body is not None:
                return rule_response(rule)
        return None
