"""What every fake gateway shares: scenario control and the record of received requests.

Control from Python (tests): ``fake.scenario.set(Rule(...), token=...)``, ``fake.received``.
Control over HTTP (``openmps fakes serve`` users), on the fake's own port:

- ``POST /__fake__/scenario`` ``{"token": "..." | null, "rule": {...Rule fields...}}``
- ``DELETE /__fake__/scenario``: back to always succeeding
- ``GET /__fake__/received``: what was received, oldest first
- ``DELETE /__fake__/received``
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Rule:
    """How to answer instead of succeeding. Vendor fakes build these for their own errors.

    ``status``/``body``/``headers`` are the HTTP answer (a vendor that reports errors with
    HTTP 200 gets ``status=200`` and its error body). ``action`` names a transport fault the
    fake acts out instead of answering: ``"close"`` (drop the connection without an answer),
    ``"goaway"`` (HTTP/2 GOAWAY; APNs), ``"expire_auth"`` (every auth token issued so far
    becomes expired, then the request is judged normally). ``delay_s`` waits before answering.
    ``times`` is how many matching requests the rule applies to; None means every one.
    """

    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    action: str | None = None
    delay_s: float = 0.0
    times: int | None = None


class Scenario:
    """Rules by device token (``None`` = any token); a token's own rule wins."""

    def __init__(self) -> None:
        self._rules: dict[str | None, Rule] = {}

    def set(self, rule: Rule, token: str | None = None) -> None:
        self._rules[token] = rule

    def clear(self) -> None:
        self._rules.clear()

    def take(self, token: str | None) -> Rule | None:
        """The rule for this request, counting it against ``times``."""
        key = token if token in self._rules else None
        rule = self._rules.get(key)
        if rule is None:
            return None
        if rule.times is not None:
            rule.times -= 1
            if rule.times <= 0:
                del self._rules[key]
        return rule

    def as_json(self) -> dict[str, Any]:
        return {str(k): asdict(v) for k, v in self._rules.items()}


@dataclass(frozen=True)
class Received:
    """One request the fake got (auth headers kept: this is a test double's own log)."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.time)


class Recorder:
    """The last ``limit`` requests, and an event to wait for a count."""

    def __init__(self, limit: int = 100_000) -> None:
        self.items: deque[Received] = deque(maxlen=limit)
        self._changed = asyncio.Event()

    def add(self, item: Received) -> None:
        self.items.append(item)
        self._changed.set()

    def clear(self) -> None:
        self.items.clear()

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.items) < count:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"got {len(self.items)} requests, wanted {count}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue
        return list(self.items)
