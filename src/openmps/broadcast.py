"""A broadcast's audience, expanded into deliveries by the store in bulk.

A broadcast is one message (target ``*``) and one delivery per matching device. A million
devices must be expanded in seconds, so the rows are made by the database: one
``INSERT ... SELECT`` for every device without a vendor token (they can only use the own
channel), and batched inserts for devices with one, whose route is chosen by the one routing
rule (openmps.vendors.choose_route). Nothing is done a row at a time.

Audience (reference 4.5): ``push_status`` 0 devices with a user binding made within
``bind_period``; 2 devices without a binding, unbound (or, if never bound, registered) within
``unbind_period``; 1 both (bound whenever, unbound within ``unbind_period``). Periods: 1 = 7 days,
2 = 15 days, 3 = 60 days, 4 = forever.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, Integer, String, and_, exists, func, insert, literal, or_, select

from openmps.errors import BusinessError
from openmps.statuses import Status
from openmps.store import Binding, Delivery, Device, Message, Task
from openmps.store.models import UTCDateTime
from openmps.vendors import ROUTE_OWN, DeviceRoute

BROADCAST_TARGET = "*"  # the target of a broadcast's one message
PERIODS = {1: timedelta(days=7), 2: timedelta(days=15), 3: timedelta(days=60), 4: None}
PLATFORMS = {1: "android", 2: "ios"}  # broadcast DeliveryType -> device platform
ROUTED_BATCH = 10_000  # rows per insert for devices whose route Python chooses


def audience_filter(app_pk: int, audience: dict[str, Any], now: datetime) -> list[Any]:
    """WHERE conditions on ``devices`` for a broadcast's audience."""
    conditions: list[Any] = [Device.app_pk == app_pk, Device.platform == audience["platform"]]
    status = audience["push_status"]
    bind_cutoff = _cutoff(audience["bind_period"], now)
    unbind_cutoff = _cutoff(audience["unbind_period"], now)
    bound_any = exists().where(Binding.device_pk == Device.id)
    bound = bound_any
    if bind_cutoff is not None:
        bound = exists().where(Binding.device_pk == Device.id, Binding.created_at >= bind_cutoff)
    unbound: Any = ~bound_any
    if unbind_cutoff is not None:
        since = func.coalesce(Device.unbound_at, Device.created_at)
        unbound = and_(~bound_any, since >= literal(unbind_cutoff, UTCDateTime()))
    if status == 0:
        conditions.append(bound)
    elif status == 2:
        conditions.append(unbound)
    elif unbind_cutoff is not None:  # 1: everyone bound, and the unbound of the period
        conditions.append(or_(bound_any, unbound))
    return conditions


def _cutoff(period: int, now: datetime) -> datetime | None:
    span = PERIODS[period]
    return None if span is None else now - span


async def replay(
    session: Any, app_pk: int, msg_key: str, payload: dict[str, Any], audience: dict[str, Any]
) -> int | None:
    """The task of an earlier broadcast with this Msgkey if it is an exact repeat; None if the
    Msgkey is unused; a refusal (3028) if it was used by a different broadcast."""
    row = (
        await session.execute(
            select(Message.task_pk, Message.payload, Task.audience)
            .join(Task, Task.id == Message.task_pk)
            .where(
                Message.app_pk == app_pk,
                Message.msg_key == msg_key,
                Message.target == BROADCAST_TARGET,
            )
        )
    ).first()
    if row is None:
        return None
    task_pk, stored_payload, stored_audience = row
    if stored_payload == payload and stored_audience == audience:
        return int(task_pk)
    raise BusinessError(
        3028,
        "INVALID_PARAM",
        "Msgkey was already used by a different broadcast of this app; Msgkeys must be unique "
        "(an exact repeat of a broadcast answers its first task id)",
    )


async def expand(
    session: Any,
    app_pk: int,
    audience: dict[str, Any],
    *,
    message_pk: int,
    status: Status,
    expires: datetime,
    now: datetime,
    route: Callable[[DeviceRoute], str],
) -> tuple[int, int]:
    """Write one delivery per device of the audience; returns how many, and how many of them
    go through a vendor channel."""
    where = audience_filter(app_pk, audience, now)
    own_only = audience["android_channel"] == 1
    columns = ["message_pk", "device_pk", "route", "status_channel", "code", "final"]
    columns += ["expires_at", "updated_at"]
    bulk = select(
        literal(message_pk, Integer()),
        Device.id,
        literal(ROUTE_OWN, String()),
        literal(status.channel.value, String()),
        literal(status.code, Integer()),
        literal(False, Boolean()),
        literal(expires, UTCDateTime()),
        literal(now, UTCDateTime()),
    ).where(*where)
    if not own_only:
        bulk = bulk.where(Device.third_token.is_(None))
    result = await session.execute(insert(Delivery).from_select(columns, bulk))
    count = int(getattr(result, "rowcount", 0) or 0)
    if own_only:
        return count, 0
    routed = await session.stream(
        select(Device.id, Device.platform, Device.third_channel, Device.third_token).where(
            *where, Device.third_token.is_not(None)
        )
    )
    base = {
        "message_pk": message_pk,
        "status_channel": status.channel.value,
        "code": status.code,
        "final": False,
        "expires_at": expires,
        "updated_at": now,
    }
    to_vendors = 0
    async for part in routed.partitions(ROUTED_BATCH):
        rows = [
            {**base, "device_pk": device_pk, "route": route(DeviceRoute(device_pk, *rest))}
            for device_pk, *rest in part
        ]
        await session.execute(insert(Delivery), rows)
        count += len(rows)
        to_vendors += sum(row["route"] != ROUTE_OWN for row in rows)
    return count, to_vendors
