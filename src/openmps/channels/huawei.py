"""Huawei Push Kit channel (HMS REST API v1), channel key ``hms``.

Auth is OAuth client credentials: the app id is the client id, ``client_secret`` the App
Secret. The access token is cached until shortly before its ``expires_in`` and refreshed once,
under a lock, when the gateway calls it invalid or expired (``80200001``, ``80200003``, legacy
``102``), so a burst of sends that all meet an expired token costs one refresh.

One send request carries one message to up to 1000 tokens, so a batch is grouped by message
(title, content, extras, expiry, click action) and each group is one request. Field limits are
checked before anything is sent (the 4096-byte message cap, a message already expired) and
give that delivery a MESSAGE outcome whose ``raw`` names the field.

Every answer is mapped by the tables below (``shared/reference/status-codes.md``: table 1 for
seed rows, table 2 for the rest). Codes that table 2 proposes but the seed does not hold are
recorded as (``common``, 99999999) NONE with the vendor code kept in ``raw``, and handled by
the action the contract gives them.

Settings: ``app_id``, ``client_secret`` (secret); optional ``base_url`` (send API; also
``ChannelConfig.base_url``) and ``token_url`` (OAuth endpoint; defaults to Huawei's, or to
``<base_url>/oauth2/v3/token`` when only ``base_url`` is overridden, as with the fake).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from openmps import statuses
from openmps.channels._common import (
    Judged,
    TokenCache,
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

__all__ = ["HuaweiChannel"]

logger = logging.getLogger(__name__)

PUSH_URL = "https://push-api.cloud.huawei.com"
TOKEN_URL = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
TOKEN_PATH = "/oauth2/v3/token"  # appended to an overridden base_url when token_url is unset
MAX_TOKENS = 1000  # tokens per send request
MAX_MESSAGE_BYTES = 4096  # the request body without its token list
MAX_TTL_S = 15 * 24 * 3600  # [unconfirmed] vendor maximum; longer validities are clamped
REFRESH_MARGIN_S = 300.0  # refresh this long before expiry (10% of the life if shorter)
DEFAULT_EXPIRES_IN_S = 3600.0
TIMEOUT = httpx.Timeout(30.0, connect=10.0)

SUCCESS = 80000000
PARTIAL = 80100000
ALL_INVALID = 80300007
_KNOWN_SETTINGS = frozenset({"app_id", "client_secret", "base_url", "token_url"})


def _seed(code: int, then: Next, *, reauth: bool = False) -> Verdict:
    return Verdict(statuses.get(Channel.HMS, code), then, reauth)


def _none(then: Next, *, reauth: bool = False) -> Verdict:
    return Verdict(NONE, then, reauth)


_DONE = Verdict(ACKED, Next.DONE)

# Body ``code`` (or legacy ``NSP_STATUS``) -> verdict. Seed rows: status-codes.md table 1.
_CODES: dict[int, Verdict] = {
    # 100 (legacy NSP) unknown parameter: the request as built is wrong. MSG.
    100: _seed(100, Next.MESSAGE),
    # 101 (legacy NSP) invalid API key: our credentials. CONFIG.
    101: _seed(101, Next.CONFIG),
    # 102 (legacy NSP) invalid session key, i.e. access token. REAUTH, then CONFIG (N1).
    102: _seed(102, Next.CONFIG, reauth=True),
    # 106 (legacy NSP) the app lacks the right to this service. CONFIG.
    106: _seed(106, Next.CONFIG),
    # 107 (legacy NSP) client id and secret must be issued again. CONFIG.
    107: _seed(107, Next.CONFIG),
    # 109 (legacy NSP) nsp_ts clock drift too large: our host clock. CONFIG.
    109: _seed(109, Next.CONFIG),
    # 110 (legacy NSP) vendor internal error. RETRY.
    110: _seed(110, Next.RETRY),
    # 111 (legacy NSP) vendor busy. RETRY.
    111: _seed(111, Next.RETRY),
    # 80000003 (legacy) device offline; the vendor may hold it, resend within validity. RETRY.
    80000003: _seed(80000003, Next.RETRY),
    # 80000004 (legacy) app uninstalled: the token is dead. DROP.
    80000004: _seed(80000004, Next.DROP_TOKEN),
    # 80000005 (legacy) vendor answer timed out. RETRY.
    80000005: _seed(80000005, Next.RETRY),
    # 80000006 (legacy) no route, the device never reached Push. DROP.
    80000006: _seed(80000006, Next.DROP_TOKEN),
    # 80000007 (legacy) device registered outside mainland China. MSG.
    80000007: _seed(80000007, Next.MESSAGE),
    # 80000008 (legacy) wrong route, the device moved server. RETRY.
    80000008: _seed(80000008, Next.RETRY),
    # 80100000 partial success: only the tokens listed in ``msg`` get it (N8). DROP.
    PARTIAL: _seed(PARTIAL, Next.DROP_TOKEN),
    # 80100002 (legacy) token list malformed; it does not say which token. MSG.
    80100002: _seed(80100002, Next.MESSAGE),
    # 80100003 payload structure invalid (HTTP 400). MSG.
    80100003: _seed(80100003, Next.MESSAGE),
    # 80100004 ttl or expiry time invalid (HTTP 400). MSG.
    80100004: _seed(80100004, Next.MESSAGE),
    # 80300002 no right to send to these tokens: app/credential mismatch (N9). CONFIG.
    80300002: _seed(80300002, Next.CONFIG),
    # 80300007 all tokens invalid (N9: a whole app seeing this is a config smell). DROP.
    ALL_INVALID: _seed(ALL_INVALID, Next.DROP_TOKEN),
    # 81000001 vendor internal error (HTTP 500). RETRY.
    81000001: _seed(81000001, Next.RETRY),
    # 80300008 body over 4096 bytes (the seed's "authentication error" text is wrong). MSG.
    80300008: _seed(80300008, Next.MESSAGE),
    # -- table 2 PROPOSAL codes: not in the seed, so NONE with the code kept in raw ----------
    # 80200001 OAuth authentication error (HTTP 401): REAUTH once, then CONFIG.
    80200001: _none(Next.CONFIG, reauth=True),
    # 80200003 OAuth token expired (HTTP 401): REAUTH once, then CONFIG (N1).
    80200003: _none(Next.CONFIG, reauth=True),
    # 80100001 some request parameters wrong (HTTP 400). MSG.
    80100001: _none(Next.MESSAGE),
    # 80100016 the message contains sensitive words. MSG.
    80100016: _none(Next.MESSAGE),
    # 80300010 token count not within 1..1000. MSG.
    80300010: _none(Next.MESSAGE),
    # 80600003 meaning unconfirmed, auth-related in some lists: REAUTH once, then section 5.
    80600003: _none(Next.MESSAGE, reauth=True),
}

# Transport answers without a usable body code (table 2 PROPOSAL rows and section 5).
_TRAFFIC_CONTROL = _none(Next.RETRY)  # HTTP 503, any body: proposed 80000503
_UNAVAILABLE = _none(Next.RETRY)  # HTTP 502/504, other 5xx, network failure: proposed 80000502
_AUTH_REFUSED = _none(Next.CONFIG)  # OAuth endpoint 4xx (bad id or secret): proposed 80000401
_BARE_401 = _none(Next.CONFIG, reauth=True)  # 401 with no code: treated like 80200001
_WRONG_URL = _none(Next.CONFIG)  # 404 with no code: base_url or app_id is wrong (sec. 5, final)
_UNKNOWN_FINAL = _none(Next.MESSAGE)  # any other unmapped answer: final, token kept (sec. 5)


@dataclass(frozen=True, slots=True)
class _Answer:
    """One send answer, or the lack of one (``http_status`` None)."""

    http_status: int | None
    code: int | None
    msg: str
    retry_after_s: float | None
    raw: str  # what to keep when there is no code (transport, HTTP status)


class _AuthFailed(Exception):
    """No access token could be had; ``judged`` is the outcome for every delivery."""

    def __init__(self, judged: Judged) -> None:
        super().__init__(judged.raw)
        self.judged = judged


def _raw(code: int, msg: str, tokens: Sequence[str]) -> str:
    """``code`` and ``msg`` for ``Outcome.raw``: never a token, never a JSON listing."""
    listing = msg.strip().startswith(("{", "["))
    return code_and_reason(code, "" if listing else msg, tokens)


def _listed(msg: str) -> dict[str, str | None] | None:
    """Failed tokens named in a partial answer's ``msg``, with the v3 reason when given.

    v1 puts ``illegal_tokens`` (an array) in the JSON string; v3 puts ``illegalTokens``
    keyed by reason. Both are accepted. None when ``msg`` lists nothing we can read.
    """
    try:
        data = json.loads(msg)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    listed: dict[str, str | None] = {}
    for key in ("illegal_tokens", "illegalTokens"):
        value = data.get(key)
        if isinstance(value, list):
            listed.update({t: None for t in value if isinstance(t, str)})
        elif isinstance(value, dict):
            for reason, tokens in value.items():
                if isinstance(tokens, list):
                    listed.update({t: str(reason) for t in tokens if isinstance(t, str)})
    return listed if listed else None


def _token_verdict(code: int, reason: str | None) -> Judged:
    """A listed token's verdict; v3 reasons that are not about the token are not DROP (N8)."""
    if reason is None or "token" in reason.lower():
        verdict = _CODES[code]
    elif reason == "noRight":
        verdict = _seed(code, Next.CONFIG)  # a missing right of our app: keep the token
    else:
        verdict = _UNKNOWN_FINAL  # an unknown reason never drops a token (section 5)
    return Judged(verdict, f"{code} {reason}" if reason else str(code))


