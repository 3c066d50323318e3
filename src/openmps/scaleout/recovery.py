"""The recovery sweep of the scheduler role: deliveries whose hand-off through Redis was lost.

The store is written before anything goes to Redis, so a process that dies between its commit
and its publish (or a Redis that loses an entry) leaves deliveries pending in the store with
nothing on their way. Every ``interval_s`` the sweep looks for them:

- **vendor**: pending vendor deliveries that no live node holds and that did not change for
  ``after_s`` seconds are published on the dispatch stream again (at most ``BATCH`` a round,
  and only while no entry waits unread: a backlog is not yet lost). Their ``updated_at`` is
  set, so each is picked again only after another quiet spell. A worker claims before it
  sends, so a delivery whose first entry was only slow is still sent once.
- **own channel**: pending deliveries of devices online now that were never written to their
  link (``sent_at`` empty) through sweeps ``after_s`` seconds apart are routed to the
  device's node again; a frame that arrives twice is deduplicated by the device SDK. The
  time counts from the first sweep that saw the delivery, not from its ``updated_at``: a
  broadcast's rows carry the start of a transaction that may have taken longer than
  ``after_s`` to commit, and are being routed normally right after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from openmps.jobs import ONLINE_CHUNK, own_jobs
from openmps.scaleout import claims
from openmps.scaleout.dispatch import ClusterDispatcher
from openmps.scaleout.node import ClusterNode
from openmps.store import Delivery, Store

logger = logging.getLogger(__name__)

BATCH = 10_000  # vendor deliveries published again per round, at most


class RecoverySweep:
    """Finds pending deliveries stuck for ``after_s`` seconds and hands them on again."""

    def __init__(
        self,
        node: ClusterNode,
        *,
        store: Store,
        dispatcher: ClusterDispatcher,
        after_s: float,
        interval_s: float | None = None,
    ) -> None:
        self._node = node
        self._store = store
        self._dispatcher = dispatcher
        self._after_s = after_s  # no progress for this long: lost, seconds
        self._interval_s = interval_s or max(0.5, min(5.0, after_s / 3))  # between rounds
        self.republished = 0  # vendor deliveries published again since start
        self.rerouted = 0  # own-channel frames routed again since start
        # Own-channel deliveries seen unsent by a sweep: delivery id -> when first seen
        # (monotonic). Only those of online devices, forgotten once sent or no longer pending.
        self._unsent_since: dict[int, float] = {}

    async def run(self) -> None:
        """Sweep forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.sweep()
            except Exception:
                logger.exception("recovery sweep failed; next try in %.1f s", self._interval_s)

    async def sweep(self) -> tuple[int, int]:
        """One round: (vendor deliveries published again, own-channel frames routed again)."""
        now = datetime.now(UTC)
        quiet_since = now - timedelta(seconds=self._after_s)

        republished = 0
        if (await self._node.stream.depth()).waiting == 0:
            ids = await claims.stalled(
                self._store,
                live=await self._node.live_nodes(),
                quiet_since=quiet_since,
                now=now,
                limit=BATCH,
            )
            if ids:
                republished = await self._dispatcher.publish(ids)
                logger.warning(
                    "recovery: %d vendor deliveries had made no progress for %.0f s; "
                    "published again",
                    republished,
                    self._after_s,
                )

        rerouted = 0
        online = await self._dispatcher.online_devices()
        seen_now = time.monotonic()
        unsent_since: dict[int, float] = {}
        async with self._store.session() as session:
            for at in range(0, len(online), ONLINE_CHUNK):
                jobs = await own_jobs(
                    session,
                    Delivery.device_pk.in_(online[at : at + ONLINE_CHUNK]),
                    Delivery.sent_at.is_(None),
                    Delivery.expires_at > now,
                )
                stuck = []
                for job in jobs:
                    since = self._unsent_since.get(job.delivery_id, seen_now)
                    if seen_now - since >= self._after_s:
                        stuck.append(job)
                        since = seen_now  # routed again now: another quiet spell before next
                    unsent_since[job.delivery_id] = since
                if stuck:
                    rerouted += await self._dispatcher.route(stuck)
        self._unsent_since = unsent_since
        if rerouted:
            logger.warning(
                "recovery: %d own-channel deliveries of online devices were never written to "
                "their link; routed again",
                rerouted,
            )
        self.republished += republished
        self.rerouted += rerouted
        return republished, rerouted
