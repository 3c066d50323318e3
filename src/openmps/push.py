"""Accepting pushes: validate, write task, messages and deliveries in one transaction, then
dispatch. Also revocation, the per-task status view, and what a device has pending."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from openmps.dispatch import Dispatcher, Job, message_body, message_frame
from openmps.errors import BusinessError
from openmps.statuses import DEVICE_NOT_ONLINE, NO_BIND_INFO, NONE, find
from openmps.store import Binding, Delivery, Device, Message, Store, Task

logger = logging.getLogger(__name__)

ROUTE_OWN = "own"
MAX_TARGETS_SIMPLE = 10  # reference 4.2: TargetMsgkey holds at most 10 pairs
MAX_EXTENDED_PARAMS = 20  # reference 4.1: 3035 beyond
MAX_PAYLOAD_BYTES = 4096  # title + content + extras as sent to a device: 3050 beyond
MAX_ID_CHARS = 128  # a target or msgKey
REVOKE_WINDOW = timedelta(days=7)  # reference 5.3
# DeliveryType values (reference 4.1 note b) and which of them openmps carries today.
DELIVERY_TYPES = {
    1: "android",
    2: "ios",
    3: "user",
    5: "live activity token",
    6: "live activity id",
    7: "harmonyos",
}
SUPPORTED_DELIVERY_TYPES = {1: "android", 2: "ios", 3: "user"}


@dataclass(frozen=True)
class PushRequest:
    """A push as both front doors hand it over: types checked, limits not yet."""

    delivery_type: int | None
    targets: dict[str, str] | None  # target -> msgKey
    expired_seconds: int | None
    title: str | None
    content: str | None
    extras: dict[str, str] | None = None
    silent: int | None = None
    push_action: int | None = None
    push_style: int | None = None
    uri: str | None = None
    task_name: str | None = None
    strategy_type: int | None = None


@dataclass(frozen=True)
class StatusRow:
    target: str
    msg_key: str
    device: str | None
    channel: str
    status_channel: str
    status_code: int
    status_name: str
    final: bool
    detail: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "msg_key": self.msg_key,
            "device": self.device,
            "channel": self.channel,
            "status_channel": self.status_channel,
            "status_code": self.status_code,
            "status_name": self.status_name,
            "final": self.final,
            "detail": self.detail,
        }


@dataclass
class _Validated:
    delivery_type: int
    targets: dict[str, str]
    expired_seconds: int
    payload: dict[str, Any] = field(default_factory=dict)
    task_name: str | None = None


def _validate(req: PushRequest, *, max_expired_seconds: int) -> _Validated:
    if req.strategy_type not in (None, 0):
        raise BusinessError(
            3028,
            "INVALID_PARAM",
            "StrategyType 1 and 2 (scheduled and cyclic pushes) are not supported yet; "
            "omit StrategyType or send 0",
        )
    if req.delivery_type is None:
        raise BusinessError(3009, "DELIVERY_TYPE_NOT_SUPPORTED", "DeliveryType is required")
    if req.delivery_type not in SUPPORTED_DELIVERY_TYPES:
        known = DELIVERY_TYPES.get(req.delivery_type)
        why = f"({known}) is not supported yet" if known else "is unknown"
        raise BusinessError(
            3009,
            "DELIVERY_TYPE_NOT_SUPPORTED",
            f"DeliveryType {req.delivery_type} {why}; use 1 (Android device), "
            "2 (iOS device) or 3 (user id)",
        )
    if req.expired_seconds is None or req.expired_seconds <= 0:
        raise BusinessError(
            3020, "EXPIREDSECONDS_WRONG", "ExpiredSeconds is required and must be at least 1"
        )
    if req.expired_seconds > max_expired_seconds:
        raise BusinessError(
            3026,
            "EXPIREDTIME_TOO_LONG",
            f"ExpiredSeconds {req.expired_seconds} exceeds the maximum {max_expired_seconds}",
        )
    if not req.title or not req.title.strip():
        raise BusinessError(3024, "PAYLOAD_NOT_ENOUGH", "Title is required")
    if not req.content or not req.content.strip():
        raise BusinessError(3024, "PAYLOAD_NOT_ENOUGH", "Content is required")
    if not req.targets:
        raise BusinessError(3021, "TOKEN_OR_USERID_NULL", "TargetMsgkey has no target")
    if len(req.targets) > MAX_TARGETS_SIMPLE:
        raise BusinessError(
            3029,
            "SINGLE_PUSH_TARGET_TOO_MUCH",
            f"TargetMsgkey has {len(req.targets)} targets; at most {MAX_TARGETS_SIMPLE}",
        )
    for target, key in req.targets.items():
        if not target.strip() or not str(key).strip():
            raise BusinessError(3028, "INVALID_PARAM", "TargetMsgkey has an empty target or msgKey")
        if len(target) > MAX_ID_CHARS or len(str(key)) > MAX_ID_CHARS:
            raise BusinessError(
                3028,
                "INVALID_PARAM",
                f"a target or msgKey in TargetMsgkey is longer than {MAX_ID_CHARS} characters",
            )
    if req.extras is not None and len(req.extras) > MAX_EXTENDED_PARAMS:
        raise BusinessError(
            3035,
            "EXTEND_PARAM_TO_MUCH",
            f"ExtendedParams has {len(req.extras)} keys; at most {MAX_EXTENDED_PARAMS}",
        )
    for name, value in (("Silent", req.silent), ("PushAction", req.push_action)):
        if value not in (None, 0, 1):
            raise BusinessError(3028, "INVALID_PARAM", f"{name} must be 0 or 1, got {value}")
    if req.push_style not in (None, 0, 1, 2):
        raise BusinessError(3028, "INVALID_PARAM", "PushStyle must be 0, 1 or 2")
    if req.task_name is not None and len(req.task_name) > 256:
        raise BusinessError(3028, "INVALID_PARAM", "TaskName is longer than 256 characters")
    payload: dict[str, Any] = {
        "title": req.title,
        "content": req.content,
        "extras": req.extras or {},
        "silent": req.silent or 0,
        "push_action": req.push_action or 0,
        "push_style": req.push_style or 0,
        "uri": req.uri or None,
    }
    size = len(json.dumps(payload, ensure_ascii=False).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise BusinessError(
            3050,
            "MSG_PAYLOAD_TOO_LONG",
            f"Title, Content and ExtendedParams take {size} bytes; at most {MAX_PAYLOAD_BYTES}",
        )
    return _Validated(
        req.delivery_type,
        {t: str(k) for t, k in req.targets.items()},
        req.expired_seconds,
        payload,
        req.task_name or None,
    )


class Pushes:
    def __init__(self, store: Store, dispatcher: Dispatcher, *, max_expired_seconds: int) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._max_expired_seconds = max_expired_seconds

    async def push_simple(self, app_pk: int, req: PushRequest) -> int:
        """Validate, store durably, dispatch; returns the task id. Nothing is stored on error."""
        v = _validate(req, max_expired_seconds=self._max_expired_seconds)
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=v.expired_seconds)
        jobs: list[Job] = []
        try:
            async with self._store.session() as session, session.begin():
                task = Task(
                    app_pk=app_pk,
                    kind="simple",
                    task_name=v.task_name,
                    delivery_type=v.delivery_type,
                    created_at=now,
                    expires_at=expires,
                )
                session.add(task)
                await session.flush()
                resolved = await self._resolve(session, app_pk, v)
                for target, msg_key in v.targets.items():
                    message = Message(
                        task_pk=task.id,
                        app_pk=app_pk,
                        msg_key=msg_key,
                        target=target,
                        delivery_type=v.delivery_type,
                        payload=v.payload,
                        created_at=now,
                        expires_at=expires,
                    )
                    session.add(message)
                    await session.flush()
                    devices, detail = resolved[target]
                    rows = _delivery_rows(
                        message.id, devices, detail, v.delivery_type, expires, now
                    )
                    ids = (
                        await session.execute(
                            insert(Delivery).returning(Delivery.id, Delivery.device_pk), rows
                        )
                    ).all()
                    body = message_body(
                        v.payload,
                        msg_key=msg_key,
                        task_id=task.id,
                        expires_ms=int(expires.timestamp() * 1000),
                    )
                    jobs.extend(
                        Job(d_id, d_pk, message_frame(d_id, body))
                        for d_id, d_pk in ids
                        if d_pk is not None
                    )
                task_id = task.id
        except IntegrityError as exc:
            raise BusinessError(
                3028,
                "INVALID_PARAM",
                "a msgKey in TargetMsgkey was already used for that target in this app; "
                "msgKeys must be unique",
            ) from exc
        logger.info(
            "push accepted: task=%d targets=%d deliveries=%d", task_id, len(v.targets), len(jobs)
        )
        self._dispatcher.submit(jobs)
        return task_id

    async def _resolve(
        self, session: Any, app_pk: int, v: _Validated
    ) -> dict[str, tuple[list[int], str | None]]:
        """target -> (device pks, why none) for every target of the push."""
        targets = list(v.targets)
        out: dict[str, tuple[list[int], str | None]] = {t: ([], None) for t in targets}
        if v.delivery_type == 3:
            rows = (
                await session.execute(
                    select(Binding.user_id, Binding.device_pk)
                    .where(Binding.app_pk == app_pk, Binding.user_id.in_(targets))
                    .order_by(Binding.id)
                )
            ).all()
            for user_id, device_pk in rows:
                out[user_id][0].append(device_pk)
            return out
        rows = (
            await session.execute(
                select(Device.delivery_token, Device.id, Device.platform).where(
                    Device.app_pk == app_pk, Device.delivery_token.in_(targets)
                )
            )
        ).all()
        wanted = SUPPORTED_DELIVERY_TYPES[v.delivery_type]
        found = {token: (pk, platform) for token, pk, platform in rows}
        for target in targets:
            if target not in found:
                out[target] = ([], "unknown_device")
            elif found[target][1] != wanted:
                out[target] = ([], f"platform_mismatch: device is {found[target][1]}")
            else:
                out[target] = ([found[target][0]], None)
        return out

    async def revoke_message(self, app_pk: int, msg_key: str, target: str) -> int:
        """Revoke one message; returns how many pending deliveries it stopped."""
        if not msg_key.strip():
            raise BusinessError(3028, "INVALID_PARAM", "MessageId is required")
        if not target.strip():
            raise BusinessError(3021, "TOKEN_OR_USERID_NULL", "TargetId is required")
        now = datetime.now(UTC)
        async with self._store.session() as session, session.begin():
            message = await session.scalar(
                select(Message).where(
                    Message.app_pk == app_pk, Message.msg_key == msg_key, Message.target == target
                )
            )
            if message is None:
                raise BusinessError(
                    3028, "INVALID_PARAM", "no message with that MessageId and TargetId in this app"
                )
            if message.created_at < now - REVOKE_WINDOW:
                raise BusinessError(
                    3028, "INVALID_PARAM", "only messages of the last 7 days can be revoked"
                )
            if message.revoked_at is None:
                message.revoked_at = now
            sent = (
                await session.execute(
                    select(Delivery.id, Delivery.device_pk).where(
                        Delivery.message_pk == message.id, Delivery.device_pk.is_not(None)
                    )
                )
            ).all()
            result = await session.execute(
                update(Delivery)
                .where(Delivery.message_pk == message.id, Delivery.final.is_(False))
                .values(final=True, detail="revoked", updated_at=now)
            )
        self._dispatcher.revoke([(d, i) for i, d in sent if d is not None])
        return int(getattr(result, "rowcount", 0) or 0)

    async def task_status(self, task_id: int, *, app_pk: int | None) -> list[StatusRow] | None:
        """One row per delivery of the task, or None if there is no such task (for that app)."""
        async with self._store.session() as session:
            task = await session.get(Task, task_id)
            if task is None or (app_pk is not None and task.app_pk != app_pk):
                return None
            rows = (
                await session.execute(
                    select(
                        Message.target,
                        Message.msg_key,
                        Device.delivery_token,
                        Delivery.route,
                        Delivery.status_channel,
                        Delivery.code,
                        Delivery.final,
                        Delivery.detail,
                    )
                    .join(Delivery, Delivery.message_pk == Message.id)
                    .outerjoin(Device, Device.id == Delivery.device_pk)
                    .where(Message.task_pk == task_id)
                    .order_by(Message.id, Delivery.id)
                )
            ).all()
        out = []
        for target, key, token, route, status_channel, code, final, detail in rows:
            status = find(status_channel, code)
            out.append(
                StatusRow(
                    target,
                    key,
                    token,
                    route,
                    status_channel,
                    code,
                    status.name if status else "UNKNOWN",
                    final,
                    detail,
                )
            )
        return out

    async def pending(self, device_pk: int) -> list[Job]:
        """What the device should get on connect: valid, unrevoked, unacked; oldest first."""
        now = datetime.now(UTC)
        async with self._store.session() as session:
            rows = (
                await session.execute(
                    select(
                        Delivery.id,
                        Message.msg_key,
                        Message.task_pk,
                        Message.payload,
                        Message.expires_at,
                    )
                    .join(Message, Message.id == Delivery.message_pk)
                    .where(
                        Delivery.device_pk == device_pk,
                        Delivery.final.is_(False),
                        Delivery.expires_at > now,
                        Message.revoked_at.is_(None),
                    )
                    .order_by(Delivery.id)
                )
            ).all()
        return [
            Job(
                d_id,
                device_pk,
                message_frame(
                    d_id,
                    message_body(
                        payload,
                        msg_key=key,
                        task_id=task_pk,
                        expires_ms=int(expires_at.timestamp() * 1000),
                    ),
                ),
            )
            for d_id, key, task_pk, payload, expires_at in rows
        ]

    async def expire(self) -> int:
        """Make every delivery whose message ran out of validity final; returns how many."""
        now = datetime.now(UTC)
        async with self._store.session() as session, session.begin():
            result = await session.execute(
                update(Delivery)
                .where(Delivery.final.is_(False), Delivery.expires_at <= now)
                .values(final=True, detail="expired", updated_at=now)
            )
        count = int(getattr(result, "rowcount", 0) or 0)
        if count:
            logger.info("deliveries expired: %d", count)
        return count


def _delivery_rows(
    message_pk: int,
    devices: list[int],
    detail: str | None,
    delivery_type: int,
    expires: datetime,
    now: datetime,
) -> list[dict[str, Any]]:
    base = {
        "message_pk": message_pk,
        "route": ROUTE_OWN,
        "expires_at": expires,
        "updated_at": now,
        "detail": None,
    }
    if devices:
        return [
            {
                **base,
                "device_pk": pk,
                "status_channel": DEVICE_NOT_ONLINE.channel.value,
                "code": DEVICE_NOT_ONLINE.code,
                "final": False,
            }
            for pk in devices
        ]
    if delivery_type == 3:
        # No binding yet: status 1, not final; a later PushBind before expiry sends it.
        return [
            {
                **base,
                "device_pk": None,
                "status_channel": NO_BIND_INFO.channel.value,
                "code": NO_BIND_INFO.code,
                "final": False,
            }
        ]
    # A device target this app does not have can never be reached: final NONE, reason kept.
    return [
        {
            **base,
            "device_pk": None,
            "status_channel": NONE.channel.value,
            "code": NONE.code,
            "final": True,
            "detail": detail,
        }
    ]