def _judge(answer: _Answer, tokens: Sequence[str]) -> dict[str, Judged]:
    """Each token's verdict for one send answer."""
    status, code, retry = answer.http_status, answer.code, answer.retry_after_s

    def every(verdict: Verdict, raw: str) -> dict[str, Judged]:
        return {token: Judged(verdict, raw, retry) for token in tokens}

    if status is None or (status >= 500 and code is None):
        return every(_UNAVAILABLE, answer.raw)
    if status == 503:  # traffic control, whatever the body says
        return every(
            _TRAFFIC_CONTROL, answer.raw if code is None else _raw(code, answer.msg, tokens)
        )
    if code is None:
        if status == 401:
            return every(_BARE_401, answer.raw)
        if status == 404:
            return every(_WRONG_URL, answer.raw)
        if status == 429:
            return every(_UNAVAILABLE, answer.raw)
        return every(_UNKNOWN_FINAL, answer.raw)
    if code == SUCCESS:
        return every(_DONE, str(code))

    if code in (PARTIAL, ALL_INVALID):
        listed = _listed(answer.msg)
        if code == PARTIAL and listed is None:
            # Partial, but we cannot tell which tokens failed: drop none (section 5).
            return every(_UNKNOWN_FINAL, f"{code} without a readable token list")
        listed = listed or {}
        judged: dict[str, Judged] = {}
        for token in tokens:
            if token in listed:
                judged[token] = _token_verdict(code, listed[token])
            elif code == ALL_INVALID:
                judged[token] = Judged(_CODES[ALL_INVALID], _raw(code, answer.msg, tokens))
            else:
                judged[token] = Judged(_DONE, str(code))
        return judged

    verdict = _CODES.get(code)
    if verdict is None:
        verdict = _UNAVAILABLE if status >= 500 else _UNKNOWN_FINAL
    return every(verdict, _raw(code, answer.msg, tokens))


