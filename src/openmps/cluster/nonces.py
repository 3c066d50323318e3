"""Replay protection shared by every API node: signature nonces remembered in Redis.

:class:`RedisNonceCache` is the scale-out twin of :class:`openmps.mps.signature.NonceCache`:
same method, same refusals (``MissingSignatureNonce``, ``SignatureNonceUsed``), but a nonce
seen by any API node is refused by all of them for ``window_s`` seconds. ``remember`` is a
coroutine here. :class:`LocalNonces` gives the in-process cache the same coroutine shape, so
the runtime can hold either behind :class:`NonceStore`.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from openmps.cluster.redis import DEFAULT_PREFIX, check_prefix, decoded, key
from openmps.errors import ApiError
from openmps.mps.signature import NonceCache

_MAX_SHOWN = 80


class NonceStore(Protocol):
    """What the API needs from replay protection."""

    async def remember(self, access_key_id: str, nonce: str, now: float) -> None: ...


def _missing() -> ApiError:
    return ApiError(
        400,
        "MissingSignatureNonce",
        "the x-acs-signature-nonce header is missing or empty; send a fresh random "
        "value (for example 32 hex digits) with every request and sign it",
    )


def _used(nonce: str, window_s: float) -> ApiError:
    shown = repr(nonce[:_MAX_SHOWN]) + ("..." if len(nonce) > _MAX_SHOWN else "")
    return ApiError(
        400,
        "SignatureNonceUsed",
        f"the signature nonce {shown} was already used within the last {window_s:g} s; "
        "generate a new nonce for every request, including retries",
    )


class RedisNonceCache:
    """Remembers ``x-acs-signature-nonce`` values in Redis to refuse replayed requests.

    Each (AccessKey id, nonce) pair becomes one key, written with ``SET NX`` and an expiry of
    ``window_s``: the first request to write it passes, any other within the window (on this
    node or another) is refused. Redis ages the keys with its own clock, so the ``now`` given
    to :meth:`remember` is not used; it is kept for the signature of ``NonceCache``.

    The key holds a random token of the writer, read back with ``SET ... NX GET``: when a
    connection breaks after Redis wrote the key but before the reply arrived, the client's
    automatic retry finds its own token and the request still passes, rather than being
    refused as its own replay.

    Memory is bounded by the window rather than by a count: about 100 bytes per request seen
    in the last ``window_s`` seconds. Set ``window_s`` to at least twice the date skew window,
    as for ``NonceCache``.

    If Redis cannot be reached the request is refused with HTTP 503 ``ServiceUnavailable``:
    accepting it would give up replay protection.
    """

    def __init__(self, client: Redis, *, window_s: float, prefix: str = DEFAULT_PREFIX) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s  # how long a nonce stays used, seconds
        self._client = decoded(client)
        self._prefix = check_prefix(prefix)
        self._window_ms = max(1, round(window_s * 1000))

    def key_of(self, access_key_id: str, nonce: str) -> str:
        """The Redis key that records this nonce: a 128-bit digest, so long nonces cost nothing."""
        digest = hashlib.sha256(f"{access_key_id}\0{nonce}".encode()).hexdigest()[:32]
        return key(self._prefix, "nonce", digest)

    async def remember(self, access_key_id: str, nonce: str, now: float = 0.0) -> None:
        """Record a nonce; raise :class:`ApiError` (400) if it was seen within the window."""
        if not nonce or not nonce.strip():
            raise _missing()
        token = os.urandom(8).hex()
        try:
            previous = await self._client.set(
                self.key_of(access_key_id, nonce), token, nx=True, get=True, px=self._window_ms
            )
        except RedisError as exc:
            raise ApiError(
                503,
                "ServiceUnavailable",
                f"replay protection is unavailable: the Redis server cannot be reached ({exc}); "
                "try the request again later",
            ) from None
        if previous is not None and previous != token:
            raise _used(nonce, self.window_s)


class LocalNonces:
    """The in-process :class:`NonceCache` behind the coroutine interface of :class:`NonceStore`."""

    def __init__(self, cache: NonceCache) -> None:
        self.cache = cache

    async def remember(self, access_key_id: str, nonce: str, now: float) -> None:
        self.cache.remember(access_key_id, nonce, now)
