"""The gateway role scaled out: presence of this node's devices in Redis, and the frames other
nodes route here.

A device's presence entry is written when its link opens, before its pending deliveries are
read from the store, so a push stored after that read is routed here and one stored before it
is in the read. Entries are renewed every third of their lifetime; a device another node took
over meanwhile is closed here (4009 replaced), and one whose entry had expired (a long pause,
a Redis that lost its data) was unreachable by routing for a while, so it is resynced: sent
again, from the store, what is pending and was never written to it. The same resync runs for
every link when the subscription to this node's channel broke and came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from redis.exceptions import RedisError

from openmps.cluster.routing import Subscription
from openmps.gateway.hub import Hub, Link
from openmps.jobs import ONLINE_CHUNK, own_jobs
from openmps.scaleout.node import ClusterNode
from openmps.statuswriter import StatusWriter
from openmps.store import Delivery, Store

logger = logging.getLogger(__name__)

_REDIS_DOWN = (RedisError, OSError)
STOP_WAIT_S = 5.0  # longest wait for the routed-frame and presence loops to end on a stop


class GatewayNode:
    """Presence, routed frames and resync for the gateway of this process."""

    def __init__(self, node: ClusterNode, *, hub: Hub, store: Store, writer: StatusWriter) -> None:
        self._node = node
        self._hub = hub  # this process's links
        self._store = store  # for resync: what is pending and unsent
        self._writer = writer  # sent_at not yet written is flushed before a resync reads
        # Closes a link whose device another node took over (Gateway.drop); set by the runtime.
        self.drop: Callable[[Link], bool] | None = None
        self._subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.resyncs = 0  # links resynced since start (tests, logs)
        self._opening: set[Link] = set()  # links whose presence attach is under way
        self._closing = asyncio.Event()  # stop() was called: the loops end
        self._unannounced: set[Link] = set()  # links whose presence attach failed

    async def opened(self, link: Link) -> None:
        # Until the entry names this node, another node's entry for the device (the gateway
        # it left, maybe dead) is expected: the refresh must not take it for a takeover.
        self._opening.add(link)
        try:
            await self._node.presence.attach(link.device_pk, self._node.node_id)
        except _REDIS_DOWN as exc:
            # The next refresh writes it (and resyncs the device): until then no frame is
            # routed here for it, and its deliveries wait in the store.
            self._unannounced.add(link)
            logger.warning("presence attach of device %d failed: %s", link.device_pk, exc)
        finally:
            self._opening.discard(link)

    async def closed(self, device_pk: int) -> None:
        try:
            await self._node.presence.detach(device_pk, self._node.node_id)
        except _REDIS_DOWN as exc:
            logger.warning("presence detach of device %d failed (%s); it expires", device_pk, exc)

    async def start(self) -> None:
        """Subscribe to this node's channel (confirmed on return), then serve it and keep
        presence alive. Call before the gateway accepts devices."""
        self._subscription = self._node.router.listen(self._node.node_id)
        await self._subscription.start()
        self._tasks = [
            asyncio.create_task(self._listen(self._subscription), name="gateway-routed"),
            asyncio.create_task(self._refresh(), name="gateway-presence"),
        ]

    async def stop(self) -> None:
        """Stop listening and renewing; the node's presence goes with ClusterNode.close()."""
        self._closing.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a cancel redis-py swallowed mid-read is not retried for ever.
            ended, stuck = await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
            for task in ended:
                if not task.cancelled() and task.exception() is not None:
                    logger.error("%s had failed: %r", task.get_name(), task.exception())
            for task in stuck:
                logger.warning("%s did not stop within %.0f s; left behind", task, STOP_WAIT_S)
        self._tasks = []
        if self._subscription is not None:
            with contextlib.suppress(*_REDIS_DOWN):
                await self._subscription.aclose()
            self._subscription = None

    async def resync(self, device_pks: Iterable[int]) -> int:
        """Offer each link of these devices what is pending for it and was never written to
        it; returns the frames offered."""
        held = sorted(pk for pk in set(device_pks) if self._hub.is_online(pk))
        if not held:
            return 0
        await self._writer.sync()  # sent_at of frames already written reaches the store
        now = datetime.now(UTC)
        offered = 0
        async with self._store.session() as session:
            for at in range(0, len(held), ONLINE_CHUNK):
                jobs = await own_jobs(
                    session,
                    Delivery.device_pk.in_(held[at : at + ONLINE_CHUNK]),
                    Delivery.sent_at.is_(None),
                    Delivery.expires_at > now,
                )
                for job in jobs:
                    offered += self._hub.offer(job.device_pk, job.delivery_id, job.frame)
        self.resyncs += len(held)
        logger.info("gateway resync: devices=%d frames=%d", len(held), offered)
        return offered

    async def _listen(self, subscription: Subscription) -> None:
        async for batch in subscription:
            if self._closing.is_set():
                return
            if batch.resync:
                try:
                    await self.resync(link.device_pk for link in self._hub.links())
                except Exception:
                    logger.exception("gateway resync failed; devices get theirs on reconnect")
                continue
            for frame in batch.frames:
                self._hub.offer(frame.device_pk, frame.delivery_id, frame.frame)

    async def _refresh(self) -> None:
        while True:
            # A flag as well as the cancel of stop(): on Python 3.11 redis-py can swallow a
            # cancel that arrives as a socket write completes (see ClusterNode.close).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._node.presence.refresh_interval_s):
                    await self._closing.wait()
            if self._closing.is_set():
                return
            try:
                await self.refresh()
            except _REDIS_DOWN as exc:
                logger.warning("presence refresh failed: %s", exc)
            except Exception:
                logger.exception("presence refresh failed")

    async def refresh(self) -> None:
        """One round of presence upkeep: announce the links whose attach failed, renew the
        others' entries, close the links of devices another node took over (4009), resync
        the devices whose entry had expired. Links whose attach is under way are left out:
        their entry may still name the node they came from."""
        presence, node_id = self._node.presence, self._node.node_id
        links = [link for link in self._hub.links() if link not in self._opening]
        current = set(links)
        self._unannounced = {link for link in self._unannounced if link in current}
        announced: list[int] = []
        for link in list(self._unannounced):
            await presence.attach(link.device_pk, node_id)
            self._unannounced.discard(link)
            announced.append(link.device_pk)
        held = {link.device_pk: link for link in links}
        found = await presence.refresh(node_id, held)
        dropped = 0
        for device_pk in found.lost:
            if self.drop is not None and self.drop(held[device_pk]):
                dropped += 1
        if dropped:
            logger.info("presence: %d devices moved to other nodes", dropped)
        if found.restored or announced:
            # Frames routed elsewhere (or nowhere) while the entry was missing or wrong.
            await self.resync([*found.restored, *announced])