def _click_action(item: Outbound) -> dict[str, Any]:
    """MPS PushAction: 0 opens ``uri`` as a web page, 1 as an intent; no uri opens the app."""
    if item.uri is None:
        return {"type": 3}
    if item.push_action == 1:
        return {"type": 1, "intent": item.uri}
    return {"type": 2, "url": item.uri}


def _message(item: Outbound, now: datetime) -> dict[str, Any] | Judged:
    """The ``message`` object (tokens left out) for one delivery, or a field-limit verdict."""
    expires_at = item.expires_at
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    ttl_s = math.ceil((expires_at - now).total_seconds())
    if ttl_s < 1:
        return Judged(_seed(80100004, Next.MESSAGE), "ttl: the message expired before sending")

    data: dict[str, Any] = {"msg_key": item.msg_key, "extras": dict(item.extras)}
    android: dict[str, Any] = {"ttl": f"{min(ttl_s, MAX_TTL_S)}s"}
    if item.silent:
        data.update(title=item.title, content=item.content)
    else:
        android["notification"] = {
            "title": item.title,
            "body": item.content,
            "click_action": _click_action(item),
        }
    message: dict[str, Any] = {"data": _compact(data), "android": android}

    size = len(_compact({"validate_only": False, "message": message}).encode("utf-8"))
    if size > MAX_MESSAGE_BYTES:
        return Judged(
            _seed(80300008, Next.MESSAGE),
            f"message: {size} bytes without tokens (title, content and extras); "
            f"Huawei allows at most {MAX_MESSAGE_BYTES}",
        )
    return message


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class HuaweiChannel(VendorChannel):
    """Huawei Push Kit for one app: OAuth token cache, grouped batch sends, mapped answers."""

    name: ClassVar[str] = "hms"
    max_batch: ClassVar[int] = MAX_TOKENS
    secret_keys: ClassVar[frozenset[str]] = frozenset({"client_secret"})

    def __init__(
        self,
        *,
        app_id: str,
        client_secret: str,
        base_url: str = PUSH_URL,
        token_url: str = TOKEN_URL,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.app_id = app_id
        self._client_secret = client_secret
        self.send_url = f"{base_url.rstrip('/')}/v1/{quote(app_id, safe='')}/messages:send"
        self.token_url = token_url
        self._http = http or httpx.AsyncClient(timeout=TIMEOUT)
        self._own_http = http is None

        self._tokens = TokenCache(self._fetch_token)

    @property
    def token_refreshes(self) -> int:
        """Access tokens fetched so far (the first one included)."""
        return self._tokens.fetches

    def __repr__(self) -> str:
        return f"HuaweiChannel(app_id={self.app_id!r}, send_url={self.send_url!r})"

    @classmethod
    def create(cls, config: ChannelConfig, http: httpx.AsyncClient | None = None) -> HuaweiChannel:
        if config.vendor != cls.name:
            raise ConfigError(f"{cls.name}: given the settings of channel {config.vendor!r}")
        app_id = text_setting(config, "app_id")
        if any(ch in app_id for ch in "/?# "):
            raise ConfigError(f"{config.vendor}: setting 'app_id' must be the numeric app id")
        client_secret = text_setting(config, "client_secret")

        base_override = config.base_url or config.values.get("base_url")
        base_url = PUSH_URL
        if base_override not in (None, ""):
            base_url = url_setting(config, "base_url", base_override)
        token_override = config.values.get("token_url")
        if token_override not in (None, ""):
            token_url = url_setting(config, "token_url", token_override)
        elif base_url != PUSH_URL:
            token_url = base_url + TOKEN_PATH  # one stand-in (the fake) serves both
        else:
            token_url = TOKEN_URL

        unknown = sorted(set(config.values) - _KNOWN_SETTINGS)
        if unknown:
            logger.warning("hms: ignoring unknown settings %s", unknown)
        return cls(
            app_id=app_id,
            client_secret=client_secret,
            base_url=base_url,
            token_url=token_url,
            http=http,
        )

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # -- sending -------------------------------------------------------------------------------

    async def send(self, batch: Sequence[Outbound]) -> list[Outcome]:
        now = datetime.now(UTC)
        return await send_by_message(
            batch, lambda item: _message(item, now), MAX_TOKENS, self._send_group
        )

    async def _send_group(self, message: dict[str, Any], group: list[Outbound]) -> list[Outcome]:
        tokens = list(dict.fromkeys(item.token for item in group))
        body = _compact({"validate_only": False, "message": {**message, "token": tokens}})
        judged = await self._deliver(body.encode("utf-8"), tokens)
        return [judged[item.token].outcome(item) for item in group]

    async def _deliver(self, body: bytes, tokens: Sequence[str]) -> dict[str, Judged]:
        """Send; on an auth answer, refresh the token once and send again."""
        stale: str | None = None
        for attempt in (1, 2):
            try:
                access = await (
                    self._tokens.current() if stale is None else self._tokens.renew(stale)
                )
            except _AuthFailed as failed:
                return {token: failed.judged for token in tokens}
            answer = await self._post(body, access)
            judged = _judge(answer, tokens)
            if not any(j.verdict.reauth for j in judged.values()):
                return judged
            if attempt == 1:
                logger.info("hms: auth answer %s; refreshing the access token", answer.code)
                stale = access
            else:
                logger.warning("hms: auth answer %s survived a token refresh", answer.code)
        return judged

    async def _post(self, body: bytes, access: str) -> _Answer:
        headers = {
            "Content-Type": "application/json;charset=utf-8",
            "Authorization": f"Bearer {access}",
        }
        try:
            response = await self._http.post(self.send_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            logger.info("hms: send failed without an answer: %s", type(exc).__name__)
            return _Answer(None, None, "", None, f"network: {type(exc).__name__}")

        retry = parse_retry_after(response.headers.get("retry-after"))
        raw = f"HTTP {response.status_code}"
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {}

        # Legacy NSP gateway errors come in a header, beside (not in) the business body.
        nsp = as_int(response.headers.get("nsp_status"))
        code = nsp if nsp is not None else as_int(data.get("code"))
        msg = data.get("msg") if nsp is None else data.get("error")
        request_id = data.get("requestId")
        logger.debug("hms: HTTP %d code %s requestId %s", response.status_code, code, request_id)
        text = msg if isinstance(msg, str) else ""
        return _Answer(response.status_code, code, text, retry, raw)

    # -- OAuth ---------------------------------------------------------------------------------

    async def _fetch_token(self) -> tuple[str, float]:
        """A new access token and how long to use it: until shortly before it expires."""
        form = {
            "grant_type": "client_credentials",
            "client_id": self.app_id,
            "client_secret": self._client_secret,
        }
        headers = {"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"}
        try:
            response = await self._http.post(self.token_url, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raw = f"oauth: network: {type(exc).__name__}"
            logger.warning("hms: %s", raw)
            raise _AuthFailed(Judged(_UNAVAILABLE, raw)) from exc

        status = response.status_code
        try:
            data = response.json()
        except ValueError:
            data = None
        if status >= 500 or status == 429:
            raw = f"oauth: HTTP {status}"
            logger.warning("hms: %s", raw)
            retry = parse_retry_after(response.headers.get("retry-after"))
            raise _AuthFailed(Judged(_UNAVAILABLE, raw, retry))
        if status != 200:
            parts = [f"oauth: HTTP {status}"]
            if isinstance(data, dict):
                parts += [
                    f"{key}={data[key]}"
                    for key in ("error", "sub_error", "error_description")
                    if key in data
                ]
            raw = " ".join(parts)[:200]
            logger.warning("hms: access token refused: %s", raw)
            raise _AuthFailed(Judged(_AUTH_REFUSED, raw))

        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            # Most likely token_url points at something that is not Huawei's OAuth server.
            raw = "oauth: HTTP 200 without an access_token"
            logger.warning("hms: %s", raw)
            raise _AuthFailed(Judged(_AUTH_REFUSED, raw))
        expires_in = data.get("expires_in") if isinstance(data, dict) else None
        lifetime = (
            float(expires_in)
            if isinstance(expires_in, int | float) and expires_in > 0
            else DEFAULT_EXPIRES_IN_S
        )
        logger.info("hms: access token fetched for app %s (%.0f s)", self.app_id, lifetime)
        return token, lifetime - min(REFRESH_MARGIN_S, lifetime / 10)
