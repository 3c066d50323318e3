"""This process as a node of a scaled-out deployment: its id, its Redis client, the building
blocks over it, and the heartbeat that tells the others it is alive."""

from __future__ import annotations

import asyncio
import contextlib
import logging

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


class ClusterNode:
    """One process of a scaled-out deployment, whatever its roles.

    Every node beats in the presence's node set (``live_nodes``), gateways and workers
    alike: a worker's claims on vendor deliveries are respected while it is listed there, and
    a gateway's devices are trusted to it. ``presence_ttl_s`` after its last beat a node that
    died is gone from the list.
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
        self.client = client  # owned: closed by close()
        self.presence = Presence(client, prefix=prefix, ttl_s=presence_ttl_s)
        self.router = FrameRouter(client, prefix=prefix)
        self.stream = DispatchStream(client, prefix=prefix, maxlen=stream_maxlen)
        self._beat: asyncio.Task[None] | None = None  # the heartbeat loop

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
        return cls(
            client,
            node_id=node_id,
            prefix=settings.redis_prefix,
            presence_ttl_s=settings.presence_ttl_s,
            stream_maxlen=settings.dispatch_stream_maxlen,
        )

    async def start(self) -> None:
        """Beat once (the node is live when this returns), then keep beating."""
        await self.presence.heartbeat(self.node_id)
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
        """Stop beating, leave the node set (and any presence entries left), close Redis."""
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
            self._beat = None
            try:
                await self.presence.leave(self.node_id)
            except (RedisError, OSError) as exc:
                logger.warning("could not leave the node set (%s); it expires by itself", exc)
        await self.client.aclose()

    async def _beating(self) -> None:
        interval = self.presence.refresh_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.presence.heartbeat(self.node_id)
            except (RedisError, OSError) as exc:
                logger.warning("node heartbeat failed (%s); trying again in %.1f s", exc, interval)
