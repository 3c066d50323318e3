"""OPPO push (OPUSH server API v1): signed auth, ``unicast`` and ``unicast_batch`` sends.

Reference: ``shared/reference/vendors-android-cn.md`` section 3; the answer mapping follows
``shared/reference/status-codes.md`` (oppo rows of table 1, table 2, N1, N10, N11, N16).

- Auth: ``/server/v1/auth`` with ``sign = sha256(app_key + timestamp + master_secret)``. The
  ``auth_token`` (valid 24 h) is cached and renewed an hour early; an answer saying it
  expired (code 11, or 29 "missing") renews it once under a lock, so many failing sends cause
  one renewal, and the request is sent once more. The same answer again is final (CONFIG).
- Send: one delivery goes to ``unicast``; more go to ``unicast_batch`` (each delivery keeps its
  own content, up to 1000). Per-element ``errorCode`` values apply to that element only.
- Limits OPPO would refuse are checked before sending (title 50 characters, content 200,
  ``action_parameters`` 4000, click URL 2000). OPPO's code for them (40 missing, 41 invalid)
  is not in the status table, so those outcomes carry NONE, with the code in ``raw``.

Settings: ``app_key``, ``master_secret`` (secret); optional ``channel_id`` (Android 8+
channel), ``category`` and ``notify_level`` (OPPO's message classification).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from openmps import statuses
from openmps.channels._common import AuthFailed, TokenCache, clip, masked, parse_retry_after
from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome, VendorChannel
from openmps.errors import ConfigError
from openmps.statuses import ACKED, NONE, Channel, Status

__all__ = ["ANSWERS", "PRODUCTION_URL", "OPPOChannel"]

logger = logging.getLogger(__name__)

PRODUCTION_URL = "https://api.push.oppomobile.com"
AUTH_PATH = "/server/v1/auth"
UNICAST_PATH = "/server/v1/message/notification/unicast"
UNICAST_BATCH_PATH = "/server/v1/message/notification/unicast_batch"

MAX_BATCH = 1000  # messages per unicast_batch
TITLE_MAX = 50  # characters, each counts 1
# Style 1 content: 200 on OPPO's current page, 50 in older copies (status-codes.md 7.3 #6).
# We check the larger value; if OPPO still says 50, its code 41 comes back as NONE.
CONTENT_MAX = 200
ACTION_PARAMETERS_MAX = 4000  # the JSON string of the extras
CLICK_URL_MAX = 2000
OFFLINE_TTL_MAX_S = 10 * 24 * 3600  # OPPO clamps larger values; we send at most this
TOKEN_RENEW_AFTER_S = 23 * 3600.0  # tokens live 24 h
AUTH_FAILURE_MEMO_S = 1.0  # how long a refused or failed auth call answers for the next ones
HTTP_TIMEOUT_S = 10.0
CHINA = timedelta(hours=8)  # OPPO's daily quotas reset at midnight China time (no DST)
CATEGORIES = frozenset(  # OPPO's message categories; "TODO" is its to-do reminder category
    {"IM", "ACCOUNT", "TODO", "DEVICE_REMINDER", "ORDER", "SUBSCRIPTION"}  # vendor values
    | {"NEWS", "CONTENT", "MARKETING", "SOCIAL"}
)
NOTIFY_LEVELS = frozenset({1, 2, 16})
SETTINGS = frozenset({"app_key", "master_secret", "channel_id", "category", "notify_level"})


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one OPPO code means for a delivery."""

    status: Status  # NONE for a table-2 PROPOSAL code the status table does not hold yet
    next: Next
    next_day: bool = False  # a daily quota: do not retry before midnight, China time
    proposal: bool = False  # status-codes.md table 2 proposes this code (raw says so)


def _seed(code: int, next_: Next) -> Verdict:
    return Verdict(statuses.get(Channel.OPPO, code), next_)


def _proposal(next_: Next, *, next_day: bool = False) -> Verdict:
    return Verdict(NONE, next_, next_day=next_day, proposal=True)


