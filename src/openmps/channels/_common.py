"""What the vendor channels share: the cached auth token, Retry-After, vendor text for ``raw``,
settings checks, and (for channels that send one message to many tokens) verdicts per token
and grouping by message.

Private to :mod:`openmps.channels`; each channel keeps its own answer tables and wording.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome
from openmps.errors import ConfigError
from openmps.statuses import Status

RAW_MAX = 300  # characters of a vendor answer kept in ``Outcome.raw`` by :func:`clip`
REASON_MAX = 200  # characters of a vendor reason kept by :func:`code_and_reason`

MessageT = TypeVar("MessageT")  # what one request of send_by_message carries


class TokenCache:
    """A channel's auth token, shared by all its sends.

    ``fetch`` asks the vendor for a token and says for how many seconds to use it. The token
    is fetched on first use, again once it is stale, and when a send says the vendor refused
    it (:meth:`renew`). One fetch runs at a time; callers that waited for it take its token,
    so a burst of sends that all meet an expired token costs one fetch.

    A failed fetch raises what ``fetch`` raised; by default each caller that waited for it
    then tries a fetch of its own. ``share_failures_s``: the failure is raised again to the
    callers that ask within that many seconds (those that waited for it ask at once).
    ``forget_on_failure``: the failure drops the token too, and is raised again to the callers
    that waited for it or hold a token from before it, until a fetch succeeds.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[tuple[str, float]]],
        *,
        share_failures_s: float | None = None,
        forget_on_failure: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._share_failures_s = share_failures_s
        self._forget_on_failure = forget_on_failure
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None  # None: none yet, or forgotten
        self._until = 0.0  # clock() time from which the token is stale
        self._attempts = 0  # fetches finished, failed ones included
        self._issued: tuple[str, int] | None = None  # the last token fetched, and its attempt
        self._failure: tuple[float, int, Exception] | None = None  # when, which attempt, what
        self.fetches = 0  # tokens fetched so far

    async def current(self) -> str:
        """The cached token; a new one when there is none yet or it is stale."""
        token = self._token
        if token is not None and self._clock() < self._until:
            return token
        return await self.renew(token)

    async def renew(self, refused: str | None) -> str:
        """A new token, unless another caller already replaced ``refused`` with a fresh one."""
        # The attempt the caller's view dates from: its token's, or now when it holds none.
        if refused is None:
            seen = self._attempts
        else:
            seen = self._issued[1] if self._issued and self._issued[0] == refused else 0
        async with self._lock:
            token = self._token
            if token is not None and token != refused and self._clock() < self._until:
                return token
            if self._failure is not None:
                failed_at, attempt, error = self._failure
                recent = self._share_failures_s is not None and (
                    self._clock() - failed_at < self._share_failures_s
                )
                if recent or (self._forget_on_failure and attempt > seen):
                    raise error
            try:
                token, lifetime_s = await self._fetch()
            except Exception as exc:
                self._attempts += 1
                self._failure = (self._clock(), self._attempts, exc)
                if self._forget_on_failure:
                    self._token = None
                raise
            self._attempts += 1
            self._failure = None
            self._token, self._until = token, self._clock() + lifetime_s
            self._issued = (token, self._attempts)
            self.fetches += 1
            return token


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 10.2.3);
    None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def as_int(value: Any) -> int | None:
    """An integer code from JSON: an int (not a bool) or a string of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def masked(token: str) -> str:
    """A device or auth token as logs and ``raw`` may show it: at most its last four
    characters."""
    return f"...{token[-4:]}" if len(token) > 8 else "..."


def redact(text: str, tokens: Iterable[str], mask: Callable[[str], str] = masked) -> str:
    """``text`` with each of ``tokens`` in it replaced by ``mask(token)``."""
    for token in tokens:
        if token:
            text = text.replace(token, mask(token))
    return text


def clip(text: str, hide: Iterable[str] = (), *, limit: int = RAW_MAX) -> str:
    """A vendor answer fit for ``raw``: the ``hide`` tokens masked, length bounded."""
    return redact(text, hide)[:limit]


def code_and_reason(code: int, reason: Any, hide: Iterable[str], *, limit: int = REASON_MAX) -> str:
    """``code`` and the vendor's reason for ``raw``; the code alone when the reason is empty,
    not text, or quotes one of the ``hide`` tokens."""
    detail = reason.strip() if isinstance(reason, str) else ""
    if not detail or any(token and token in detail for token in hide):
        return str(code)
    return f"{code} {detail[:limit]}"


# -- settings ----------------------------------------------------------------------------------


def text_setting(config: ChannelConfig, key: str) -> str:
    """A required text setting, without outer spaces."""
    value = config.require(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{config.vendor}: setting {key!r} must be a non-empty string")
    return value.strip()


def url_setting(config: ChannelConfig, key: str, value: Any) -> str:
    """An http(s) URL setting (``value``, which may come from ``config.base_url``), without a
    trailing slash."""
    if not isinstance(value, str):
        raise ConfigError(f"{config.vendor}: setting {key!r} must be a URL string")
    try:
        url = httpx.URL(value.strip())
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{config.vendor}: setting {key!r} is not a valid URL") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"{config.vendor}: setting {key!r} must be an http(s) URL with a host")
    return str(url).rstrip("/")


# -- one message to many tokens (Huawei, Xiaomi) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one vendor answer means for a delivery."""

    status: Status
    next: Next  # after the one refresh, when ``reauth``
    reauth: bool = False  # refresh the access token and resend once before settling


@dataclass(frozen=True, slots=True)
class Judged:
    """A verdict on one delivery, with what to keep in ``raw`` and the vendor's Retry-After."""

    verdict: Verdict
    raw: str
    retry_after_s: float | None = None

    def outcome(self, item: Outbound) -> Outcome:
        verdict = self.verdict
        retry = self.retry_after_s if verdict.next is Next.RETRY else None
        return Outcome(item.delivery_id, verdict.status, verdict.next, self.raw, retry)


async def send_by_message(
    batch: Sequence[Outbound],
    build: Callable[[Outbound], MessageT | Judged],
    limit: int,
    send_group: Callable[[MessageT, list[Outbound]], Awaitable[list[Outcome]]],
) -> list[Outcome]:
    """Send a batch as one request per distinct message (``build``; equal when equal as JSON)
    of up to ``limit`` deliveries, all at once. A delivery ``build`` judges instead (a field
    limit broken) is not sent."""
    outcomes: list[Outcome] = []
    groups: dict[str, tuple[MessageT, list[Outbound]]] = {}
    for item in batch:
        built = build(item)
        if isinstance(built, Judged):
            outcomes.append(built.outcome(item))
            continue
        key = json.dumps(built, sort_keys=True)
        groups.setdefault(key, (built, []))[1].append(item)

    jobs = [
        send_group(message, members[start : start + limit])
        for message, members in groups.values()
        for start in range(0, len(members), limit)
    ]
    for done in await asyncio.gather(*jobs):
        outcomes.extend(done)
    return outcomes


class AuthFailed(Exception):
    """The vendor's auth endpoint refused us or could not be reached.

    ``verdict`` is the vendor module's own verdict for that failure (each vendor has its own
    verdict type), ``raw`` the answer as kept in the delivery's detail.
    """

    def __init__(self, verdict: Any, raw: str) -> None:
        super().__init__(raw)
        self.verdict = verdict
        self.raw = raw
