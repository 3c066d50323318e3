"""This process as a node of a scaled-out deployment: its id, its Redis client, the building
blocks over it, and the heartbeat that tells the others it is alive.

A node id belongs to one live process. Each process beats with a random instance token of its
own (:meth:`Presence.claim`), so a second process given the id of a live one finds another
token there. It then waits to see which way that beat goes: renewed, the other process lives
and the start is refused (:class:`ConfigError`); run out, the other process is gone (killed,
crashed) and the id is taken over. A restart after a crash under the same id therefore waits
at most ``presence_ttl_s``; after a clean stop (``leave``) it starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from openmps.cluster.bus import DispatchStream
from openmps.cluster.presence import Presence
from openmps.cluster.redis import connect, default_node_id
from openmps.cluster.routing import FrameRouter
from openmps.errors import ConfigError
from openmps.settings import Settings

logger = logging.getLogger(__name__)

REDIS_CHECK_TIMEOUT_S = 2.0  # a Redis slower than this to answer PING is "not ready"
CLAIM_POLL_S = 0.2  # how often a start waiting for another process's beat looks at it again


class ClusterNode:
    """One process of a scaled-out deployment, whatever its roles.

    Every node beats in the presence's node set (``live_nodes``), gateways and workers
    alike: a worker's claims on vendor deliveries are respected while it is listed there, and
    a gateway's devices are trusted to it. ``presence_ttl_s`` after its last beat a node that
    died is gone from the list. :meth:`join` makes sure no other live process uses the id.
    """

    def __init__(
        self,
        client: Redis,
        *,
        node_id: str,
        prefix: str,
        presence_ttl_s: float,
        stream_maxlen: int,
    ) -> None:
        self.node_id = node_id  # this process in presence, consumers, claims
        self.instance = os.urandom(8).hex()  # this process among those ever named node_id
        self.prefix = prefix  # of every key (named in errors)
        self.client = client  # owned: closed by close()
        self.presence = Presence(client, prefix=prefix, ttl_s=presence_ttl_s)
        self.router = FrameRouter(client, prefix=prefix)
        self.stream = DispatchStream(client, prefix=prefix, maxlen=stream_maxlen)
        self._beat: asyncio.Task[None] | None = None  # the heartbeat loop
        self._closing = asyncio.Event()  # close() was called: the heartbeat loop ends
        self._joined = False  # join() took the node id: close() gives it back

    @classmethod
    async def open(cls, settings: Settings) -> ClusterNode:
        """Connect to ``settings.redis_url``; :class:`ConfigError` if it is missing or down."""
        if settings.redis_url is None:
            raise ConfigError(
                f"the roles {settings.role} need Redis: set redis_url (--redis-url / "
                "OPENMPS_REDIS_URL), for example redis://127.0.0.1:6379/0. Only a process "
                "running all four roles can do without it"
            )
        node_id = settings.node_id or default_node_id()
        client = await connect(settings.redis_url, client_name=node_id)
        node = cls(
            client,
            node_id=node_id,
            prefix=settings.redis_prefix,
            presence_ttl_s=settings.presence_ttl_s,
            stream_maxlen=settings.dispatch_stream_maxlen,
        )
        try:
            await node.join()  # refused before anything else starts
        except BaseException:
            await node.close()
            raise
        return node

    async def join(self) -> None:
        """Beat once as this process; :class:`ConfigError` if another live process uses the id.

        When another process's beat for the id is there, waits until it is either renewed
        (that process lives: refused) or runs out (it is gone: the id is taken over). That
        takes at most ``presence_ttl_s``, and about a third of it for a live process.
        """
        presence = self.presence
        seen = await presence.claim(self.node_id, self.instance)
        if seen is None:
            self._joined = True
            return
        logger.warning(
            "node id %r is held by another process's heartbeat (%.1f s left); waiting to see "
            "whether it is renewed (a live process) or runs out (one that was killed)",
            self.node_id,
            seen.remaining_ms / 1000,
        )
        deadline = time.monotonic() + 2 * presence.ttl_s + 1
        while True:
            await asyncio.sleep(min(CLAIM_POLL_S, presence.ttl_s / 10))
            holder = await presence.claim(self.node_id, self.instance)
            if holder is None:
                logger.info("node id %r taken over: the other heartbeat ran out", self.node_id)
                self._joined = True
                return
            renewed = holder.instance != seen.instance or holder.remaining_ms > seen.remaining_ms
            if renewed or time.monotonic() > deadline:
                raise ConfigError(self._in_use())
            seen = holder

    def _in_use(self) -> str:
        ttl = f"{self.presence.ttl_s:g}"
        return (
            f"node id {self.node_id!r} is in use: another live process beats under it in Redis "
            f"(prefix {self.prefix!r}). Give every process its own --node-id (OPENMPS_NODE_ID), "
            "or leave it out for a unique default; to reuse this id, stop the other process "
            f"first (one that was killed frees it within presence_ttl_s, {ttl} s)"
        )

    async def start(self) -> None:
        """Take the node id (:meth:`join`; the node is live when this returns), then keep
        beating."""
        await self.join()
        await self.stream.ensure_group()
        self._beat = asyncio.create_task(self._beating(), name="cluster-heartbeat")

    async def live_nodes(self) -> set[str]:
        """The nodes whose heartbeat has not run out, this one included."""
        return {*await self.presence.live_nodes(), self.node_id}

    async def check(self, timeout_s: float = REDIS_CHECK_TIMEOUT_S) -> str:
        """``"ok"`` when Redis answers PING within ``timeout_s``, else what went wrong."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.client.ping()
        except TimeoutError:
            return f"no answer within {timeout_s:g} s"
        except (RedisError, OSError) as exc:
            logger.warning("readiness: Redis failed: %s", exc)
            return f"failed: {type(exc).__name__}"
        return "ok"

    async def close(self) -> None:
        """Stop beating, leave the node set (and any presence entries left), close Redis.

        The node id is free for another process at once (a restart need not wait)."""
        self._closing.set()
        if self._beat is not None:
            # The flag ends the loop even if the cancel is lost: on Python 3.11 redis-py's
            # asyncio.wait_for around a socket write can swallow a cancel that arrives as the
            # write completes, and the loop would then beat on, and close() wait, forever.
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
            self._beat = None
        if self._joined:
            self._joined = False
            try:
                if await self.presence.leave(self.node_id, self.instance) < 0:
                    logger.error("node id %r was taken by another process", self.node_id)
            except (RedisError, OSError) as exc:
                logger.warning("could not leave the node set (%s); it expires by itself", exc)
        await self.client.aclose()

    async def _beating(self) -> None:
        interval = self.presence.refresh_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._closing.wait()
            if self._closing.is_set():
                return
            try:
                holder = await self.presence.claim(self.node_id, self.instance)
            except (RedisError, OSError) as exc:
                logger.warning("node heartbeat failed (%s); trying again in %.1f s", exc, interval)
                continue
            if holder is not None:
                # This process missed its beats for presence_ttl_s (frozen, or Redis was
                # unreachable) and another one started under its id meanwhile.
                logger.error(
                    "node id %r is now used by another process: two processes run under one "
                    "node id; stop this one",
                    self.node_id,
                )
