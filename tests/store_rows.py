"""Rows written straight into a store, for tests that need a state no API call leaves behind
(an old ``updated_at``, a schema at an earlier revision)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from openmps.apps import create_app
from openmps.store import App, Delivery, Device, Message, Store, Task


@dataclass(frozen=True)
class PendingRow:
    message_pk: int
    device_pk: int
    delivery_id: int


async def pending_delivery(store: Store, *, created: datetime, updated: datetime) -> PendingRow:
    """A new app with one Android device and one own-channel delivery to it, pending (code 1),
    valid for an hour from now; the message and device were created at ``created``."""
    app = await create_app(store, "rows")
    expires = datetime.now(created.tzinfo) + timedelta(hours=1)
    async with store.write() as session:
        app_pk = await session.scalar(select(App.id).where(App.app_id == app.app_id))
        device = Device(
            app_pk=app_pk,
            delivery_token="tok-1",
            secret_hash="h",
            platform="android",
            created_at=created,
        )
        task = Task(
            request_id="req-1",
            app_pk=app_pk,
            kind="simple",
            delivery_type=1,
            created_at=created,
            expires_at=expires,
        )
        session.add_all([device, task])
        await session.flush()
        message = Message(
            task_pk=task.id,
            app_pk=app_pk,
            msg_key="k-1",
            target="tok-1",
            delivery_type=1,
            payload={"title": "t", "content": "c"},
            created_at=created,
            expires_at=expires,
        )
        session.add(message)
        await session.flush()
        delivery = Delivery(
            message_pk=message.id,
            device_pk=device.id,
            route="own",
            status_channel="common",
            code=1,
            final=False,
            expires_at=expires,
            updated_at=updated,
        )
        session.add(delivery)
        await session.flush()
        return PendingRow(message.id, device.id, delivery.id)