# OPPO body ``code`` -> verdict, from any OPPO call (auth or send); success (0) is handled
# apart and becomes (common, 2), never (common, 0). status-codes.md table 1 (seed) and
# table 2 (PROPOSAL rows: NONE with the raw code until the status table holds them).
ANSWERS: dict[int, Verdict] = {
    -1: _seed(-1, Next.RETRY),  # Service Currently Unavailable
    -2: _seed(-2, Next.RETRY),  # Service in Flow Control
    11: _seed(11, Next.CONFIG),  # Invalid AuthToken: only after one renewal (N1)
    13: _seed(13, Next.RETRY),  # App Call Limited: count or frequency (N10)
    14: _seed(14, Next.CONFIG),  # Invalid App Key
    15: _seed(15, Next.CONFIG),  # Missing App Key
    16: _seed(16, Next.CONFIG),  # Invalid Signature: master_secret or clock
    17: _seed(17, Next.CONFIG),  # Missing Signature
    28: _seed(28, Next.CONFIG),  # App Disabled
    29: _seed(29, Next.CONFIG),  # Missing Auth Token: only after one renewal (N1)
    30: _seed(30, Next.CONFIG),  # Api Permission Denied
    10000: _seed(10000, Next.DROP_TOKEN),  # Invalid Registration_id (N11)
    12: _proposal(Next.MESSAGE),  # Http Action Not Allowed
    18: _proposal(Next.CONFIG),  # Missing Timestamp (auth)
    19: _proposal(Next.CONFIG),  # Invalid Timestamp (auth): our clock
    20: _proposal(Next.MESSAGE),  # Invalid Method
    21: _proposal(Next.MESSAGE),  # Missing Method
    22: _proposal(Next.MESSAGE),  # Missing Version
    23: _proposal(Next.MESSAGE),  # Invalid Version
    24: _proposal(Next.MESSAGE),  # Unsupported Version
    25: _proposal(Next.MESSAGE),  # Invalid Encoding (not UTF-8)
    26: _proposal(Next.CONFIG),  # IP Black List
    27: _proposal(Next.CONFIG),  # Access Denied
    31: _proposal(Next.MESSAGE),  # Data Not Exist
    32: _proposal(Next.MESSAGE),  # Data Duplicate
    33: _proposal(Next.RETRY, next_day=True),  # daily message quota exceeded
    34: _proposal(Next.RETRY, next_day=True),  # daily picture upload quota exceeded
    40: _proposal(Next.MESSAGE),  # Missing Required Arguments
    41: _proposal(Next.MESSAGE),  # Invalid Arguments
    51: _proposal(Next.MESSAGE),  # Invalid Picture
    55: _proposal(Next.RETRY),  # App Call Frequency Limit
    59: _proposal(Next.CONFIG),  # UseSecondaryAction permission denied
    67: _proposal(Next.MESSAGE),  # category or notify_level not allowed
}
EXPIRED = frozenset({11, 29})  # answers that ask for a new auth_token (REAUTH)
UNAVAILABLE = ANSWERS[-1]  # HTTP 5xx, no answer, auth endpoint unreachable (N16)
UNKNOWN = Verdict(NONE, Next.MESSAGE)  # unmapped answer: final at once, raw kept (sec. 5)
UNKNOWN_RETRY = Verdict(NONE, Next.RETRY)  # an undocumented HTTP 429: retried, then sec. 5


@dataclass(frozen=True, slots=True)
class _Expired:
    """A send answered that the auth token is expired or missing."""

    code: int
    raw: str


def _seconds_to_midnight_china() -> float:
    now = datetime.now(UTC) + CHINA
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def _outcome(
    delivery_id: int, verdict: Verdict, raw: str, retry_after_s: float | None = None
) -> Outcome:
    if verdict.next is Next.RETRY and verdict.next_day:
        retry_after_s = _seconds_to_midnight_china()
    if verdict.proposal:
        raw = f"{raw} (PROPOSAL code, not in the status table yet)"
    if verdict.next is not Next.RETRY:
        retry_after_s = None
    return Outcome(delivery_id, verdict.status, verdict.next, raw, retry_after_s)


def _code(body: Any) -> int | None:
    if isinstance(body, dict):
        code = body.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    return None


