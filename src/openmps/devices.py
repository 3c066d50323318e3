"""Devices: registration, the gateway's hello check, vendor reports, user bindings."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, update

from openmps.channels.registry import THIRD_CHANNELS
from openmps.dispatch import Dispatch
from openmps.errors import BusinessError
from openmps.gateway.hub import Hub
from openmps.jobs import own_jobs
from openmps.statuses import DEVICE_NOT_ONLINE, NO_BIND_INFO
from openmps.store import Binding, Delivery, Device, Message, Store

PLATFORMS = ("android", "ios")
MAX_PHONE_CHARS = 32  # PushBind PhoneNumber (E.164 needs 16)
MAX_VENDOR_TOKEN_CHARS = 512  # PushReport ThirdChannelDeviceToken
MAX_REPORT_FIELD_CHARS = 256  # every other PushReport field (Model, Imei, AppVersion, ...)
# Our OsType values (the public MPS docs publish none): they mirror DeliveryType.
OS_TYPES = {1: "android", 2: "ios", 7: "harmonyos"}


MAX_OS_TYPE = 2**31 - 1  # the store keeps OsType in a 32-bit column


def _check_os_type(os_type: int) -> None:
    if not 0 <= os_type <= MAX_OS_TYPE:
        raise BusinessError(
            3028, "INVALID_PARAM", f"OsType must be between 0 and {MAX_OS_TYPE}, got {os_type}"
        )


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mask(token: str) -> str:
    """A token fit for a log line: its last four characters only."""
    return "…" + token[-4:] if len(token) > 4 else "…"


@dataclass(frozen=True)
class NewDevice:
    delivery_token: str
    device_secret: str = field(repr=False)
    platform: str = "android"


@dataclass(frozen=True)
class DeviceState:
    delivery_token: str
    device_id: str
    platform: str
    online: bool
    third_token: str | None
    user_id: str | None
    manufacturer: str | None


class Devices:
    def __init__(self, store: Store, hub: Hub, dispatcher: Dispatch) -> None:
        self._store = store
        self._hub = hub
        self._dispatcher = dispatcher

    async def register(self, app_pk: int, platform: str) -> NewDevice:
        if platform not in PLATFORMS:
            raise BusinessError(
                3008, "OS_TYPE_NOT_SUPPORTED", f"platform must be one of {PLATFORMS}"
            )
        token = secrets.token_urlsafe(32)
        device_secret = secrets.token_urlsafe(32)
        async with self._store.write() as session:
            session.add(
                Device(
                    app_pk=app_pk,
                    delivery_token=token,
                    secret_hash=_hash_secret(device_secret),
                    platform=platform,
                    created_at=datetime.now(UTC),
                )
            )
        return NewDevice(token, device_secret, platform)

    async def authenticate(self, token: str, device_secret: str) -> int | None:
        """The device's primary key if the secret matches its token, else None."""
        async with self._store.session() as session:
            row = (
                await session.execute(
                    select(Device.id, Device.secret_hash).where(Device.delivery_token == token)
                )
            ).first()
        expected = row[1] if row is not None else _hash_secret("not a device")
        ok = hmac.compare_digest(expected, _hash_secret(device_secret))
        return row[0] if row is not None and ok else None

    async def _device(self, app_pk: int, token: str) -> Device:
        if not token.strip():
            raise BusinessError(3001, "NEED_DELIVERYTOKEN", "DeliveryToken is required")
        async with self._store.session() as session:
            device = await session.scalar(
                select(Device).where(Device.delivery_token == token, Device.app_pk == app_pk)
            )
        if device is None:
            raise BusinessError(
                3028,
                "INVALID_PARAM",
                "DeliveryToken is not a device of this app; the device "
                "gets its token when it registers with the gateway",
            )
        return device

    async def report(
        self,
        app_pk: int,
        token: str,
        *,
        os_type: int,
        third_channel: int | None,
        third_token: str | None,
        extra: dict[str, Any],
    ) -> None:
        _check_os_type(os_type)
        if third_channel is not None and third_channel not in THIRD_CHANNELS:
            raise BusinessError(
                3028,
                "INVALID_PARAM",
                f"ThirdChannel {third_channel} is unknown; one of "
                + ", ".join(f"{n} ({v})" for n, v in sorted(THIRD_CHANNELS.items())),
            )
        if third_token is not None and len(third_token) > MAX_VENDOR_TOKEN_CHARS:
            raise BusinessError(
                3028,
                "INVALID_PARAM",
                f"ThirdChannelDeviceToken is longer than {MAX_VENDOR_TOKEN_CHARS} characters",
            )
        for name, value in extra.items():
            if len(str(value)) > MAX_REPORT_FIELD_CHARS:
                raise BusinessError(
                    3028,
                    "INVALID_PARAM",
                    f"{name} is longer than {MAX_REPORT_FIELD_CHARS} characters",
                )
        device = await self._device(app_pk, token)
        async with self._store.write() as session:
            await session.execute(
                update(Device)
                .where(Device.id == device.id)
                .values(
                    os_type=os_type,
                    third_channel=third_channel,
                    third_token=third_token or None,
                    report=extra or None,
                )
            )

    async def bind(
        self, app_pk: int, token: str, user_id: str, *, os_type: int, phone: str | None
    ) -> int:
        """Bind ``user_id`` to the device; returns how many waiting messages it unblocked.

        Messages to this user that found no binding (status 1) and are still valid go to the
        device now (reference 6.3).
        """
        if not user_id.strip():
            raise BusinessError(3012, "NEED_USERID", "UserId is required")
        _check_os_type(os_type)
        if len(user_id) > 128:
            raise BusinessError(3028, "INVALID_PARAM", "UserId is longer than 128 characters")
        if phone is not None and len(phone) > MAX_PHONE_CHARS:
            raise BusinessError(
                3028, "INVALID_PARAM", f"PhoneNumber is longer than {MAX_PHONE_CHARS} characters"
            )
        device = await self._device(app_pk, token)
        now = datetime.now(UTC)
        async with self._store.write() as session:
            values = {
                "app_pk": app_pk,
                "user_id": user_id,
                "device_pk": device.id,
                "phone_number": phone,
                "created_at": now,
            }
            await session.execute(
                self._store.insert(Binding).values(values).on_conflict_do_nothing()
            )
            if device.os_type is None:
                device_row = await session.get(Device, device.id)
                if device_row is not None:
                    device_row.os_type = os_type
            waiting = list(
                (
                    await session.scalars(
                        select(Delivery.id)
                        .join(Message, Message.id == Delivery.message_pk)
                        .where(
                            Message.app_pk == app_pk,
                            Message.delivery_type == 3,
                            Message.target == user_id,
                            Message.revoked_at.is_(None),
                            Delivery.device_pk.is_(None),
                            Delivery.final.is_(False),
                            Delivery.expires_at > now,
                            # not those held for review (status -1): approval sends them
                            Delivery.status_channel == NO_BIND_INFO.channel.value,
                            Delivery.code == NO_BIND_INFO.code,
                        )
                    )
                ).all()
            )
            jobs = []
            if waiting:
                await session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(waiting))
                    .values(
                        device_pk=device.id,
                        status_channel=DEVICE_NOT_ONLINE.channel.value,
                        code=DEVICE_NOT_ONLINE.code,
                        updated_at=now,
                    )
                )
                # The same frames as every other own-channel send (openmps.jobs.own_jobs).
                jobs = await own_jobs(session, Delivery.id.in_(waiting))
        await self._dispatcher.submit(jobs)
        return len(jobs)

    async def unbind(self, app_pk: int, token: str, user_id: str) -> bool:
        if not user_id.strip():
            raise BusinessError(3012, "NEED_USERID", "UserId is required")
        device = await self._device(app_pk, token)
        async with self._store.write() as session:
            result = await session.execute(
                delete(Binding).where(Binding.device_pk == device.id, Binding.user_id == user_id)
            )
            left = await session.scalar(
                select(func.count()).select_from(Binding).where(Binding.device_pk == device.id)
            )
            if not left:  # a broadcast's audience of unbound devices counts from here
                await session.execute(
                    update(Device)
                    .where(Device.id == device.id)
                    .values(unbound_at=datetime.now(UTC))
                )
        return bool(getattr(result, "rowcount", 0))

    async def state(self, app_pk: int, target: str, target_type: int | None) -> DeviceState:
        if not target.strip():
            raise BusinessError(3021, "TOKEN_OR_USERID_NULL", "Target is required")
        async with self._store.session() as session:
            if target_type == 3:
                row = (
                    await session.execute(
                        select(Device, Binding.user_id)
                        .join(Binding, Binding.device_pk == Device.id)
                        .where(Binding.app_pk == app_pk, Binding.user_id == target)
                        .order_by(Binding.id.desc())
                        .limit(1)
                    )
                ).first()
            else:
                row = (
                    await session.execute(
                        select(Device, Binding.user_id)
                        .outerjoin(Binding, Binding.device_pk == Device.id)
                        .where(Device.app_pk == app_pk, Device.delivery_token == target)
                        .order_by(Binding.id.desc())
                        .limit(1)
                    )
                ).first()
        if row is None:
            what = "user has no bound device" if target_type == 3 else "no such device"
            raise BusinessError(3028, "INVALID_PARAM", f"Target not found: {what}")
        device, user_id = row
        online = await self._dispatcher.online_among([device.id])
        return DeviceState(
            delivery_token=device.delivery_token,
            device_id=str(device.id),
            platform=device.platform,
            online=device.id in online,
            third_token=device.third_token,
            user_id=user_id,
            manufacturer=(device.report or {}).get("Model"),
        )
