"""The one small interface every vendor channel implements, and the outcome it returns.

A channel gets a batch of deliveries for one app (at most ``max_batch``; the caller splits)
and returns exactly one :class:`Outcome` per delivery, in any order, keyed by delivery id.
Transport failures that touch the whole batch (no connection, 5xx, an auth answer that
survives one refresh) are outcomes too, one per delivery: ``send`` raises only for bugs.

Retries, backoff, concurrency limits and writing outcomes are the caller's job (the vendor
dispatcher), not the channel's. A channel does refresh its own auth token, once, when the
vendor says it expired, and re-sends then; it never mints a token per request.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import httpx

from openmps.errors import ConfigError
from openmps.statuses import Status


class Next(enum.Enum):
    """What the dispatcher does after an outcome (status-codes.md, action classes)."""

    DONE = "done"  # accepted by the vendor: (common, 2)
    RETRY = "retry"  # try again after ``retry_after_s`` (or backoff), within validity
    DROP_TOKEN = "drop_token"  # the device's vendor token is dead: forget it, do not resend
    CONFIG = "config"  # our credentials or app settings are wrong: surface, do not retry
    MESSAGE = "message"  # this message cannot be sent as built: final, token kept


@dataclass(frozen=True, slots=True)
class Outbound:
    """One delivery to hand to a vendor gateway."""

    delivery_id: int
    token: str  # the device's vendor token (APNs device token, FCM registration token, ...)
    title: str
    content: str
    extras: Mapping[str, str]
    expires_at: datetime  # absolute, UTC; channels derive the vendor's TTL from it
    msg_key: str
    task_id: int
    silent: bool = False
    push_action: int = 0
    uri: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the vendor said about one delivery."""

    delivery_id: int
    status: Status  # the seed's (channel, code); (common, 2) on success
    next: Next
    raw: str | None = None  # the vendor's own code or reason, kept verbatim (never a token)
    retry_after_s: float | None = None  # the vendor's Retry-After, when it gave one


@dataclass(frozen=True)
class ChannelConfig:
    """Per-app settings of one vendor channel, secrets included (see ``secret_keys``)."""

    vendor: str
    values: Mapping[str, Any]
    base_url: str | None = None  # overrides the vendor's production URL (fakes, sandboxes)
    secret_keys: frozenset[str] = field(default_factory=frozenset)

    def __repr__(self) -> str:
        shown = {k: ("<hidden>" if k in self.secret_keys else v) for k, v in self.values.items()}
        return f"ChannelConfig(vendor={self.vendor!r}, values={shown}, base_url={self.base_url!r})"

    def require(self, key: str) -> Any:
        value = self.values.get(key)
        if value in (None, ""):
            raise ConfigError(
                f"{self.vendor}: setting {key!r} is missing; set it with "
                f"`openmps channel set APP {self.vendor} {key}=...`"
            )
        return value


class VendorChannel(abc.ABC):
    """One vendor gateway for one app."""

    name: ClassVar[str]  # the route key: "apns", "fcm", "hms", "xiaomi", "oppo", "vivo"
    max_batch: ClassVar[int] = 1  # most deliveries one ``send`` may take
    secret_keys: ClassVar[frozenset[str]] = frozenset()  # settings that are secrets

    @classmethod
    @abc.abstractmethod
    def create(cls, config: ChannelConfig, http: httpx.AsyncClient | None = None) -> VendorChannel:
        """Check ``config`` (ConfigError naming the bad key) and build the channel."""

    @abc.abstractmethod
    async def send(self, batch: Sequence[Outbound]) -> list[Outcome]:
        """Send a batch; one outcome per delivery."""

    async def close(self) -> None:  # noqa: B027  (optional for channels that hold nothing)
        """Release connections."""
