"""vivo push (PUSH-UPS-API v2.9): signed auth, ``/message/send`` and list pushes.

Reference: ``shared/reference/vendors-android-cn.md`` section 4; the answer mapping follows
``shared/reference/status-codes.md`` (vivo rows of table 1, table 2, N1, N10, N12, N16).

- Auth: ``/message/auth`` with ``sign = md5(appId + appKey + timestamp + appSecret)``. The
  ``authToken`` is cached and renewed hourly (vivo advises every 1-2 h; it lives 24 h); an
  answer saying it is refused (result 10000) renews it once under a lock, so many failing
  sends cause one renewal, and the request is sent once more. 10000 again is final (CONFIG).
- Send: deliveries of one batch that carry the same notification go to vivo as one list push
  (``saveListPayload`` then ``pushToList``, 2 to 1000 regIds); a notification with a single
  target goes to ``/message/send``. ``invalidUser(s)`` entries apply to their target only.
- ``requestId``: derived from the delivery (or the list's deliveries), so a resend after a
  lost answer reuses it and vivo's 10303 tells us the first attempt was taken (N12). Once
  vivo has answered a request with an error, the next attempt gets a new id.
- Limits vivo would refuse are checked before sending, with vivo's code: title width 40 and
  content width 100 (a CJK character counts 2), 10 custom pairs, 1024 characters of custom
  keys and values, and the "test content" rule (10104).

Settings: ``app_id`` (a number), ``app_key``, ``app_secret`` (secret); optional
``classification`` (0 operations, 1 system; default 1 as in MPS) and ``notify_type`` (1 none,
2 ring, 3 vibrate, 4 ring and vibrate; default 4).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import re
import time
import unicodedata
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from openmps import statuses
from openmps.channels._common import AuthFailed, TokenCache, clip, masked, parse_retry_after
from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome, VendorChannel
from openmps.errors import ConfigError
from openmps.statuses import ACKED, NONE, Channel, Status

__all__ = ["ANSWERS", "INVALID_USERS", "PRODUCTION_URL", "VivoChannel"]

logger = logging.getLogger(__name__)

PRODUCTION_URL = "https://api-push.vivo.com.cn"
AUTH_PATH = "/message/auth"
SEND_PATH = "/message/send"
SAVE_LIST_PAYLOAD_PATH = "/message/saveListPayload"
PUSH_TO_LIST_PATH = "/message/pushToList"

MAX_BATCH = 1000  # regIds per pushToList
TITLE_MAX = 40  # width: a CJK character counts 2
CONTENT_MAX = 100  # same
CUSTOM_PAIRS_MAX = 10
CUSTOM_CHARS_MAX = 1024  # all custom keys and values together
URL_MAX = 1000  # skipContent for skipType 2
INTENT_MAX = 1024  # skipContent for skipType 4
TTL_MIN_S, TTL_MAX_S = 60, 7 * 24 * 3600
TOKEN_RENEW_AFTER_S = 3600.0
AUTH_FAILURE_MEMO_S = 1.0  # how long a refused or failed auth call answers for the next ones
HTTP_TIMEOUT_S = 10.0
REQUEST_IDS_KEPT = 100_000  # deliveries whose next requestId we remember
CHINA = timedelta(hours=8)  # vivo's days and sending hours are China time (no DST)
SETTINGS = frozenset({"app_id", "app_key", "app_secret", "classification", "notify_type"})

_TEST_WORD = re.compile(r"(?<![A-Za-z])test(?![A-Za-z])", re.IGNORECASE)


class Window(enum.Enum):
    """When a refused send may be tried again, beyond the dispatcher's backoff."""

    BACKOFF = "backoff"
    MIDNIGHT = "midnight"  # a daily total: the next day, China time
    SEVEN = "seven"  # the operations-message window opens at 07:00 China time


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one vivo result means for a delivery."""

    status: Status  # NONE for a table-2 PROPOSAL code the status table does not hold yet
    next: Next
    window: Window = Window.BACKOFF
    proposal: bool = False  # status-codes.md table 2 proposes this code (raw says so)


def _seed(code: int, next_: Next, window: Window = Window.BACKOFF) -> Verdict:
    return Verdict(statuses.get(Channel.VIVO, code), next_, window)


def _proposal(next_: Next, window: Window = Window.BACKOFF) -> Verdict:
    return Verdict(NONE, next_, window, proposal=True)


# vivo body ``result`` -> verdict; success (0) is handled apart and becomes (common, 2).
# status-codes.md table 1 (seed) and table 2 (PROPOSAL rows: NONE with the raw code until
# the status table holds them).
ANSWERS: dict[int, Verdict] = {
    10000: _seed(10000, Next.CONFIG),  # authToken refused: only after one renewal (N1)
    10040: _seed(10040, Next.RETRY),  # resource limit reached, try later
    10050: _seed(10050, Next.MESSAGE),  # alias and regId both empty
    10055: _seed(10055, Next.MESSAGE),  # title empty
    10056: _seed(10056, Next.MESSAGE),  # title over 40
    10058: _seed(10058, Next.MESSAGE),  # content over 100
    10066: _seed(10066, Next.MESSAGE),  # more than 10 custom pairs
    10067: _seed(10067, Next.MESSAGE),  # custom pairs invalid
    10070: _seed(10070, Next.RETRY, Window.MIDNIGHT),  # daily send total exceeded (N10)
    10071: _seed(10071, Next.RETRY, Window.SEVEN),  # outside 07:00-23:00 (N10)
    10072: _seed(10072, Next.RETRY),  # sending too fast
    10101: _seed(10101, Next.MESSAGE),  # content failed moderation
    10102: _seed(10102, Next.RETRY),  # unknown vivo server exception
    10103: _seed(10103, Next.MESSAGE),  # sensitive content
    10104: _seed(10104, Next.MESSAGE),  # formal message looks like test content
    10110: _seed(10110, Next.CONFIG),  # commercial-message frequency not configured
    10302: _seed(10302, Next.DROP_TOKEN),  # regId invalid or expired
    10303: _seed(10303, Next.MESSAGE),  # requestId used: the first attempt was taken (N12)
    10094: _proposal(Next.CONFIG),  # body appId differs from the auth appId
    10200: _proposal(Next.CONFIG),  # auth: appId empty
    10201: _proposal(Next.CONFIG),  # auth: appKey empty
    10252: _proposal(Next.RETRY, Window.MIDNIGHT),  # list bodies over the daily limit
    10254: _proposal(Next.RETRY, Window.MIDNIGHT),  # /message/all over the daily count
}
# ``invalidUser(s).status`` -> verdict for that target (table 2).
INVALID_USERS: dict[int, Verdict] = {
    1: ANSWERS[10302],  # the regId does not exist
    2: _proposal(Next.MESSAGE),  # uninstalled or notifications off: token kept (10902)
    3: ANSWERS[10302],  # offline for 90 days
    4: _proposal(Next.MESSAGE),  # not a test device (10904)
}
EXPIRED = 10000  # the answer that asks for a new authToken (REAUTH)
UNAVAILABLE = ANSWERS[10102]  # HTTP 5xx, no answer, auth endpoint unreachable (N16)
AUTH_REFUSED = _proposal(Next.CONFIG)  # another 102xx from /message/auth (table 2)
UNKNOWN = Verdict(NONE, Next.MESSAGE)  # unmapped answer: final at once, raw kept (sec. 5)
UNKNOWN_RETRY = Verdict(NONE, Next.RETRY)  # an undocumented HTTP 429: retried, then sec. 5


def width(text: str) -> int:
    """Length as vivo counts it: wide (CJK) characters count 2, others 1."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def looks_like_test(content: str) -> bool:
    """vivo 10104: formal content may not be only digits, only English letters, only symbols
    or symbols and digits, nor contain the word "test", braces or brackets. Spaces count as
    symbols, so an English sentence passes; we would rather let vivo refuse a doubtful text
    than refuse it ourselves."""
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
            kinds.add("other")
    return bool(kinds) and (kinds == {"letter"} or kinds <= {"digit", "symbol"})


