"""The jobs of pending deliveries, read from the store: own-channel frames for the gateway,
vendor requests for the channels. Every sender reads them here (intake, connect, bind,
broadcast, review approval, scale-out resync and recovery), so a frame is built one way."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from openmps.channels.base import Outbound
from openmps.dispatch import Job, message_body, message_frame
from openmps.statuses import WAITING_FOR_VERIFY
from openmps.store import Delivery, Device, Message
from openmps.vendor_dispatch import VendorJob
from openmps.vendors import ROUTE_OWN

ONLINE_CHUNK = 5000  # device pks per query when reading what connected devices have pending

# A delivery held for review (status -1 of the common channel) is neither sent nor resent.
NOT_HELD = or_(
    Delivery.status_channel != WAITING_FOR_VERIFY.channel.value,
    Delivery.code != WAITING_FOR_VERIFY.code,
)


async def own_jobs(session: Any, *where: Any) -> list[Job]:
    """Own-channel jobs for the pending deliveries that match ``where``; oldest first."""
    rows = (
        await session.execute(
            select(
                Delivery.id,
                Delivery.device_pk,
                Message.id,
                Message.msg_key,
                Message.task_pk,
                Message.payload,
                Message.expires_at,
            )
            .join(Message, Message.id == Delivery.message_pk)
            .where(
                Delivery.route == ROUTE_OWN,
                Delivery.final.is_(False),
                Delivery.device_pk.is_not(None),
                Message.revoked_at.is_(None),
                NOT_HELD,
                *where,
            )
        )
    ).all()
    # Oldest first, sorted here: an ORDER BY lets PostgreSQL walk the whole primary key of a
    # million-row broadcast to find the few thousand rows of the connected devices.
    rows = sorted(rows, key=lambda row: row[0])
    bodies: dict[int, str] = {}  # message pk -> body: a broadcast has one message
    jobs = []
    for d_id, device_pk, message_pk, key, task_pk, payload, expires_at in rows:
        body = bodies.get(message_pk)
        if body is None:
            body = bodies[message_pk] = message_body(
                payload, msg_key=key, task_id=task_pk, expires_ms=int(expires_at.timestamp() * 1000)
            )
        jobs.append(Job(d_id, device_pk, message_frame(d_id, body)))
    return jobs


async def vendor_jobs(session: Any, *where: Any) -> list[VendorJob]:
    """Vendor-channel jobs for the pending deliveries that match ``where``; oldest first."""
    rows = (
        await session.execute(
            select(
                Delivery.id,
                Delivery.route,
                Delivery.device_pk,
                Delivery.attempts,
                Device.third_token,
                Message.app_pk,
                Message.msg_key,
                Message.task_pk,
                Message.payload,
                Message.expires_at,
            )
            .join(Message, Message.id == Delivery.message_pk)
            .join(Device, Device.id == Delivery.device_pk)
            .where(
                Delivery.route != ROUTE_OWN,
                Delivery.final.is_(False),
                Message.revoked_at.is_(None),
                NOT_HELD,
                *where,
            )
        )
    ).all()
    rows = sorted(rows, key=lambda row: row[0])  # oldest first (see own_jobs)
    return [
        VendorJob(
            app_pk,
            route,
            device_pk,
            outbound(d_id, token or "", payload, msg_key=key, task_id=task_pk, expires_at=expires),
            attempts=attempts,
        )
        for d_id, route, device_pk, attempts, token, app_pk, key, task_pk, payload, expires in rows
    ]


def outbound(
    delivery_id: int,
    token: str,
    payload: dict[str, Any],
    *,
    msg_key: str,
    task_id: int,
    expires_at: datetime,
) -> Outbound:
    """What a vendor channel needs of one delivery."""
    return Outbound(
        delivery_id=delivery_id,
        token=token,
        title=payload["title"],
        content=payload["content"],
        extras=payload.get("extras") or {},
        expires_at=expires_at,
        msg_key=msg_key,
        task_id=task_id,
        silent=bool(payload.get("silent")),
        push_action=int(payload.get("push_action") or 0),
        uri=payload.get("uri"),
    )
