"""Xiaomi MiPush channel (server API v3, send by regid), channel key ``xiaomi``.

Auth is the header ``Authorization: key=<AppSecret>`` on every call: there is no token to
refresh, so an auth failure (``21301``) is a configuration error at once.

One call carries one message to up to 1000 regids (``registration_id``, comma separated), so
a batch is grouped by message (title, description, payload, expiry, click effect) and each
group is one call. Field limits are checked before anything is sent: ``title`` under 50
characters, ``description`` under 128 (neither blank) for notifications, a 4096-byte
``payload`` [unconfirmed cap], a message not yet expired. A breach gives that delivery a
MESSAGE outcome whose ``raw`` names the field.

Answers are HTTP 200 with ``code`` in the body (0 is success); a success may name unknown
regids in ``data.bad_regids`` [unconfirmed field], which then get 20301 (DROP). HTTP 5xx and
network failures are 10003 (RETRY). The mapping is the table below
(``shared/reference/status-codes.md``, table 1 and table 2); codes table 2 proposes but the
seed lacks are recorded as (``common``, 99999999) NONE with the vendor code in ``raw``.

Settings: ``app_secret`` (secret), ``package_name``; optional ``base_url`` (also
``ChannelConfig.base_url``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from openmps import statuses
from openmps.channels._common import (
    Judged,
    Verdict,
    as_int,
    code_and_reason,
    parse_retry_after,
    send_by_message,
    text_setting,
    url_setting,
)
from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome, VendorChannel
from openmps.errors import ConfigError
from openmps.statuses import ACKED, NONE, Channel

__all__ = ["XiaomiChannel"]

logger = logging.getLogger(__name__)

API_URL = "https://api.xmpush.xiaomi.com"
SEND_PATH = "/v3/message/regid"
MAX_REGIDS = 1000  # per call; some libraries cap at 100, the reference says 1000
MAX_TITLE = 49  # "length < 50", every character counts 1
MAX_DESCRIPTION = 127  # "length < 128"
MAX_PAYLOAD_BYTES = 4096  # [unconfirmed]
MAX_TTL_MS = 10 * 24 * 3600 * 1000  # private messages; Xiaomi caps public ones at 1 day itself
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
INVALID_TARGET = 20301
_KNOWN_SETTINGS = frozenset({"app_secret", "package_name", "base_url"})
_PACKAGE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")


def _seed(code: int, then: Next) -> Verdict:
    return Verdict(statuses.get(Channel.XIAOMI, code), then)


def _none(then: Next) -> Verdict:
    return Verdict(NONE, then)


_DONE = Verdict(ACKED, Next.DONE)

# Body ``code`` -> verdict. Seed rows: status-codes.md table 1, in the seed's order.
_CODES: dict[int, Verdict] = {
    # 10001 vendor system error. RETRY.
    10001: _seed(10001, Next.RETRY),
    # 10002 vendor service suspended. RETRY (long backoff is the dispatcher's choice).
    10002: _seed(10002, Next.RETRY),
    # 10003 vendor remote service error (also our mapping of HTTP 5xx). RETRY.
    10003: _seed(10003, Next.RETRY),
    # 10004 our IP is not allowed. CONFIG.
    10004: _seed(10004, Next.CONFIG),
    # 10005 the resource needs an authorised appkey. CONFIG.
    10005: _seed(10005, Next.CONFIG),
    # 10008 parameter error. MSG.
    10008: _seed(10008, Next.MESSAGE),
    # 10009 vendor busy. RETRY.
    10009: _seed(10009, Next.RETRY),
    # 10012 illegal request. MSG.
    10012: _seed(10012, Next.MESSAGE),
    # 10013 invalid calling user (our account). CONFIG.
    10013: _seed(10013, Next.CONFIG),
    # 10014 the app's API access is restricted. CONFIG.
    10014: _seed(10014, Next.CONFIG),
    # 10017 parameter value invalid (also our field pre-checks). MSG.
    10017: _seed(10017, Next.MESSAGE),
    # 10018 request too large (also our payload pre-check). MSG.
    10018: _seed(10018, Next.MESSAGE),
    # 10022 per-IP request rate exceeded. RETRY.
    10022: _seed(10022, Next.RETRY),
    # 10023 per-user request rate exceeded. RETRY.
    10023: _seed(10023, Next.RETRY),
    # 10024 per-user rate for this API exceeded. RETRY.
    10024: _seed(10024, Next.RETRY),
    # 10026 app blacklisted. CONFIG.
    10026: _seed(10026, Next.CONFIG),
    # 10027 the app calls this API too often. RETRY.
    10027: _seed(10027, Next.RETRY),
    # 10029 invalid device. DROP.
    10029: _seed(10029, Next.DROP_TOKEN),
    # 21301 authentication failed: the AppSecret; nothing to refresh. CONFIG.
    21301: _seed(21301, Next.CONFIG),
    # 22000 invalid app. CONFIG.
    22000: _seed(22000, Next.CONFIG),
    # 22001 the app does not exist. CONFIG.
    22001: _seed(22001, Next.CONFIG),
    # 22002 the app was revoked. CONFIG.
    22002: _seed(22002, Next.CONFIG),
    # 22003 app update failed. CONFIG.
    22003: _seed(22003, Next.CONFIG),
    # 22004 app information missing. CONFIG.
    22004: _seed(22004, Next.CONFIG),
    # 22005 app name invalid. CONFIG.
    22005: _seed(22005, Next.CONFIG),
    # 22006 app id invalid. CONFIG.
    22006: _seed(22006, Next.CONFIG),
    # 22007 app key invalid. CONFIG.
    22007: _seed(22007, Next.CONFIG),
    # 22008 app secret invalid. CONFIG.
    22008: _seed(22008, Next.CONFIG),
    # 22020 app description invalid. CONFIG.
    22020: _seed(22020, Next.CONFIG),
    # 22021 the user has not authorised the app. CONFIG.
    22021: _seed(22021, Next.CONFIG),
    # 22022 package name invalid: our ``package_name`` setting. CONFIG.
    22022: _seed(22022, Next.CONFIG),
    # 22100 notification data format invalid. MSG.
    22100: _seed(22100, Next.MESSAGE),
    # 22101 too many notifications. RETRY.
    22101: _seed(22101, Next.RETRY),
    # 22102 the vendor failed to send the notification. RETRY.
    22102: _seed(22102, Next.RETRY),
    # 22103 notify id invalid. MSG.
    22103: _seed(22103, Next.MESSAGE),
    # 20301 target invalid (regid unknown): whole call, or a regid in ``bad_regids``. DROP.
    INVALID_TARGET: _seed(INVALID_TARGET, Next.DROP_TOKEN),
    # -- table 2 PROPOSAL codes: not in the seed, so NONE with the code kept in raw ----------
    # -1 unknown error: RETRY, then section 5 (no status of its own: -1 has two meanings).
    -1: _none(Next.RETRY),
    # 100 parameter must not be empty. MSG.
    100: _none(Next.MESSAGE),
    # 10006 appkey missing. CONFIG.
    10006: _none(Next.CONFIG),
    # 10007 unsupported mime type. MSG.
    10007: _none(Next.MESSAGE),
    # 10010 job expired. MSG.
    10010: _none(Next.MESSAGE),
    # 10011 RPC error. RETRY.
    10011: _none(Next.RETRY),
    # 10016 required parameter missing. MSG.
    10016: _none(Next.MESSAGE),
    # 10020 API not found. MSG.
    10020: _none(Next.MESSAGE),
    # 10021 HTTP method not supported. MSG.
    10021: _none(Next.MESSAGE),
    # 10025 callback URL illegal. MSG.
    10025: _none(Next.MESSAGE),
    # 10028 the app's total API calls are too many. RETRY.
    10028: _none(Next.RETRY),
}

_UNAVAILABLE = _seed(10003, Next.RETRY)  # HTTP 5xx or no answer: seed 10003 (table 2)
_THROTTLED = _none(Next.RETRY)  # an undocumented HTTP 429: retried, then section 5
_REFUSED = _none(Next.CONFIG)  # HTTP 401/403/404 without a code: our URL or secret (sec. 5)
_UNKNOWN_FINAL = _none(Next.MESSAGE)  # any other unmapped answer: final, token kept (sec. 5)


def _bad_regids(data: Any) -> set[str]:
    """Unknown regids named in a success answer (``bad_regids``, a list or a comma string)."""
    if not isinstance(data, dict):
        return set()
    found: set[str] = set()
    for key in ("bad_regids", "badRegIds", "bad_regid"):
        value = data.get(key)
        if isinstance(value, str):
            found.update(r.strip() for r in value.split(",") if r.strip())
        elif isinstance(value, list):
            found.update(r for r in value if isinstance(r, str))
    return found


def _judge(
    response: httpx.Response | None, failure: str, regids: Sequence[str]
) -> dict[str, Judged]:
    """Each regid's verdict for one answer (``response`` None: no answer, see ``failure``)."""
    retry = None if response is None else parse_retry_after(response.headers.get("retry-after"))

    def every(verdict: Verdict, raw: str) -> dict[str, Judged]:
        return {regid: Judged(verdict, raw, retry) for regid in regids}

    if response is None:
        return every(_UNAVAILABLE, failure)
    if response.status_code >= 500:
        return every(_UNAVAILABLE, f"HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        body = None
    code = as_int(body.get("code")) if isinstance(body, dict) else None
    if code is None or not isinstance(body, dict):
        if response.status_code == 429:
            return every(_THROTTLED, "HTTP 429")
        if response.status_code in (401, 403, 404):
            return every(_REFUSED, f"HTTP {response.status_code}")
        return every(_UNKNOWN_FINAL, f"HTTP {response.status_code} without a code")

    if code == 0 and body.get("result", "ok") == "ok":
        bad = _bad_regids(body.get("data"))
        bad_verdict = Judged(_CODES[INVALID_TARGET], f"{INVALID_TARGET} bad_regids")
        return {r: bad_verdict if r in bad else Judged(_DONE, "0") for r in regids}
    verdict = _CODES.get(code, _UNKNOWN_FINAL)
    reason = body.get("reason") or body.get("description")
    return every(verdict, code_and_reason(code, reason, regids))


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _field_error(code: int, raw: str) -> Judged:
    return Judged(_CODES[code], raw)


def _form(item: Outbound, package_name: str, now: datetime) -> dict[str, str] | Judged:
    """The form fields (regids left out) for one delivery, or a field-limit verdict."""
    if "," in item.token or not item.token.strip():
        return _field_error(INVALID_TARGET, "registration_id: not a single regid")
    expires_at = item.expires_at
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    # Whole seconds, so that deliveries of one message expiring in the same second group.
    ttl_ms = math.ceil((expires_at - now).total_seconds()) * 1000
    if ttl_ms < 1000:
        return _field_error(10017, "time_to_live: the message expired before sending")

    payload: dict[str, Any] = {"msg_key": item.msg_key, "extras": dict(item.extras)}
    form: dict[str, str] = {
        "restricted_package_name": package_name,
        "pass_through": "1" if item.silent else "0",
        "time_to_live": str(min(ttl_ms, MAX_TTL_MS)),
    }
    if item.silent:
        payload.update(title=item.title, content=item.content)
    else:
        for field, value, most in (
            ("title", item.title, MAX_TITLE),
            ("description", item.content, MAX_DESCRIPTION),
        ):
            if not value.strip():
                return _field_error(10017, f"{field}: must not be blank for a notification")
            if len(value) > most:
                return _field_error(
                    10017, f"{field}: {len(value)} characters; Xiaomi allows at most {most}"
                )
        # Same notify_id replaces the shown notification: one per task keeps tasks apart.
        form.update(
            title=item.title,
            description=item.content,
            notify_type="-1",
            notify_id=str(item.task_id % 2**31),
        )
        if item.uri is None:
            form["extra.notify_effect"] = "1"  # open the launcher activity
        elif item.push_action == 1:
            form.update({"extra.notify_effect": "2", "extra.intent_uri": item.uri})
        else:
            form.update({"extra.notify_effect": "3", "extra.web_uri": item.uri})
    form["payload"] = _compact(payload)
    size = len(form["payload"].encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        return _field_error(
            10018, f"payload: {size} bytes (extras); Xiaomi allows at most {MAX_PAYLOAD_BYTES}"
        )
    return form


class XiaomiChannel(VendorChannel):
    """Xiaomi MiPush for one app: grouped regid sends, mapped answers."""

    name: ClassVar[str] = "xiaomi"
    max_batch: ClassVar[int] = MAX_REGIDS
    secret_keys: ClassVar[frozenset[str]] = frozenset({"app_secret"})

    def __init__(
        self,
        *,
        app_secret: str,
        package_name: str,
        base_url: str = API_URL,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._app_secret = app_secret
        self.package_name = package_name
        self.send_url = base_url.rstrip("/") + SEND_PATH
        self._http = http or httpx.AsyncClient(timeout=TIMEOUT)
        self._own_http = http is None

    def __repr__(self) -> str:
        return f"XiaomiChannel(package_name={self.package_name!r}, send_url={self.send_url!r})"

    @classmethod
    def create(cls, config: ChannelConfig, http: httpx.AsyncClient | None = None) -> XiaomiChannel:
        if config.vendor != cls.name:
            raise ConfigError(f"{cls.name}: given the settings of channel {config.vendor!r}")
        app_secret = text_setting(config, "app_secret")
        package_name = config.require("package_name")
        if not isinstance(package_name, str) or not _PACKAGE.match(package_name.strip()):
            raise ConfigError(
                f"{config.vendor}: setting 'package_name' must be an Android package name "
                "such as com.example.app"
            )

        base_url = API_URL
        override = config.base_url or config.values.get("base_url")
        if override not in (None, ""):
            base_url = url_setting(config, "base_url", override)

        unknown = sorted(set(config.values) - _KNOWN_SETTINGS)
        if unknown:
            logger.warning("xiaomi: ignoring unknown settings %s", unknown)
        return cls(
            app_secret=app_secret,
            package_name=package_name.strip(),
            base_url=base_url,
            http=http,
        )

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def send(self, batch: Sequence[Outbound]) -> list[Outcome]:
        now = datetime.now(UTC)
        return await send_by_message(
            batch, lambda item: _form(item, self.package_name, now), MAX_REGIDS, self._send_group
        )

    async def _send_group(self, form: dict[str, str], group: list[Outbound]) -> list[Outcome]:
        regids = list(dict.fromkeys(item.token for item in group))
        fields = {**form, "registration_id": ",".join(regids)}
        headers = {
            "Authorization": f"key={self._app_secret}",
            "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8",
        }
        response: httpx.Response | None = None
        failure = ""
        try:
            response = await self._http.post(self.send_url, data=fields, headers=headers)
        except httpx.HTTPError as exc:
            failure = f"network: {type(exc).__name__}"
            logger.info("xiaomi: send failed without an answer: %s", type(exc).__name__)
        judged = _judge(response, failure, regids)
        if response is not None:
            logger.debug(
                "xiaomi: %d regids, HTTP %d, %s",
                len(regids),
                response.status_code,
                next(iter(judged.values())).raw,
            )
        return [judged[item.token].outcome(item) for item in group]
