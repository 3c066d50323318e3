"""Claims on vendor deliveries, in the store: which worker node is sending each one now.

The dispatch stream hands each entry to one worker, but an entry can exist twice (published
again by the recovery sweep, or reclaimed from a worker that was only slow), so the stream
alone cannot promise that a delivery is sent once. The claim can: a worker sends a delivery
only after a conditional UPDATE made it the delivery's ``claimed_by``, and checks it again
right before each send. A claim is taken over only when its holder is gone from the live node
set *and* the claim was not touched for ``lease_s`` (two signals, so that neither a Redis that
lost its keys nor a slow clock alone hands a delivery to a second worker).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, or_, select, update

from openmps.jobs import NOT_HELD
from openmps.store import Delivery, Store
from openmps.vendors import ROUTE_OWN

_DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
_D = _DELIVERIES.c

CHUNK = 1000  # delivery ids per statement


@dataclass(frozen=True, slots=True)
class Claimed:
    """What :func:`claim` found."""

    mine: set[int]
    """Claimed by this node now (or already): send them."""
    later: set[int]
    """Pending, but claimed by a node that is gone whose claim is still fresh: try again after
    the lease (the stream entry is left pending, so a reclaim brings it back)."""


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _pending_vendor() -> tuple[Any, ...]:
    return (_D.final.is_(False), _D.route != ROUTE_OWN, NOT_HELD)


async def claim(
    store: Store,
    delivery_ids: Iterable[int],
    *,
    node: str,
    live: set[str],
    lease_s: float,
    now: datetime,
) -> Claimed:
    """Claim the pending vendor deliveries among ``delivery_ids`` for ``node``.

    A delivery is claimable when nobody holds it, ``node`` holds it already, or its holder is
    not in ``live`` and has not touched the claim for ``lease_s`` seconds. Final, held (-1),
    own-channel and unknown ids are left out of both sets: nothing is to be done for them.
    """
    ids = sorted(set(delivery_ids))
    mine: set[int] = set()
    later: set[int] = set()
    if not ids:
        return Claimed(mine, later)
    others = sorted(live - {node}) or [""]
    stale = or_(_D.claimed_at.is_(None), _D.claimed_at < now - timedelta(seconds=lease_s))
    claimable = or_(
        _D.claimed_by.is_(None),
        _D.claimed_by == node,
        and_(_D.claimed_by.not_in(others), stale),
    )
    async with store.write() as session:
        for chunk in _chunks(ids):
            rows = await session.execute(
                update(_DELIVERIES)
                .where(_D.id.in_(chunk), *_pending_vendor(), claimable)
                .values(claimed_by=node, claimed_at=now)
                .returning(_D.id)
            )
            mine.update(rows.scalars())
            rest = [i for i in chunk if i not in mine]
            if rest:
                rows = await session.execute(
                    select(_D.id).where(
                        _D.id.in_(rest),
                        *_pending_vendor(),
                        _D.claimed_by.is_not(None),
                        _D.claimed_by.not_in(others),
                    )
                )
                later.update(rows.scalars())
    return Claimed(mine, later)


async def verify(
    store: Store, delivery_ids: Iterable[int], *, node: str, now: datetime
) -> set[int]:
    """The deliveries still pending and claimed by ``node``; their claim is touched (now)."""
    ids = sorted(set(delivery_ids))
    kept: set[int] = set()
    async with store.write() as session:
        for chunk in _chunks(ids):
            rows = await session.execute(
                update(_DELIVERIES)
                .where(_D.id.in_(chunk), _D.final.is_(False), _D.claimed_by == node)
                .values(claimed_at=now)
                .returning(_D.id)
            )
            kept.update(rows.scalars())
    return kept


async def release(store: Store, delivery_ids: Iterable[int], *, node: str) -> int:
    """Give up ``node``'s claims on these pending deliveries; returns how many it held."""
    ids = sorted(set(delivery_ids))
    released = 0
    async with store.write() as session:
        for chunk in _chunks(ids):
            result = await session.execute(
                update(_DELIVERIES)
                .where(_D.id.in_(chunk), _D.final.is_(False), _D.claimed_by == node)
                .values(claimed_by=None, claimed_at=None)
            )
            released += int(getattr(result, "rowcount", 0) or 0)
    return released


async def stalled(
    store: Store, *, live: set[str], quiet_since: datetime, now: datetime, limit: int
) -> list[int]:
    """Pending vendor deliveries nobody alive holds and nothing changed since ``quiet_since``.

    Their ``updated_at`` is set to ``now`` in the same transaction, so a delivery is picked
    again only after another quiet spell. At most ``limit``, oldest id first.
    """
    holders = sorted(live) or [""]
    async with store.write() as session:
        ids = list(
            (
                await session.execute(
                    select(_D.id)
                    .where(
                        *_pending_vendor(),
                        _D.updated_at < quiet_since,
                        _D.expires_at > now,
                        or_(_D.claimed_by.is_(None), _D.claimed_by.not_in(holders)),
                    )
                    .order_by(_D.id)
                    .limit(limit)
                )
            ).scalars()
        )
        for chunk in _chunks(ids):
            await session.execute(
                update(_DELIVERIES)
                .where(_D.id.in_(chunk), _D.final.is_(False))
                .values(updated_at=now)
            )
    return ids


async def held_since(store: Store, *, node: str, before: datetime) -> set[int]:
    """Pending deliveries ``node`` has held since before ``before`` (claim untouched since)."""
    async with store.session() as session:
        rows = await session.execute(
            select(_D.id).where(
                _D.final.is_(False),
                _D.route != ROUTE_OWN,
                _D.claimed_by == node,
                _D.claimed_at < before,
            )
        )
        return set(rows.scalars())


async def release_untouched(
    store: Store, delivery_ids: Iterable[int], *, node: str, before: datetime
) -> int:
    """:func:`release`, for claims not touched since ``before`` only."""
    ids = sorted(set(delivery_ids))
    released = 0
    async with store.write() as session:
        for chunk in _chunks(ids):
            result = await session.execute(
                update(_DELIVERIES)
                .where(
                    _D.id.in_(chunk),
                    _D.final.is_(False),
                    _D.claimed_by == node,
                    _D.claimed_at < before,
                )
                .values(claimed_by=None, claimed_at=None)
            )
            released += int(getattr(result, "rowcount", 0) or 0)
    return released
