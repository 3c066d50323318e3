"""Coalesces status changes and receipts from devices and writes them in batches.

One ack is one small UPDATE; a broadcast brings a flood of them. The writer keeps the changes
(acks, "opened" and "ignored" receipts, the first write of a message to a device's socket,
vendor outcomes) in memory and flushes them in one transaction every ``flush_interval_s`` or as
soon as ``flush_max`` of one kind are waiting. An ack that is waiting and not yet written is
lost if the process dies: the delivery then stays pending and is sent again on reconnect (at
least once), which the device SDK deduplicates. A lost receipt is only missing from analytics.

The writer counts the own-channel deliveries whose ack it writes (:attr:`StatusWriter.own_acked`,
reported to ``on_own_acked`` for metrics): once per delivery, however often its device acks
it, and only after the transaction committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from sqlalchemy import Table, bindparam, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from openmps.statuses import ACKED
from openmps.store import Delivery, Device, Store
from openmps.store.models import UTCDateTime
from openmps.vendors import ROUTE_OWN

logger = logging.getLogger(__name__)

# Core table, not the ORM class: an executemany UPDATE keyed by our own bind parameters.
_DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
_DEVICES: Table = Device.__table__  # type: ignore[assignment]
_LOCK_CHUNK = 1000  # delivery ids per SELECT ... FOR UPDATE of the acks about to be written


class StatusWriter:
    def __init__(self, store: Store, *, flush_interval_s: float, flush_max: int) -> None:
        self._store = store  # where changes go
        self._flush_interval_s = flush_interval_s  # longest time a change waits
        self._flush_max = flush_max  # changes that trigger an early flush
        # (delivery id, device pk) -> when. Keyed by both: an ack naming another device's
        # delivery must not displace that device's own ack waiting in the same batch.
        self._acks: dict[tuple[int, int], datetime] = {}
        self._opens: dict[tuple[int, int], datetime] = {}  # same, for "opened" receipts
        self._ignores: dict[tuple[int, int], datetime] = {}  # same, for "ignored" receipts
        # Same key: when the own channel first wrote the message to the device's socket.
        self._sent: dict[tuple[int, int], datetime] = {}
        self._seen: dict[int, datetime] = {}  # device pk -> when it last connected
        # delivery id -> (status channel, code, final, detail, attempts, at): vendor outcomes
        self._outcomes: dict[int, tuple[str, int, bool, str | None, int, datetime]] = {}
        self._dropped: dict[tuple[int, str], None] = {}  # (device pk, dead vendor token)
        self._wake = asyncio.Event()  # set when flush_max is reached or on stop
        self._task: asyncio.Task[None] | None = None  # the flush loop
        self._stopping = False
        # Status changes and receipts (not sent_at) written since start (tests and metrics).
        self.written = 0
        # Own-channel deliveries whose ack was written (each once), and who hears of each batch.
        self.own_acked = 0
        self.on_own_acked: Callable[[int], object] | None = None
        self._changes = 0  # changes of any kind handed over since start
        self._durable = 0  # of those, how many are known to be written (see sync)
        self._flushed = asyncio.Event()  # set, and replaced, after each successful flush

    def ack(self, delivery_id: int, device_pk: int) -> None:
        """Record that ``device_pk`` acked ``delivery_id``; the write checks ownership."""
        self._acks.setdefault((delivery_id, device_pk), datetime.now(UTC))
        self._changes += 1
        if len(self._acks) >= self._flush_max:
            self._wake.set()

    def opened(self, delivery_id: int, device_pk: int) -> None:
        """Record that the user opened the notification (``deliveries.opened_at``)."""
        self._opens.setdefault((delivery_id, device_pk), datetime.now(UTC))
        self._changes += 1
        if len(self._opens) >= self._flush_max:
            self._wake.set()

    def ignored(self, delivery_id: int, device_pk: int) -> None:
        """Record that the user dismissed the notification (``deliveries.ignored_at``)."""
        self._ignores.setdefault((delivery_id, device_pk), datetime.now(UTC))
        self._changes += 1
        if len(self._ignores) >= self._flush_max:
            self._wake.set()

    def sent(self, delivery_id: int, device_pk: int) -> None:
        """Record that the own channel wrote the message to the device's socket; only the
        first time is kept (``deliveries.sent_at``). Called once per message frame sent."""
        key = (delivery_id, device_pk)
        if key not in self._sent:
            self._sent[key] = datetime.now(UTC)
            self._changes += 1
            if len(self._sent) >= self._flush_max:
                self._wake.set()

    def record(
        self,
        delivery_id: int,
        *,
        status_channel: str,
        code: int,
        final: bool,
        detail: str | None,
        attempts: int,
    ) -> None:
        """Record a vendor channel's outcome for a delivery (the latest one wins)."""
        at = datetime.now(UTC)
        self._outcomes[delivery_id] = (status_channel, code, final, detail, attempts, at)
        self._changes += 1
        if len(self._outcomes) >= self._flush_max:
            self._wake.set()

    def drop_token(self, device_pk: int, token: str) -> None:
        """Forget a device's vendor token that the vendor called dead (if it is still that)."""
        self._dropped[(device_pk, token)] = None
        self._changes += 1

    def seen(self, device_pk: int) -> None:
        """Record that the device connected now (its ``last_seen_at``)."""
        self._seen[device_pk] = datetime.now(UTC)
        self._changes += 1

    def is_acked(self, delivery_id: int, device_pk: int) -> bool:
        """True while ``device_pk``'s ack for this delivery waits to be written."""
        return (delivery_id, device_pk) in self._acks

    async def sync(self) -> None:
        """Return once every change handed over before this call is written to the store.

        Waits for the flush loop (woken at once); a failed flush is retried by the loop, and
        this keeps waiting. Without the loop running, flushes itself.
        """
        target = self._changes
        while self._durable < target:
            if self._task is None or self._task.done():
                await self.flush()
                continue
            done = self._flushed
            self._wake.set()
            await done.wait()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="status-writer")

    async def stop(self) -> None:
        """Write everything still waiting, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                # Kept in memory by flush(); the next round tries again.
                logger.exception("status flush failed; retrying in %.2fs", self._flush_interval_s)
                await asyncio.sleep(self._flush_interval_s)

    async def flush(self) -> None:
        """Write what is waiting in one transaction; on failure the changes are kept."""
        mark = self._changes  # every change up to here is in the dicts taken next
        acks, self._acks = self._acks, {}
        opens, self._opens = self._opens, {}
        ignores, self._ignores = self._ignores, {}
        sent, self._sent = self._sent, {}
        seen, self._seen = self._seen, {}
        outcomes, self._outcomes = self._outcomes, {}
        dropped, self._dropped = self._dropped, {}
        if not (acks or opens or ignores or sent or seen or outcomes or dropped):
            self._mark_durable(mark)
            return
        # A message sent and acked within one batch (the usual case on a live link) gets its
        # sent_at from the ack's UPDATE: one statement per delivery, not two.
        sent_alone = {key: at for key, at in sent.items() if key not in acks}
        own_acked = 0
        try:
            async with self._store.write() as session:
                if acks:
                    own_acked = await _own_unacked(session, acks)
                    await session.execute(
                        update(_DELIVERIES)
                        .where(
                            _DELIVERIES.c.id == bindparam("b_id"),
                            _DELIVERIES.c.device_pk == bindparam("b_device"),
                            _DELIVERIES.c.acked_at.is_(None),
                        )
                        .values(
                            status_channel=ACKED.channel.value,
                            code=ACKED.code,
                            final=True,
                            # A revoked message that arrived anyway keeps saying it was revoked.
                            detail=case(
                                (_DELIVERIES.c.detail == "revoked", _DELIVERIES.c.detail),
                                else_=None,
                            ),
                            acked_at=bindparam("b_at"),
                            updated_at=bindparam("b_at"),
                            sent_at=func.coalesce(
                                _DELIVERIES.c.sent_at, bindparam("b_sent", type_=UTCDateTime())
                            ),
                        ),
                        [
                            {"b_id": k, "b_device": d, "b_at": at, "b_sent": sent.get((k, d))}
                            for (k, d), at in acks.items()
                        ],
                    )
                for column, receipts in (
                    (_DELIVERIES.c.opened_at, opens),
                    (_DELIVERIES.c.ignored_at, ignores),
                    (_DELIVERIES.c.sent_at, sent_alone),
                ):
                    if receipts:
                        await session.execute(
                            update(_DELIVERIES)
                            .where(
                                _DELIVERIES.c.id == bindparam("b_id"),
                                _DELIVERIES.c.device_pk == bindparam("b_device"),
                                column.is_(None),
                            )
                            .values({column: bindparam("b_at")}),
                            [
                                {"b_id": k, "b_device": d, "b_at": at}
                                for (k, d), at in receipts.items()
                            ],
                        )
                if seen:
                    await session.execute(
                        update(_DEVICES)
                        .where(_DEVICES.c.id == bindparam("b_id"))
                        .values(last_seen_at=bindparam("b_at")),
                        [{"b_id": k, "b_at": at} for k, at in seen.items()],
                    )
                if outcomes:
                    await session.execute(
                        update(_DELIVERIES)
                        .where(
                            _DELIVERIES.c.id == bindparam("b_id"),
                            _DELIVERIES.c.acked_at.is_(None),
                        )
                        .values(
                            status_channel=bindparam("b_channel"),
                            code=bindparam("b_code"),
                            final=bindparam("b_final"),
                            detail=bindparam("b_detail"),
                            attempts=bindparam("b_attempts"),
                            updated_at=bindparam("b_at"),
                        ),
                        [
                            {
                                "b_id": k,
                                "b_channel": ch,
                                "b_code": code,
                                "b_final": fin,
                                "b_detail": detail,
                                "b_attempts": n,
                                "b_at": at,
                            }
                            for k, (ch, code, fin, detail, n, at) in outcomes.items()
                        ],
                    )
                if dropped:
                    await session.execute(
                        update(_DEVICES)
                        .where(
                            _DEVICES.c.id == bindparam("b_id"),
                            _DEVICES.c.third_token == bindparam("b_token"),
                        )
                        .values(third_token=None),
                        [{"b_id": d, "b_token": t} for d, t in dropped],
                    )
        except Exception:
            for key2, value2 in outcomes.items():
                self._outcomes.setdefault(key2, value2)
            self._dropped.update(dropped)
            for device_pk, at in seen.items():
                self._seen.setdefault(device_pk, at)
            for key, value in acks.items():
                self._acks.setdefault(key, value)
            for kept, failed in (
                (self._opens, opens),
                (self._ignores, ignores),
                (self._sent, sent),
            ):
                for key, value in failed.items():
                    kept.setdefault(key, value)
            raise
        self.written += len(acks) + len(opens) + len(ignores) + len(outcomes)
        if own_acked:
            self.own_acked += own_acked
            if self.on_own_acked is not None:
                self.on_own_acked(own_acked)
        self._mark_durable(mark)
        logger.debug(
            "status flush: %d acks, %d opens, %d ignores, %d sent",
            len(acks),
            len(opens),
            len(ignores),
            len(sent),
        )

    def _mark_durable(self, mark: int) -> None:
        # Changes up to ``mark`` are written: wake whoever waits in sync().
        self._durable = max(self._durable, mark)
        done, self._flushed = self._flushed, asyncio.Event()
        done.set()


async def _own_unacked(session: AsyncSession, acks: Mapping[tuple[int, int], datetime]) -> int:
    """How many of these acks name an own-channel delivery of that device not acked yet: the
    rows the ack UPDATE that follows turns to acked (its rowcount is not reported for a batch).

    The rows are locked in id order (FOR UPDATE; SQLite has a single writer anyway) so that a
    second gateway writing an ack of the same delivery at the same time waits and then finds
    it acked: each delivery is counted once.
    """
    ids = sorted({delivery_id for delivery_id, _ in acks})
    count = 0
    for at in range(0, len(ids), _LOCK_CHUNK):
        rows = await session.execute(
            select(_DELIVERIES.c.id, _DELIVERIES.c.device_pk, _DELIVERIES.c.route)
            .where(
                _DELIVERIES.c.id.in_(ids[at : at + _LOCK_CHUNK]),
                _DELIVERIES.c.acked_at.is_(None),
            )
            .order_by(_DELIVERIES.c.id)
            .with_for_update()
        )
        count += sum(
            1
            for delivery_id, device_pk, route in rows
            if route == ROUTE_OWN and (delivery_id, device_pk) in acks
        )
    return count
