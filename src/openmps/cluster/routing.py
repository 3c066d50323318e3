"""Gateway routing: own-channel frames carried to the gateway node that holds the device.

One pub/sub channel per node (``<prefix>:gateway:<node>``). Pub/sub keeps nothing: a frame
published while the node is not subscribed is dropped. That is acceptable because the frame is
only a copy: the delivery row in the store stays pending until the device acks, and the gateway
sends pending rows on every (re)connect, and again for all its links when
:meth:`Subscription.__anext__` reports a resync. A per-node stream would survive a short outage,
but it would need trimming, acks and cleanup after a node dies, and would replay frames to links
that closed meanwhile; see ``docs/scale-out.md``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from openmps.cluster.redis import DEFAULT_PREFIX, check_node_id, check_prefix, decoded, key

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RoutedFrame:
    """A frame for one device, as :meth:`openmps.gateway.hub.Hub.offer` takes it."""

    device_pk: int
    delivery_id: int
    """The delivery the frame carries; negative for a revoke frame, as in the hub."""
    frame: str
    """The text frame, one line of JSON (no newline)."""


@dataclass(frozen=True, slots=True)
class RoutedBatch:
    """What a gateway node receives: frames to offer, or word that some may have been lost."""

    frames: list[RoutedFrame]
    resync: bool = False
    """True after the subscription broke and came back: frames routed meanwhile are lost, so
    send every link its pending deliveries from the store again (as on connect)."""


class FrameRouter:
    """Routes own-channel frames to the gateway node holding each device (pub/sub per node).

    A message carries many frames, one per line: ``<device pk> <delivery id> <frame>``. Frames
    are JSON without raw newlines, so this costs no escaping and no second JSON layer. A batch
    is cut into messages of at most ``max_message_chars`` characters, to stay far from Redis's
    output buffer limit for pub/sub clients (32 MB by default), beyond which it disconnects the
    subscriber.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_message_chars: int = 256 * 1024,
    ) -> None:
        if max_message_chars < 1024:
            raise ValueError("max_message_chars must be at least 1024")
        self._client = decoded(client)
        self._prefix = check_prefix(prefix)
        self._max_chars = max_message_chars  # longest pub/sub message, characters

    def channel(self, node: str) -> str:
        """The pub/sub channel of a gateway node."""
        return key(self._prefix, "gateway", check_node_id(node))

    async def route(self, node: str, frames: Iterable[RoutedFrame]) -> int:
        """Publish frames to ``node``; return how many subscribers the least lucky part reached.

        0 means the node is not listening (dead or restarting): those frames are dropped and
        their deliveries wait in the store for the device's next connect.
        """
        return (await self.route_many({node: frames})).get(node, 0)

    async def route_many(self, by_node: Mapping[str, Iterable[RoutedFrame]]) -> dict[str, int]:
        """:meth:`route` for several nodes in one pipelined round trip; nodes with no frames
        are left out of the result."""
        parts: list[tuple[str, str]] = []
        for node, frames in by_node.items():
            self.channel(node)  # refuse a bad node id before anything is sent
            parts.extend((node, message) for message in self._messages(frames))
        if not parts:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for node, message in parts:
                pipe.publish(self.channel(node), message)
            receivers = await pipe.execute()
        reached: dict[str, int] = {}
        for (node, _), count in zip(parts, receivers, strict=True):
            reached[node] = min(reached.get(node, int(count)), int(count))
        return reached

    def listen(self, node: str, *, poll_s: float = 1.0) -> Subscription:
        """The frames routed to ``node``, as an async iterator of :class:`RoutedBatch`.

        Use it as ``async with router.listen(node) as batches: async for batch in batches``:
        the ``async with`` returns once Redis confirmed the subscription, so start accepting
        devices after it, or frames routed in between are missed.
        """
        channel = self.channel(node)
        return Subscription(self._client, channel, poll_s=poll_s)

    def _messages(self, frames: Iterable[RoutedFrame]) -> Iterable[str]:
        lines: list[str] = []
        size = 0
        for item in frames:
            if "\n" in item.frame:
                raise ValueError(f"frame for device {item.device_pk} contains a newline")
            line = f"{item.device_pk} {item.delivery_id} {item.frame}"
            if lines and size + len(line) + 1 > self._max_chars:
                yield "\n".join(lines)
                lines, size = [], 0
            lines.append(line)
            size += len(line) + 1
        if lines:
            yield "\n".join(lines)


def _decode_frames(data: str) -> list[RoutedFrame]:
    frames: list[RoutedFrame] = []
    for line in data.split("\n"):
        pk, _, rest = line.partition(" ")
        delivery, _, frame = rest.partition(" ")
        try:
            frames.append(RoutedFrame(int(pk), int(delivery), frame))
        except ValueError:
            logger.warning("gateway route: dropped an unreadable line of %d chars", len(line))
    return frames


class Subscription:
    """One gateway node's subscription to its channel; see :meth:`FrameRouter.listen`.

    When the connection to Redis breaks, redis-py reconnects and subscribes again on the next
    read; failed reads are retried with a backoff from 0.1 s to 5 s. Once Redis confirms the
    new subscription, the next item is a :class:`RoutedBatch` with ``resync=True``.
    """

    def __init__(self, client: Redis, channel: str, *, poll_s: float) -> None:
        self.channel = channel
        self._client = client
        self._poll_s = poll_s  # longest single wait for a message, seconds
        self._pubsub: PubSub | None = None
        self._confirmed = False  # Redis confirmed the first subscription
        self._resync = False  # a later confirmation arrived: tell the caller
        self._backoff_s = 0.0  # wait before the next read after a failure

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Subscribe and wait until Redis confirms it (done by the first read if not called)."""
        if self._pubsub is not None:
            return
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(self.channel)
        while not self._confirmed:
            message = await self._pubsub.get_message(timeout=self._poll_s)
            if message is not None and message["type"] == "subscribe":
                self._confirmed = True

    async def aclose(self) -> None:
        """Unsubscribe and give the connection back."""
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            self._confirmed = self._resync = False
            await pubsub.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> RoutedBatch:
        await self.start()
        assert self._pubsub is not None
        while True:
            if self._resync:
                self._resync = False
                return RoutedBatch([], resync=True)
            if self._backoff_s:
                await asyncio.sleep(self._backoff_s)
            try:
                message = await self._pubsub.get_message(timeout=self._poll_s)
            except (RedisError, OSError) as exc:
                self._backoff_s = min(5.0, max(0.1, self._backoff_s * 2))
                logger.warning(
                    "gateway route: lost the subscription to %s (%s); retrying in %.1f s",
                    self.channel,
                    exc,
                    self._backoff_s,
                )
                continue
            self._backoff_s = 0.0
            if message is None:
                continue
            if message["type"] == "subscribe":
                # Only a reconnect makes Redis confirm the subscription a second time.
                logger.info("gateway route: subscribed to %s again; resync", self.channel)
                self._resync = True
            elif message["type"] == "message":
                frames = _decode_frames(str(message["data"]))
                if frames:
                    return RoutedBatch(frames)