@dataclass(frozen=True, slots=True)
class _Expired:
    """A send answered that the auth token is refused."""

    raw: str


@dataclass(frozen=True, slots=True)
class _Failure:
    """A call that brought no usable vivo body: one verdict for all its deliveries."""

    verdict: Verdict
    raw: str
    retry_after_s: float | None = None


@dataclass(slots=True)
class _Unit:
    """Deliveries that go to vivo in one request: one /message/send or one list push."""

    outbounds: list[Outbound]
    payload: dict[str, Any]  # the notification fields, without target and requestId
    request_key: str  # what the requestId is derived from
    task_id: str | None = None  # saveListPayload's taskId, kept across an auth renewal
    tokens: list[str] = field(default_factory=list)  # device tokens, masked in raw

    def __post_init__(self) -> None:
        self.tokens = [o.token for o in self.outbounds]


class _RequestIds:
    """requestIds: the same one again after a lost answer, a new one once vivo answered."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._answered: dict[str, int] = {}  # key -> error answers vivo gave for it

    def get(self, key: str) -> str:
        count = self._answered.get(key, 0)
        return key if count == 0 else f"{key}.{count}"

    def answered(self, key: str) -> None:
        self._answered[key] = self._answered.pop(key, 0) + 1
        while len(self._answered) > self._limit:
            del self._answered[next(iter(self._answered))]  # the oldest

    def accepted(self, key: str) -> None:
        self._answered.pop(key, None)


def _seconds_until_china(hour: int) -> float:
    now = datetime.now(UTC) + CHINA
    at = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if at <= now:
        at += timedelta(days=1)
    return (at - now).total_seconds()


def _outcome(
    delivery_id: int, verdict: Verdict, raw: str, retry_after_s: float | None = None
) -> Outcome:
    if verdict.window is Window.MIDNIGHT:
        retry_after_s = _seconds_until_china(0)
    elif verdict.window is Window.SEVEN:
        retry_after_s = _seconds_until_china(7)
    if verdict.proposal:
        raw = f"{raw} (PROPOSAL code, not in the status table yet)"
    if verdict.next is not Next.RETRY:
        retry_after_s = None
    return Outcome(delivery_id, verdict.status, verdict.next, raw, retry_after_s)


def _all(unit: _Unit, failure: _Failure) -> list[Outcome]:
    return [
        _outcome(o.delivery_id, failure.verdict, failure.raw, failure.retry_after_s)
        for o in unit.outbounds
    ]


def _describe(code: int, body: dict[str, Any]) -> str:
    desc = body.get("desc")
    return f"vivo result {code}: {desc}" if desc else f"vivo result {code}"


def _int_setting(config: ChannelConfig, key: str, allowed: Sequence[int] | None) -> int | None:
    value = config.values.get(key)
    if value in (None, ""):
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or (allowed and int(text) not in allowed):
        choice = f"one of {', '.join(map(str, allowed))}" if allowed else "a number"
        raise ConfigError(f"vivo: setting {key!r} must be {choice}, got {value!r}")
    return int(text)


class VivoChannel(VendorChannel):
    """One app's vivo push gateway."""

    name: ClassVar[str] = "vivo"
    max_batch: ClassVar[int] = MAX_BATCH
    secret_keys: ClassVar[frozenset[str]] = frozenset({"app_secret"})

    def __init__(
        self,
        *,
        app_id: int,
        app_key: str,
        app_secret: str,
        base_url: str,
        http: httpx.AsyncClient,
        owns_http: bool,
        classification: int = 1,
        notify_type: int = 4,
    ) -> None:
        self._app_id = app_id  # vivo appId, in every body
        self._app_key = app_key  # sent in the clear to /message/auth
        self._app_secret = app_secret  # only ever hashed into the auth sign
        self._base_url = base_url  # no trailing slash
        self._http = http
        self._owns_http = owns_http  # close it on close()
        self._classification = classification  # 0 operations, 1 system
        self._notify_type = notify_type  # 1 none, 2 ring, 3 vibrate, 4 both
        self._tokens = TokenCache(self._fetch_token, share_failures_s=AUTH_FAILURE_MEMO_S)
        self._request_ids = _RequestIds(REQUEST_IDS_KEPT)

    def __repr__(self) -> str:
        return f"VivoChannel(app_id={self._app_id!r}, base_url={self._base_url!r})"

    @property
    def auth_fetches(self) -> int:
        """How many auth tokens this channel fetched (tests, metrics)."""
        return self._tokens.fetches

    @classmethod
    def create(cls, config: ChannelConfig, http: httpx.AsyncClient | None = None) -> VivoChannel:
        unknown = sorted(set(config.values) - SETTINGS)
        if unknown:
            raise ConfigError(
                f"vivo: unknown setting {unknown[0]!r}; known: {', '.join(sorted(SETTINGS))}"
            )
        config.require("app_id")
        app_id = _int_setting(config, "app_id", None)
        assert app_id is not None  # require() refused an empty value
        app_key = config.require("app_key")
        app_secret = config.require("app_secret")
        for key, value in (("app_key", app_key), ("app_secret", app_secret)):
            if not isinstance(value, str) or value != value.strip():
                raise ConfigError(f"vivo: setting {key!r} must be text without outer spaces")
        classification = _int_setting(config, "classification", (0, 1))
        notify_type = _int_setting(config, "notify_type", (1, 2, 3, 4))

        owns = http is None
        return cls(
            app_id=app_id,
            app_key=app_key,
            app_secret=app_secret,
            base_url=(config.base_url or PRODUCTION_URL).rstrip("/"),
            http=http or httpx.AsyncClient(timeout=HTTP_TIMEOUT_S),
            owns_http=owns,
            classification=1 if classification is None else classification,
            notify_type=4 if notify_type is None else notify_type,
        )

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # -- sending --------------------------------------------------------------------------

    async def send(self, batch: Sequence[Outbound]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        units: list[_Unit] = []
        groups: dict[str, _Unit] = {}  # notification -> the unit still taking deliveries
        now = datetime.now(UTC)
        for outbound in batch:
            problem = self._problem(outbound)
            if problem is not None:
                verdict, why = problem
                raw = f"checked before sending: {why}"
                outcomes.append(_outcome(outbound.delivery_id, verdict, raw))
                continue
            payload = self._payload(outbound, now)
            key = json.dumps(payload, sort_keys=True, ensure_ascii=False)
            unit = groups.get(key)
            if unit is None or len(unit.outbounds) >= MAX_BATCH:
                groups[key] = unit = _Unit([outbound], payload, "")
                units.append(unit)
            else:
                unit.outbounds.append(outbound)
                unit.tokens.append(outbound.token)
        for unit in units:
            unit.request_key = self._request_key(unit.outbounds)
        results = await asyncio.gather(*(self._send_authorized(unit) for unit in units))
        for result in results:
            outcomes.extend(result)
        return outcomes

    def _problem(self, outbound: Outbound) -> tuple[Verdict, str] | None:
        """Why vivo would refuse this message as built, with vivo's code; None if it would not."""
        title, content, extras = outbound.title, outbound.content, outbound.extras
        if outbound.silent:
            why = "vivo sends notifications only; a silent message goes through the own channel"
            return UNKNOWN, why
        if not title.strip():
            return ANSWERS[10055], "title is empty (vivo result 10055)"
        if width(title) > TITLE_MAX:
            why = f"title is {width(title)} wide (CJK counts 2), vivo allows {TITLE_MAX}"
            return ANSWERS[10056], f"{why} (vivo result 10056)"
        if not content.strip():
            return UNKNOWN, "content is empty; vivo refuses it (no status-table code for it)"
        if width(content) > CONTENT_MAX:
            why = f"content is {width(content)} wide (CJK counts 2), vivo allows {CONTENT_MAX}"
            return ANSWERS[10058], f"{why} (vivo result 10058)"
        if len(extras) > CUSTOM_PAIRS_MAX:
            why = f"{len(extras)} custom pairs, vivo allows {CUSTOM_PAIRS_MAX}"
            return ANSWERS[10066], f"{why} (vivo result 10066)"
        size = sum(len(k) + len(v) for k, v in extras.items())
        if size > CUSTOM_CHARS_MAX:
            why = f"custom pairs take {size} characters, vivo allows {CUSTOM_CHARS_MAX}"
            return ANSWERS[10067], f"{why} (vivo result 10067)"
        limit = INTENT_MAX if outbound.push_action == 1 else URL_MAX
        if outbound.uri and len(outbound.uri) > limit:
            return UNKNOWN, f"uri has {len(outbound.uri)} characters, vivo allows {limit}"
        if looks_like_test(content):
            why = "content looks like test content (only digits, letters or symbols, or test)"
            return ANSWERS[10104], f"{why} (vivo result 10104)"
        return None

    def _payload(self, outbound: Outbound, now: datetime) -> dict[str, Any]:
        """The notification fields vivo takes, without the target and the requestId."""
        ttl = int((outbound.expires_at - now).total_seconds())
        payload: dict[str, Any] = {
            "notifyType": self._notify_type,
            "title": outbound.title,
            "content": outbound.content,
            "timeToLive": min(max(ttl, TTL_MIN_S), TTL_MAX_S),
            "networkType": -1,
            "classification": self._classification,
            "pushMode": 0,  # formal
        }
        if outbound.uri:
            # MPS PushAction 0 opens a web URL, 1 an intent; vivo: 2 URL, 4 in-app page.
            payload["skipType"] = 4 if outbound.push_action == 1 else 2
            payload["skipContent"] = outbound.uri
        else:
            payload["skipType"] = 1  # open the app
        if outbound.extras:
            payload["clientCustomMap"] = dict(outbound.extras)
        return payload

    @staticmethod
    def _request_key(outbounds: Sequence[Outbound]) -> str:
        """Stable for the same deliveries, at most 64 characters with its suffix."""
        if len(outbounds) == 1:
            return f"mps-{outbounds[0].task_id}-{outbounds[0].delivery_id}"
        ids = ",".join(str(i) for i in sorted(o.delivery_id for o in outbounds))
        return f"mps-{outbounds[0].task_id}-l{hashlib.sha256(ids.encode()).hexdigest()[:24]}"

    async def _send_authorized(self, unit: _Unit) -> list[Outcome]:
        """Send with the cached token; on 10000 renew it once and send again."""
        try:
            token = await self._tokens.current()
            result = await self._post(token, unit)
            if isinstance(result, _Expired):
                logger.info("vivo: auth token %s refused (10000), renewing", masked(token))
                token = await self._tokens.renew(token)
                result = await self._post(token, unit)
        except AuthFailed as exc:
            return _all(unit, _Failure(exc.verdict, exc.raw))
        if isinstance(result, _Expired):
            # The same answer right after a renewal: our credentials are the problem (N1).
            logger.error("vivo: app %d: a fresh auth token was refused", self._app_id)
            raw = f"{result.raw} (again after renewing the auth token)"
            return _all(unit, _Failure(ANSWERS[EXPIRED], raw))
        return result

    async def _post(self, token: str, unit: _Unit) -> list[Outcome] | _Expired:
        if len(unit.outbounds) == 1:
            return await self._post_one(token, unit)
        return await self._post_list(token, unit)

    async def _post_one(self, token: str, unit: _Unit) -> list[Outcome] | _Expired:
        outbound = unit.outbounds[0]
        body = {
            "appId": self._app_id,
            "regId": outbound.token,
            **unit.payload,
            "requestId": self._request_ids.get(unit.request_key),
        }
        answer = await self._call(SEND_PATH, token, body, unit)
        if not isinstance(answer, dict):
            return answer
        user = answer.get("invalidUser")
        if isinstance(user, dict):
            return [self._invalid_user(outbound, user)]
        return [Outcome(outbound.delivery_id, ACKED, Next.DONE, _describe_ok(answer))]

    async def _post_list(self, token: str, unit: _Unit) -> list[Outcome] | _Expired:
        if unit.task_id is None:
            body = {"appId": self._app_id, **unit.payload}
            answer = await self._call(SAVE_LIST_PAYLOAD_PATH, token, body, unit, keyed=False)
            if not isinstance(answer, dict):
                return answer
            task_id = answer.get("taskId")
            if not isinstance(task_id, str | int) or isinstance(task_id, bool) or task_id == "":
                raw = clip(f"vivo saveListPayload answered no taskId: {answer}", unit.tokens)
                return _all(unit, _Failure(UNKNOWN, raw))
            unit.task_id = str(task_id)

        body = {
            "appId": self._app_id,
            "regIds": unit.tokens,
            "taskId": unit.task_id,
            "requestId": self._request_ids.get(unit.request_key),
        }
        answer = await self._call(PUSH_TO_LIST_PATH, token, body, unit)
        if not isinstance(answer, dict):
            return answer

        # invalidUsers name their regId; every other target was accepted.
        waiting: dict[str, deque[Outbound]] = {}
        for outbound in unit.outbounds:
            waiting.setdefault(outbound.token, deque()).append(outbound)
        outcomes: list[Outcome] = []
        users = answer.get("invalidUsers")
        for user in users if isinstance(users, list) else []:
            if not isinstance(user, dict):
                continue
            queue = waiting.get(str(user.get("userId", user.get("userid"))))
            while queue:
                outcomes.append(self._invalid_user(queue.popleft(), user))
        done = f"vivo taskId {unit.task_id}"
        for queue in waiting.values():
            outcomes.extend(Outcome(o.delivery_id, ACKED, Next.DONE, done) for o in queue)
        return outcomes

    @staticmethod
    def _invalid_user(outbound: Outbound, user: dict[str, Any]) -> Outcome:
        status = user.get("status")
        verdict = INVALID_USERS.get(status, UNKNOWN) if isinstance(status, int) else UNKNOWN
        raw = f"vivo invalidUser status {status}"
        return _outcome(outbound.delivery_id, verdict, raw)

    async def _call(
        self, path: str, token: str, body: dict[str, Any], unit: _Unit, *, keyed: bool = True
    ) -> dict[str, Any] | list[Outcome] | _Expired:
        """POST one request: its body when vivo accepted it (result 0); else the outcomes
        for the whole unit, or _Expired. ``keyed``: the request carries unit's requestId."""
        try:
            response = await self._http.post(
                self._base_url + path, json=body, headers={"authToken": token}
            )
        except httpx.HTTPError as exc:
            raw = f"no answer from vivo: {type(exc).__name__}"
            return _all(unit, _Failure(UNAVAILABLE, raw))
        if response.status_code != 200:
            raw = clip(f"HTTP {response.status_code}: {response.text}", unit.tokens)
            if response.status_code >= 500:
                verdict = UNAVAILABLE
            else:
                verdict = UNKNOWN_RETRY if response.status_code == 429 else UNKNOWN
            retry = parse_retry_after(response.headers.get("Retry-After"))
            return _all(unit, _Failure(verdict, raw, retry))
        try:
            answer = response.json()
        except ValueError:
            answer = None
        code = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(code, int) or isinstance(code, bool):
            raw = clip(f"unreadable vivo answer: {response.text}", unit.tokens)
            return _all(unit, _Failure(UNKNOWN, raw))
        assert isinstance(answer, dict)

        if code == 0:
            if keyed:
                self._request_ids.accepted(unit.request_key)
            return answer
        if keyed:
            self._request_ids.answered(unit.request_key)
        raw = clip(_describe(code, answer), unit.tokens)
        if code == EXPIRED:
            return _Expired(raw)
        return _all(unit, _Failure(ANSWERS.get(code, UNKNOWN), raw))

    # -- auth -----------------------------------------------------------------------------

    async def _fetch_token(self) -> tuple[str, float]:
        """A new auth token, used for ``TOKEN_RENEW_AFTER_S``."""
        timestamp = int(time.time() * 1000)
        text = f"{self._app_id}{self._app_key}{timestamp}{self._app_secret}".strip()
        body = {
            "appId": self._app_id,
            "appKey": self._app_key,
            "timestamp": timestamp,
            "sign": hashlib.md5(text.encode()).hexdigest(),
        }
        try:
            response = await self._http.post(self._base_url + AUTH_PATH, json=body)
        except httpx.HTTPError as exc:
            logger.warning("vivo: auth endpoint unreachable: %s", type(exc).__name__)
            raise AuthFailed(UNAVAILABLE, f"vivo auth: no answer: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise AuthFailed(UNAVAILABLE, f"vivo auth: HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        code = answer.get("result") if isinstance(answer, dict) else None
        if response.status_code != 200 or not isinstance(code, int) or isinstance(code, bool):
            raw = clip(f"vivo auth: HTTP {response.status_code}: {response.text}")
            raise AuthFailed(UNKNOWN, raw)
        assert isinstance(answer, dict)
        token = answer.get("authToken")
        if code == 0 and isinstance(token, str) and token:
            logger.info("vivo: app %d: new auth token %s", self._app_id, masked(token))
            return token, TOKEN_RENEW_AFTER_S
        logger.warning("vivo: app %d: auth refused with result %d", self._app_id, code)
        verdict = ANSWERS.get(code) or (AUTH_REFUSED if 10200 <= code < 10300 else UNKNOWN)
        if code == EXPIRED:
            verdict = ANSWERS[EXPIRED]  # 10000 from auth itself: asking again will not help
        raise AuthFailed(verdict, clip(f"vivo auth: {_describe(code, answer)}"))


def _describe_ok(answer: dict[str, Any]) -> str:
    task_id = answer.get("taskId")
    return f"vivo taskId {task_id}" if task_id is not None else "vivo accepted"
