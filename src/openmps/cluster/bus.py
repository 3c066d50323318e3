"""The dispatch work bus: a Redis stream that carries work from API nodes to workers.

:class:`DispatchStream` is read through one consumer group, so each entry goes to exactly one
worker; a worker that dies holding entries loses them to a live one through
:meth:`DispatchStream.reclaim`. Entries are small JSON objects naming what to do; the runtime
publishes ``{"kind": "vendor", "deliveries": [456, 457]}`` (openmps.scaleout.worker). The
worker reads the rest from the store and claims each delivery there before sending it, so an
entry handled twice (reclaimed from a slow worker, or published again) does no harm.

Frames for devices travel the other way, to gateway nodes: see :mod:`openmps.cluster.routing`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from openmps.cluster.redis import (
    DEFAULT_PREFIX,
    SOCKET_TIMEOUT_S,
    check_node_id,
    check_prefix,
    decoded,
    key,
)

logger = logging.getLogger(__name__)

STREAM_MAXLEN = 1_000_000
"""Default bound of the dispatch stream, in entries (trimmed approximately, ``MAXLEN ~``)."""

MAX_BLOCK_MS = int(SOCKET_TIMEOUT_S * 1000) // 3
"""Longest blocking read allowed: well inside the connection's read timeout."""

PUBLISH_CHUNK = 1000
"""XADDs per pipelined round trip."""

GROUP = "workers"
"""The consumer group every worker reads the dispatch stream through."""

