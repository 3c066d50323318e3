"""Dispatch across processes: own-channel frames to the gateway node holding each device,
vendor deliveries to the workers through the dispatch stream.

The store is written before any of this runs and stays the source of truth, so a failure here
never fails a push: it is logged, and what was not handed on is found again from the store (a
device gets its pending deliveries whenever it connects; the recovery sweep publishes again
vendor deliveries that made no progress, and routes again own-channel ones of online devices
that were never written to their link).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError

from openmps.cluster.routing import RoutedFrame
from openmps.dispatch import AnyJob, Job, revoke_frame
from openmps.scaleout.node import ClusterNode
from openmps.vendor_dispatch import VendorJob

logger = logging.getLogger(__name__)

ENTRY_DELIVERIES = 100
"""Vendor delivery ids per dispatch stream entry; a worker acks an entry when all are done."""

_REDIS_DOWN = (RedisError, OSError)


def vendor_entries(delivery_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Dispatch stream entries naming these vendor deliveries, ``ENTRY_DELIVERIES`` each."""
    return [
        {"kind": "vendor", "deliveries": list(delivery_ids[at : at + ENTRY_DELIVERIES])}
        for at in range(0, len(delivery_ids), ENTRY_DELIVERIES)
    ]


class ClusterDispatcher:
    """:class:`openmps.dispatch.Dispatch` over Redis: presence says who is online where."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node
        self.offered = 0  # own-channel frames routed to a listening gateway node since start

    async def online_among(self, device_pks: Iterable[int]) -> set[int]:
        pks = list(device_pks)
        if not pks:
            return set()
        try:
            return set(await self._node.presence.nodes_of(pks))
        except _REDIS_DOWN as exc:
            # Routing then takes the devices as offline: their vendor token is used, if any.
            logger.warning("presence lookup failed (%s): %d devices offline", exc, len(pks))
            return set()

    async def online_devices(self) -> list[int]:
        try:
            online: set[int] = set()
            for node in await self._node.presence.live_nodes():
                online |= await self._node.presence.online_devices(node)
        except _REDIS_DOWN as exc:
            logger.warning("presence scan failed (%s); no device taken as online", exc)
            return []
        return sorted(online)

    async def submit(self, jobs: Iterable[AnyJob]) -> None:
        own: list[Job] = []
        vendor: list[int] = []
        for job in jobs:
            if isinstance(job, VendorJob):
                vendor.append(job.outbound.delivery_id)
            else:
                own.append(job)
        if own:
            await self.route(own)
        if vendor:
            await self.publish(vendor)

    async def revoke(self, sent: Iterable[tuple[int, int]]) -> None:
        frames = [
            RoutedFrame(device_pk, -delivery_id, revoke_frame(delivery_id))
            for device_pk, delivery_id in sent
        ]
        await self._route_frames(frames)

    async def route(self, jobs: Sequence[Job]) -> int:
        """Send own-channel jobs to the nodes holding their devices; how many went to a
        listening node. Devices online nowhere get theirs from the store when they connect."""
        return await self._route_frames(
            [RoutedFrame(job.device_pk, job.delivery_id, job.frame) for job in jobs]
        )

    async def publish(self, delivery_ids: Sequence[int]) -> int:
        """Put vendor deliveries on the dispatch stream; how many were published."""
        try:
            await self._node.stream.publish(vendor_entries(delivery_ids))
        except _REDIS_DOWN as exc:
            logger.warning(
                "dispatch stream publish failed (%s): %d vendor deliveries wait in the store "
                "for the recovery sweep",
                exc,
                len(delivery_ids),
            )
            return 0
        return len(delivery_ids)

    async def _route_frames(self, frames: list[RoutedFrame]) -> int:
        if not frames:
            return 0
        try:
            where = await self._node.presence.nodes_of({f.device_pk for f in frames})
            by_node: dict[str, list[RoutedFrame]] = defaultdict(list)
            for frame in frames:
                node = where.get(frame.device_pk)
                if node is not None:
                    by_node[node].append(frame)
            reached = await self._node.router.route_many(by_node)
        except _REDIS_DOWN as exc:
            logger.warning(
                "gateway routing failed (%s): %d frames wait in the store", exc, len(frames)
            )
            return 0
        routed = sum(len(by_node[node]) for node, count in reached.items() if count > 0)
        self.offered += routed
        return routed