def _describe(code: int, body: Any) -> str:
    message = body.get("message") if isinstance(body, dict) else None
    return f"oppo code {code}: {message}" if message else f"oppo code {code}"


class OPPOChannel(VendorChannel):
    """One app's OPPO push gateway."""

    name: ClassVar[str] = "oppo"
    max_batch: ClassVar[int] = MAX_BATCH
    secret_keys: ClassVar[frozenset[str]] = frozenset({"master_secret"})

    def __init__(
        self,
        *,
        app_key: str,
        master_secret: str,
        base_url: str,
        http: httpx.AsyncClient,
        owns_http: bool,
        notification_extras: dict[str, Any],
    ) -> None:
        self._app_key = app_key  # AppKey, sent in the clear to /auth
        self._master_secret = master_secret  # only ever hashed into the auth sign
        self._base_url = base_url  # no trailing slash
        self._http = http
        self._owns_http = owns_http  # close it on close()
        self._notification_extras = notification_extras  # channel_id, category, notify_level
        self._tokens = TokenCache(self._fetch_token, share_failures_s=AUTH_FAILURE_MEMO_S)

    def __repr__(self) -> str:
        return f"OPPOChannel(app_key={self._app_key!r}, base_url={self._base_url!r})"

    @property
    def auth_fetches(self) -> int:
        """How many auth tokens this channel fetched (tests, metrics)."""
        return self._tokens.fetches

    @classmethod
    def create(cls, config: ChannelConfig, http: httpx.AsyncClient | None = None) -> OPPOChannel:
        unknown = sorted(set(config.values) - SETTINGS)
        if unknown:
            raise ConfigError(
                f"oppo: unknown setting {unknown[0]!r}; known: {', '.join(sorted(SETTINGS))}"
            )
        app_key = config.require("app_key")
        master_secret = config.require("master_secret")
        for key, value in (("app_key", app_key), ("master_secret", master_secret)):
            if not isinstance(value, str) or value != value.strip():
                raise ConfigError(f"oppo: setting {key!r} must be text without outer spaces")

        extras: dict[str, Any] = {}
        channel_id = config.values.get("channel_id")
        if channel_id not in (None, ""):
            extras["channel_id"] = str(channel_id)
        category = config.values.get("category")
        if category not in (None, ""):
            if category not in CATEGORIES:
                raise ConfigError(
                    f"oppo: setting 'category' must be one of {', '.join(sorted(CATEGORIES))}"
                )
            extras["category"] = category
        level = config.values.get("notify_level")
        if level not in (None, ""):
            if str(level) not in {str(n) for n in NOTIFY_LEVELS}:
                raise ConfigError("oppo: setting 'notify_level' must be 1, 2 or 16")
            extras["notify_level"] = int(str(level))

        owns = http is None
        client = http or httpx.AsyncClient(timeout=HTTP_TIMEOUT_S)
        return cls(
            app_key=app_key,
            master_secret=master_secret,
            base_url=(config.base_url or PRODUCTION_URL).rstrip("/"),
            http=client,
            owns_http=owns,
            notification_extras=extras,
        )

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # -- sending --------------------------------------------------------------------------

    async def send(self, batch: Sequence[Outbound]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        ready: list[tuple[Outbound, dict[str, Any]]] = []
        now = datetime.now(UTC)
        for outbound in batch:
            problem = self._problem(outbound)
            if problem is None:
                ready.append((outbound, self._message(outbound, now)))
            else:
                raw = f"checked before sending: {problem}"
                outcomes.append(Outcome(outbound.delivery_id, NONE, Next.MESSAGE, raw))
        for start in range(0, len(ready), MAX_BATCH):
            outcomes.extend(await self._send_authorized(ready[start : start + MAX_BATCH]))
        return outcomes

    def _problem(self, outbound: Outbound) -> str | None:
        """Why OPPO would refuse this message as built, in OPPO's terms; None if it would not."""
        if outbound.silent:
            return "oppo sends notifications only; a silent message goes through the own channel"
        if not outbound.title.strip():
            return "title is empty (oppo code 40)"
        if len(outbound.title) > TITLE_MAX:
            return f"title has {len(outbound.title)} characters, oppo allows {TITLE_MAX} (41)"
        if not outbound.content.strip():
            return "content is empty (oppo code 40)"
        if len(outbound.content) > CONTENT_MAX:
            n = len(outbound.content)
            return f"content has {n} characters, oppo allows {CONTENT_MAX} (41)"
        if outbound.extras:
            size = len(json.dumps(dict(outbound.extras), ensure_ascii=False))
            if size > ACTION_PARAMETERS_MAX:
                return (
                    f"extras take {size} characters as action_parameters, "
                    f"oppo allows {ACTION_PARAMETERS_MAX} (41)"
                )
        if outbound.uri and len(outbound.uri) > CLICK_URL_MAX:
            return f"uri has {len(outbound.uri)} characters, oppo allows {CLICK_URL_MAX} (41)"
        return None

    def _message(self, outbound: Outbound, now: datetime) -> dict[str, Any]:
        """The ``message`` object OPPO takes for one delivery."""
        ttl = int((outbound.expires_at - now).total_seconds())
        notification: dict[str, Any] = {
            # Same id to the same target is shown once: a resend after a lost answer is safe.
            "app_message_id": f"{outbound.task_id}-{outbound.delivery_id}",
            "style": 1,
            "title": outbound.title,
            "content": outbound.content,
            "off_line": True,
            "off_line_ttl": min(max(ttl, 1), OFFLINE_TTL_MAX_S),
        }
        if outbound.uri:
            # MPS PushAction 0 opens a web URL, 1 an intent; OPPO: 2 web URL, 5 intent scheme.
            notification["click_action_type"] = 5 if outbound.push_action == 1 else 2
            notification["click_action_url"] = outbound.uri
        else:
            notification["click_action_type"] = 0  # launch the app
        if outbound.extras:
            notification["action_parameters"] = json.dumps(
                dict(outbound.extras), ensure_ascii=False
            )
        notification.update(self._notification_extras)
        return {"target_type": 2, "target_value": outbound.token, "notification": notification}

    async def _send_authorized(self, ready: list[tuple[Outbound, dict[str, Any]]]) -> list[Outcome]:
        """Send with the cached token; on an expiry answer renew it once and send again."""
        try:
            token = await self._tokens.current()
            result = await self._post(token, ready)
            if isinstance(result, _Expired):
                logger.info(
                    "oppo: auth token %s refused (code %d), renewing", masked(token), result.code
                )
                token = await self._tokens.renew(token)
                result = await self._post(token, ready)
        except AuthFailed as exc:
            return [_outcome(o.delivery_id, exc.verdict, exc.raw) for o, _ in ready]
        if isinstance(result, _Expired):
            # The same answer right after a renewal: our credentials are the problem (N1).
            logger.error("oppo: app key %s: a fresh auth token was refused", self._app_key)
            verdict = ANSWERS[result.code]
            raw = f"{result.raw} (again after renewing the auth token)"
            return [_outcome(o.delivery_id, verdict, raw) for o, _ in ready]
        return result

    async def _post(
        self, token: str, ready: list[tuple[Outbound, dict[str, Any]]]
    ) -> list[Outcome] | _Expired:
        if len(ready) == 1:
            path, form = UNICAST_PATH, {"message": json.dumps(ready[0][1], ensure_ascii=False)}
        else:
            messages = [message for _, message in ready]
            path, form = UNICAST_BATCH_PATH, {"messages": json.dumps(messages, ensure_ascii=False)}
        hide = [o.token for o, _ in ready]
        ids = [o.delivery_id for o, _ in ready]

        try:
            response = await self._http.post(
                self._base_url + path, data={"auth_token": token, **form}
            )
        except httpx.HTTPError as exc:
            raw = f"no answer from oppo: {type(exc).__name__}"
            return [_outcome(i, UNAVAILABLE, raw) for i in ids]
        if response.status_code != 200:
            raw = clip(f"HTTP {response.status_code}: {response.text}", hide)
            if response.status_code >= 500:
                verdict = UNAVAILABLE
            else:
                verdict = UNKNOWN_RETRY if response.status_code == 429 else UNKNOWN
            retry = parse_retry_after(response.headers.get("Retry-After"))
            return [_outcome(i, verdict, raw, retry) for i in ids]

        try:
            body = response.json()
        except ValueError:
            body = None
        code = _code(body)
        if code is None:
            raw = clip(f"unreadable oppo answer: {response.text}", hide)
            return [_outcome(i, UNKNOWN, raw) for i in ids]
        raw = clip(_describe(code, body), hide)
        if code in EXPIRED:
            return _Expired(code, raw)
        if code != 0:
            verdict = ANSWERS.get(code, UNKNOWN)
            return [_outcome(i, verdict, raw) for i in ids]
        data = body.get("data")
        if path == UNICAST_PATH:
            message_id = data.get("messageId") if isinstance(data, dict) else None
            return [Outcome(ids[0], ACKED, Next.DONE, f"oppo messageId {message_id}")]
        return self._batch_outcomes(ready, data)

    @staticmethod
    def _batch_outcomes(ready: list[tuple[Outbound, dict[str, Any]]], data: Any) -> list[Outcome]:
        """One outcome per delivery from a unicast_batch ``data`` array, matched by
        registrationId in order (one device may appear twice in a batch)."""
        waiting: dict[str, deque[Outbound]] = {}
        for outbound, _ in ready:
            waiting.setdefault(outbound.token, deque()).append(outbound)
        outcomes: list[Outcome] = []
        for element in data if isinstance(data, list) else []:
            if not isinstance(element, dict):
                continue
            queue = waiting.get(str(element.get("registrationId")))
            if not queue:
                continue
            outbound = queue.popleft()
            error = element.get("errorCode")
            if error is None:
                raw = f"oppo messageId {element.get('messageId')}"
                outcomes.append(Outcome(outbound.delivery_id, ACKED, Next.DONE, raw))
                continue
            code = error if isinstance(error, int) and not isinstance(error, bool) else None
            verdict = UNKNOWN if code is None else ANSWERS.get(code, UNKNOWN)
            message = element.get("errorMessage")
            raw = clip(f"oppo errorCode {error}: {message}", [outbound.token])
            outcomes.append(_outcome(outbound.delivery_id, verdict, raw))
        missing = "oppo answered the batch without a result for this target"
        for queue in waiting.values():
            outcomes.extend(_outcome(o.delivery_id, UNKNOWN, missing) for o in queue)
        return outcomes

    # -- auth -----------------------------------------------------------------------------

    async def _fetch_token(self) -> tuple[str, float]:
        """A new auth token, used for ``TOKEN_RENEW_AFTER_S``."""
        timestamp = str(int(time.time() * 1000))
        sign = hashlib.sha256(f"{self._app_key}{timestamp}{self._master_secret}".encode())
        form = {"app_key": self._app_key, "timestamp": timestamp, "sign": sign.hexdigest()}
        try:
            response = await self._http.post(self._base_url + AUTH_PATH, data=form)
        except httpx.HTTPError as exc:
            logger.warning("oppo: auth endpoint unreachable: %s", type(exc).__name__)
            raise AuthFailed(UNAVAILABLE, f"oppo auth: no answer: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise AuthFailed(UNAVAILABLE, clip(f"oppo auth: HTTP {response.status_code}"))
        try:
            body = response.json()
        except ValueError:
            body = None
        code = _code(body)
        if response.status_code != 200 or code is None:
            raw = clip(f"oppo auth: HTTP {response.status_code}: {response.text}")
            raise AuthFailed(UNKNOWN, raw)
        data = body.get("data")
        token = data.get("auth_token") if isinstance(data, dict) else None
        if code == 0 and isinstance(token, str) and token:
            logger.info("oppo: app key %s: new auth token %s", self._app_key, masked(token))
            return token, TOKEN_RENEW_AFTER_S
        raw = f"oppo auth: {_describe(code, body)}"
        logger.warning("oppo: app key %s: auth refused with code %d", self._app_key, code)
        # An auth answer of 11 or 29 cannot be cured by asking again: treat it as final.
        raise AuthFailed(ANSWERS.get(code, UNKNOWN), clip(raw))