_FIELD = "e"  # the one field of a stream entry: the JSON text


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One unit of dispatch work as a worker receives it."""

    id: str
    """The stream id (``<ms>-<seq>``); give it to :meth:`DispatchStream.ack` when done."""
    data: dict[str, Any]
    """The JSON object that was published."""


@dataclass(frozen=True, slots=True)
class StreamDepth:
    """How much work the dispatch stream holds, for metrics."""

    length: int
    """Entries in the stream: published and not yet acked (an ack deletes the entry)."""
    pending: int
    """Entries delivered to a worker and not yet acked."""

    @property
    def waiting(self) -> int:
        """Entries no worker has received yet."""
        return max(0, self.length - self.pending)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DispatchStream:
    """Dispatch work in a Redis stream, claimed once through a consumer group.

    ``maxlen`` bounds the stream (approximately, so trimming stays cheap); since acked entries
    are deleted, only a backlog beyond ``maxlen`` is trimmed, oldest first. A trimmed entry is
    lost to Redis but not to the store: its delivery stays pending there and is resumed from it
    (``docs/scale-out.md``, "What happens when something is lost").
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        maxlen: int = STREAM_MAXLEN,
    ) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.maxlen = maxlen  # approximate bound of the stream, entries
        self.key = key(check_prefix(prefix), "dispatch")  # the stream
        self._client = decoded(client)
        self._group_ready = False  # the group is known to exist

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group if missing (done by the other calls too).

        The group starts at the beginning of the stream, so entries published before the first
        worker started are not skipped.
        """
        try:
            await self._client.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def publish(self, entries: Iterable[Mapping[str, Any]]) -> list[str]:
        """Append entries; return their stream ids, in order.

        Each entry is a JSON object with a string ``kind``; ``ValueError`` otherwise (checked
        for all before any is sent). Sent in pipelined chunks of ``PUBLISH_CHUNK``.
        """
        payloads = [_encode_entry(entry) for entry in entries]
        ids: list[str] = []
        for chunk in _chunks(payloads, PUBLISH_CHUNK):
            async with self._client.pipeline(transaction=False) as pipe:
                for payload in chunk:
                    pipe.xadd(self.key, {_FIELD: payload}, maxlen=self.maxlen, approximate=True)
                ids.extend(str(entry_id) for entry_id in await pipe.execute())
        return ids

    async def consume(
        self, consumer: str, *, count: int = 100, block_ms: int | None = 1000
    ) -> list[StreamEntry]:
        """Receive up to ``count`` entries no worker has received yet; they are now ours.

        Waits up to ``block_ms`` milliseconds for the first entry (``None``: do not wait; at
        most ``MAX_BLOCK_MS``; 0, which Redis reads as "forever", is refused). An empty list
        means nothing arrived. Each entry stays pending for ``consumer`` until :meth:`ack`.
        """
        check_node_id(consumer, what="consumer")
        if count < 1:
            raise ValueError("count must be at least 1")
        if block_ms is not None and not 1 <= block_ms <= MAX_BLOCK_MS:
            raise ValueError(f"block_ms must be None or between 1 and {MAX_BLOCK_MS}")
        reply = await self._with_group(
            lambda: self._client.xreadgroup(
                GROUP, consumer, {self.key: ">"}, count=count, block=block_ms
            )
        )
        pairs: list[tuple[str | None, dict[str, str] | None]] = []
        for _, stream_entries in reply or []:  # [[stream, [(id, fields), ...]]], or None
            pairs.extend(stream_entries)
        return await self._decode(pairs)

    async def ack(self, ids: Iterable[str]) -> int:
        """Mark entries done: drop them from the pending list and the stream; return how many
        were pending. Acking an id twice, or one another worker acked, is harmless."""
        id_list = list(ids)
        if not id_list:
            return 0
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xack(self.key, GROUP, *id_list)
            pipe.xdel(self.key, *id_list)
            acked, _ = await pipe.execute()
        return int(acked)

    async def reclaim(
        self, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[StreamEntry]:
        """Take over up to ``count`` entries pending longer than ``min_idle_ms`` with any worker.

        Meant for entries of a worker that died: choose ``min_idle_ms`` well above the time a
        live worker needs for an entry, or a slow worker's entries are handled twice. Entries
        trimmed from the stream while pending are dropped (logged); the store still has them.
        """
        check_node_id(consumer, what="consumer")
        if min_idle_ms < 0:
            raise ValueError("min_idle_ms must not be negative")
        if count < 1:
            raise ValueError("count must be at least 1")
        claimed: list[tuple[str | None, dict[str, str] | None]] = []
        start = "0-0"
        while len(claimed) < count:
            reply = await self._with_group(
                partial(
                    self._client.xautoclaim,
                    self.key,
                    GROUP,
                    consumer,
                    min_idle_ms,
                    start,
                    count=count - len(claimed),
                )
            )
            start = str(reply[0])
            claimed.extend(reply[1])
            gone = reply[2] if len(reply) > 2 else []
            if gone:
                logger.warning(
                    "dispatch stream: %d pending entries were trimmed before being done; "
                    "their deliveries wait in the store",
                    len(gone),
                )
            if start == "0-0":
                break
        return await self._decode(claimed)

    async def depth(self) -> StreamDepth:
        """Stream length and pending count (two commands in one round trip)."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.xlen(self.key)
            pipe.xpending(self.key, GROUP)
            length, pending = await pipe.execute(raise_on_error=False)
        if isinstance(length, Exception):
            raise length
        if isinstance(pending, ResponseError) and "NOGROUP" in str(pending):
            pending = {"pending": 0}
        elif isinstance(pending, Exception):
            raise pending
        return StreamDepth(length=int(length), pending=int(pending["pending"]))

    async def prune_consumers(self, *, min_idle_ms: int) -> list[str]:
        """Remove consumers that hold no entries and were idle ``min_idle_ms``; return them.

        Every worker process names a consumer; without this the group lists each one that ever
        ran. Run it after :meth:`reclaim`, so a dead worker's entries have moved on first.
        """
        try:
            consumers = await self._client.xinfo_consumers(self.key, GROUP)
        except ResponseError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc):
                return []
            raise
        removed: list[str] = []
        for info in consumers:
            if int(info["pending"]) == 0 and int(info["idle"]) >= min_idle_ms:
                name = str(info["name"])
                await self._client.xgroup_delconsumer(self.key, GROUP, name)
                removed.append(name)
        return sorted(removed)

    async def _with_group(self, call: Callable[[], Awaitable[Any]]) -> Any:
        # The group can vanish (the key was deleted, FLUSHALL): create it again and retry once.
        if not self._group_ready:
            await self.ensure_group()
        try:
            return await call()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        logger.warning("dispatch stream %s had no consumer group; created it again", self.key)
        await self.ensure_group()
        return await call()

    async def _decode(
        self, pairs: Iterable[tuple[str | None, dict[str, str] | None]]
    ) -> list[StreamEntry]:
        entries: list[StreamEntry] = []
        poison: list[str] = []
        for entry_id, fields in pairs:
            if entry_id is None:
                continue
            data = _decode_entry(fields)
            if data is None:
                poison.append(str(entry_id))
            else:
                entries.append(StreamEntry(str(entry_id), data))
        if poison:
            # Nothing can handle them, and left pending they would come back on every reclaim.
            logger.warning("dispatch stream: dropped %d unreadable entries", len(poison))
            await self.ack(poison)
        return entries


def _encode_entry(entry: Mapping[str, Any]) -> str:
    if not isinstance(entry.get("kind"), str):
        raise ValueError(f"a dispatch entry needs a string 'kind', got {dict(entry)!r}")
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def _decode_entry(fields: Mapping[str, str] | None) -> dict[str, Any] | None:
    if not fields or _FIELD not in fields:
        return None
    try:
        data = json.loads(fields[_FIELD])
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("kind"), str) else None
