"""The worker role: vendor deliveries taken from the dispatch stream and sent, each once.

For each stream entry (``{"kind": "vendor", "deliveries": [ids]}``) the worker claims the
deliveries in the store (:mod:`openmps.scaleout.claims`): only pending vendor deliveries that
nobody alive holds become its own; the rest (final, held, held by a live worker) need nothing.
Claimed ones are read back from the store and handed to the :class:`VendorDispatcher`, which
checks the claim again right before each send (its guard) and records each outcome through the
status writer. An entry is acked once every delivery it named has an outcome (final, or a retry
scheduled) *and* the status writer has written it: a worker SIGKILLed before that leaves the
entry pending in the consumer group, and a live worker reclaims it after
``dispatch_reclaim_idle_s`` and, the holder being gone, takes over its claims and sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from openmps.cluster.bus import StreamEntry
from openmps.jobs import vendor_jobs
from openmps.scaleout import claims
from openmps.scaleout.dispatch import vendor_entries
from openmps.scaleout.node import ClusterNode
from openmps.statuswriter import StatusWriter
from openmps.store import Delivery, Store
from openmps.vendor_dispatch import VendorDispatcher, VendorJob

logger = logging.getLogger(__name__)

CONSUME_COUNT = 10  # stream entries per read (up to 100 deliveries each)
MAX_QUEUED = 2000  # deliveries waiting in the vendor dispatcher before the worker reads more
VERIFY_TRIES = 3  # attempts at the claim check before a batch is put back for a retry
PRUNE_EVERY_S = 600.0  # how often idle consumers without entries are removed from the group


def delivery_ids(data: dict[str, Any]) -> list[int] | None:
    """The delivery ids of a ``vendor`` entry; None when the entry is not one we can read."""
    ids = data.get("deliveries")
    if data.get("kind") != "vendor" or not isinstance(ids, list):
        return None
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return None
    return ids


class StreamWorker:
    """Consumes the dispatch stream for this node; see the module docstring."""

    def __init__(
        self,
        node: ClusterNode,
        *,
        store: Store,
        writer: StatusWriter,
        lease_s: float,
        reclaim_idle_s: float,
        drain_timeout_s: float,
    ) -> None:
        self._node = node
        self._store = store
        self._writer = writer  # outcomes are written through it before an entry is acked
        self._lease_s = lease_s  # a gone holder's claim is taken over after this, seconds
        self._reclaim_idle_ms = max(1, round(reclaim_idle_s * 1000))
        self._reclaim_every_s = max(0.5, reclaim_idle_s / 2)
        self._drain_timeout_s = drain_timeout_s  # on stop: longest wait for sends under way
        self.vendors: VendorDispatcher | None = None  # set once built (it takes our hooks)
        self._entries: dict[str, set[int]] = {}  # entry id -> its deliveries without outcome
        self._waiters: dict[int, set[str]] = {}  # delivery id -> entries waiting for it
        self._keep: set[str] = set()  # entries to leave pending: some ids must be tried later
        self._in_hand: set[int] = set()  # claimed deliveries in the vendor dispatcher
        # Final in the writer, not yet in the store: kept in hand until written, so that an
        # entry naming them again meanwhile does not send them again.
        self._settling: set[int] = set()
        self._done: list[str] = []  # entries whose deliveries all have an outcome: to ack
        self._done_event = asyncio.Event()
        # One _take at a time: the read and reclaim loops could otherwise both claim (as this
        # node) and hand over a delivery named by two entries.
        self._taking = asyncio.Lock()
        self._stopping = False
        self._stop_event = asyncio.Event()  # set by stop(): the loops end
        self._tasks: list[asyncio.Task[None]] = []
        self._acker: asyncio.Task[None] | None = None
        self.acked = 0  # entries acked since start
        self.taken = 0  # deliveries claimed and handed to the vendor dispatcher since start

    # -- hooks of the vendor dispatcher --------------------------------------------------------

    def recorded(self, job: VendorJob, final: bool) -> None:
        """A status for the job went to the writer: final, or a retry was scheduled."""
        delivery_id = job.outbound.delivery_id
        if final:
            self._settling.add(delivery_id)
            self._done_event.set()
        self._resolve(delivery_id)

    async def guard(self, jobs: list[VendorJob]) -> list[VendorJob]:
        """The jobs still claimed by this node (claims touched); the others are let go."""
        ids = {job.outbound.delivery_id for job in jobs}
        for attempt in range(VERIFY_TRIES):
            try:
                kept = await claims.verify(
                    self._store, ids, node=self._node.node_id, now=datetime.now(UTC)
                )
                break
            except Exception:
                if attempt + 1 == VERIFY_TRIES:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
        for delivery_id in ids - kept:
            logger.info("delivery %d is no longer ours to send; skipped", delivery_id)
            self._in_hand.discard(delivery_id)
            self._resolve(delivery_id)
        return [job for job in jobs if job.outbound.delivery_id in kept]

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self.vendors is None:
            raise RuntimeError("StreamWorker.vendors is not set")
        self._tasks = [
            asyncio.create_task(self._consume(), name="stream-consume"),
            asyncio.create_task(self._reclaim(), name="stream-reclaim"),
        ]
        self._acker = asyncio.create_task(self._ack_loop(), name="stream-ack")

    async def stop(self) -> None:
        """Stop reading; let sends under way finish (``drain_timeout_s`` at most); write and
        ack what is done; give back the rest (claims released, queued ones published again)."""
        assert self.vendors is not None
        deadline = time.monotonic() + self._drain_timeout_s
        self._stopping = True
        self._stop_event.set()
        for task in self._tasks:  # the read loop ends after its current read (1 s at most)
            try:
                await asyncio.wait_for(task, 3.0)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []

        while self.vendors.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        queued, retrying = await self.vendors.stop(finish_queued=False)

        if self._acker is not None:
            self._acker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._acker
        back = [job.outbound.delivery_id for job in queued + retrying]
        republished = 0
        try:
            await self._writer.sync()
            self._in_hand -= self._settling
            released = await claims.release(self._store, back, node=self._node.node_id)
            again = [job.outbound.delivery_id for job in queued]
            if again:
                await self._node.stream.publish(vendor_entries(again))
                republished = len(again)
            finished = self._done + [e for e in self._entries if e not in self._keep]
            self.acked += await self._node.stream.ack(finished)
        except Exception:
            logger.exception("worker stop: could not hand back; survivors reclaim after a while")
            released = 0
        logger.info(
            "worker stopped: entries_acked=%d handed_back=%d released=%d republished=%d "
            "left_for_recovery=%d",
            self.acked,
            len(back),
            released,
            republished,
            len(retrying),
        )

    # -- loops --------------------------------------------------------------------------------

    async def _consume(self) -> None:
        assert self.vendors is not None
        while not self._stopping:
            if self.vendors.queued >= MAX_QUEUED:
                await asyncio.sleep(0.05)
                continue
            try:
                entries = await self._node.stream.consume(
                    self._node.node_id, count=CONSUME_COUNT, block_ms=1000
                )
                if entries:
                    await self._take(entries)
            except Exception:
                logger.exception("dispatch stream read failed; trying again in 1 s")
                await asyncio.sleep(1.0)

    async def _reclaim(self) -> None:
        pruned_at = audited_at = time.monotonic()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), self._reclaim_every_s)
            if self._stopping:
                return
            try:
                entries = await self._node.stream.reclaim(
                    self._node.node_id, min_idle_ms=self._reclaim_idle_ms
                )
                if entries:
                    logger.info("dispatch stream: reclaimed %d entries", len(entries))
                    await self._take(entries)
                if time.monotonic() - audited_at > self._lease_s:
                    audited_at = time.monotonic()
                    await self._audit()
                if time.monotonic() - pruned_at > PRUNE_EVERY_S:
                    pruned_at = time.monotonic()
                    await self._node.stream.prune_consumers(
                        min_idle_ms=max(self._reclaim_idle_ms * 10, int(PRUNE_EVERY_S * 1000))
                    )
            except Exception:
                logger.exception("dispatch stream reclaim failed; trying again")

    async def _audit(self) -> None:
        """Release claims of this node that nothing here works on any more (a read that
        failed halfway through): the recovery sweep then finds those deliveries."""
        before = datetime.now(UTC) - timedelta(seconds=self._lease_s)
        held = await claims.held_since(self._store, node=self._node.node_id, before=before)
        orphans = held - self._in_hand
        if orphans:
            released = await claims.release_untouched(
                self._store, orphans, node=self._node.node_id, before=before
            )
            logger.warning("worker released %d claims it no longer worked on", released)

    async def _ack_loop(self) -> None:
        while True:
            await self._done_event.wait()
            self._done_event.clear()
            batch, self._done = self._done, []
            settling, self._settling = self._settling, set()
            try:
                await self._writer.sync()
                self._in_hand -= settling  # final in the store now: a claim skips them
                settling = set()
                if batch:
                    self.acked += await self._node.stream.ack(batch)
            except Exception:
                logger.exception("dispatch stream ack failed; trying again in 1 s")
                self._done[:0] = batch
                self._settling |= settling
                await asyncio.sleep(1.0)
                self._done_event.set()

    # -- entries ------------------------------------------------------------------------------

    async def _take(self, entries: Iterable[StreamEntry]) -> None:
        """Claim and send the deliveries of newly received entries."""
        async with self._taking:
            await self._take_now(entries)

    async def _take_now(self, entries: Iterable[StreamEntry]) -> None:
        assert self.vendors is not None
        parsed: dict[str, list[int]] = {}
        for entry in entries:
            if entry.id in self._entries:
                continue  # reclaimed from ourselves while its deliveries are under way
            ids = delivery_ids(entry.data)
            if ids is None:
                logger.warning("dispatch stream: entry %s is not a vendor entry; dropped", entry.id)
                self._finish(entry.id)
                continue
            parsed[entry.id] = ids
        if not parsed:
            return
        wanted = {i for ids in parsed.values() for i in ids} - self._in_hand
        claimed = await claims.claim(
            self._store,
            wanted,
            node=self._node.node_id,
            live=await self._node.live_nodes(),
            lease_s=self._lease_s,
            now=datetime.now(UTC),
        )
        jobs: list[VendorJob] = []
        if claimed.mine:
            mine = sorted(claimed.mine)
            async with self._store.session() as session:
                for at in range(0, len(mine), claims.CHUNK):
                    chunk = mine[at : at + claims.CHUNK]
                    jobs.extend(await vendor_jobs(session, Delivery.id.in_(chunk)))
        loaded = {job.outbound.delivery_id for job in jobs}
        unusable = claimed.mine - loaded
        if unusable:
            await claims.release(self._store, unusable, node=self._node.node_id)
        for entry_id, ids in parsed.items():
            if claimed.later.intersection(ids):
                self._keep.add(entry_id)
            waiting = loaded.intersection(ids)
            self._entries[entry_id] = waiting
            for delivery_id in waiting:
                self._waiters.setdefault(delivery_id, set()).add(entry_id)
            if not waiting:
                self._finish(entry_id)
        self._in_hand |= loaded
        self.taken += len(jobs)
        if jobs:
            logger.debug("worker took %d deliveries from %d entries", len(jobs), len(parsed))
            self.vendors.submit(jobs)

    def _resolve(self, delivery_id: int) -> None:
        for entry_id in self._waiters.pop(delivery_id, ()):
            left = self._entries.get(entry_id)
            if left is None:
                continue
            left.discard(delivery_id)
            if not left:
                self._finish(entry_id)

    def _finish(self, entry_id: str) -> None:
        self._entries.pop(entry_id, None)
        if entry_id in self._keep:
            self._keep.discard(entry_id)  # left pending: a reclaim brings it back later
            return
        self._done.append(entry_id)
        self._done_event.set()
