"""Accepting pushes: validate, write task, messages and deliveries in one transaction, then
dispatch. Also revocation, the per-task status view, and what a device has pending (the jobs
themselves are read by openmps.jobs)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import func, insert, select, update

from openmps.broadcast import BROADCAST_TARGET, PERIODS, PLATFORMS, expand, replay
from openmps.dispatch import AnyJob, Dispatch, Job, message_body, message_frame
from openmps.errors import BusinessError
from openmps.jobs import ONLINE_CHUNK, outbound, own_jobs, vendor_jobs
from openmps.review import REVIEW_PENDING, needs_review, review_rules
from openmps.statuses import DEVICE_NOT_ONLINE, NO_BIND_INFO, NONE, WAITING_FOR_VERIFY, find
from openmps.store import Binding, Delivery, Device, Message, Store, Task
from openmps.vendor_dispatch import VendorJob
from openmps.vendors import ROUTE_OWN, DeviceRoute, VendorSettings, choose_route

logger = logging.getLogger(__name__)

MAX_TARGETS_SIMPLE = 10  # reference 4.2: TargetMsgkey holds at most 10 pairs
MAX_EXTENDED_PARAMS = 20  # reference 4.1: 3035 beyond
MAX_PAYLOAD_BYTES = 4096  # title + content + extras as sent to a device: 3050 beyond
MAX_ID_CHARS = 128  # a target or msgKey
REVOKE_WINDOW = timedelta(days=7)  # reference 5.3
INTAKE_BATCH = 256  # most pushes committed in one transaction
EXPIRY_BATCH = 10_000  # expired deliveries made final per transaction
ANALYZE_AFTER_ROWS = 100_000  # a broadcast this large refreshes the deliveries statistics
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
class TargetContent:
    """What one target of a PushMultiple gets in place of the push's own title, content, uri
    and extras (the template rendered with that target's values, extras merged)."""

    title: str | None
    content: str | None
    uri: str | None = None
    extras: dict[str, str] | None = None


@dataclass(frozen=True)
class PushRequest:
    """A push as both front doors hand it over: types checked, limits not yet.

    ``kind`` is "simple", "template" (title and content rendered from ``template_name``) or
    "multiple" (``per_target`` holds each target's own content; up to 100 targets).
    """

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
    strategy_content: str | None = None
    kind: str = "simple"
    template_name: str | None = None
    per_target: dict[str, TargetContent] | None = None


@dataclass(frozen=True)
class BroadcastRequest:
    """A PushBroadcast: one message (a template already rendered into ``title``/``content``)
    to every device of a platform that matches the audience (reference 4.5).

    ``push_status``: 0 bound devices (default), 1 all, 2 unbound; ``bind_period`` and
    ``unbind_period``: 1 = 7 days, 2 = 15 days, 3 = 60 days, 4 = forever (the default);
    ``android_channel``: 1 the own channel only, 2 (default) routing as for any push.
    """

    delivery_type: int | None
    msg_key: str | None
    expired_seconds: int | None
    title: str | None
    content: str | None
    template_name: str | None = None
    extras: dict[str, str] | None = None
    silent: int | None = None
    push_action: int | None = None
    push_style: int | None = None
    uri: str | None = None
    task_name: str | None = None
    strategy_type: int | None = None
    strategy_content: str | None = None
    push_status: int | None = None
    bind_period: int | None = None
    unbind_period: int | None = None
    android_channel: int | None = None


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


@dataclass(frozen=True)
class _Intake:
    app_pk: int
    push: _Validated
    answer: asyncio.Future[tuple[int, list[AnyJob]]]
    schedule_id: str | None = None


@dataclass
class _Validated:
    delivery_type: int
    targets: dict[str, str]  # target -> msgKey
    expired_seconds: int
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)  # target -> payload
    task_name: str | None = None
    kind: str = "simple"
    template_name: str | None = None


MAX_TARGETS = {"simple": MAX_TARGETS_SIMPLE, "template": MAX_TARGETS_SIMPLE, "multiple": 100}
MAX_TARGET_EXTRAS = 9  # reference 4.4: a PushMultiple target's own extras, 3049 from 10


def validate(req: PushRequest, *, max_expired_seconds: int) -> _Validated:
    """Check a push against every rule of the reference; raises BusinessError, stores nothing.

    The strategy (StrategyType, StrategyContent) is the scheduler's to check.
    """
    if req.kind not in MAX_TARGETS:
        raise ValueError(f"unknown push kind {req.kind!r}")
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
    _check_expiry(req.expired_seconds, max_expired_seconds)
    field_name = "TargetMsg" if req.kind == "multiple" else "TargetMsgkey"
    if not req.targets:
        raise BusinessError(3021, "TOKEN_OR_USERID_NULL", f"{field_name} has no target")
    limit = MAX_TARGETS[req.kind]
    if len(req.targets) > limit:
        raise BusinessError(
            3029,
            "SINGLE_PUSH_TARGET_TOO_MUCH",
            f"{field_name} has {len(req.targets)} targets; at most {limit}",
        )
    for target, key in req.targets.items():
        _check_ids(field_name, target, str(key))
    _check_extras(req.extras)
    _check_options(req)
    payloads: dict[str, dict[str, Any]] = {}
    for target in req.targets:
        own = (req.per_target or {}).get(target)
        if req.kind == "multiple" and own is None:
            raise ValueError(f"multiple push without content for target {target!r}")
        if own is not None and own.extras is not None and len(own.extras) > MAX_TARGET_EXTRAS:
            raise BusinessError(
                3049,
                "MULTIPLE_INNER_EXTEND_PARAM_TO_MUCH",
                f"the ExtendedParams of target {target!r} have {len(own.extras)} keys; "
                f"fewer than {MAX_TARGET_EXTRAS + 1} allowed",
            )
        title = own.title if own else req.title
        content = own.content if own else req.content
        extras = {**(req.extras or {}), **((own.extras if own else None) or {})}
        uri = own.uri if own and own.uri is not None else req.uri
        payloads[target] = _payload(req, title, content, extras, uri)
    return _Validated(
        req.delivery_type,
        {t: str(k) for t, k in req.targets.items()},
        req.expired_seconds or 0,
        payloads,
        req.task_name or None,
        req.kind,
        req.template_name,
    )


@dataclass(frozen=True)
class _ValidatedBroadcast:
    delivery_type: int
    msg_key: str
    expired_seconds: int
    payload: dict[str, Any]
    audience: dict[str, Any]
    task_name: str | None
    template_name: str | None


def validate_broadcast(req: BroadcastRequest, *, max_expired_seconds: int) -> _ValidatedBroadcast:
    """Check a broadcast against the rules of reference 4.5; raises BusinessError."""
    if req.delivery_type == 3:
        raise BusinessError(
            3030,
            "BROADCAST_ONLY_SUPPORT_BY_DEVICE",
            "a broadcast goes to devices, not users: DeliveryType 1 (Android) or 2 (iOS)",
        )
    if req.delivery_type not in PLATFORMS:
        known = DELIVERY_TYPES.get(req.delivery_type or 0)
        shown = "is required" if req.delivery_type is None else f"{req.delivery_type} "
        if req.delivery_type is not None:
            shown += f"({known}) is not supported yet" if known else "is unknown"
        raise BusinessError(
            3009,
            "DELIVERY_TYPE_NOT_SUPPORTED",
            f"DeliveryType {shown}; a broadcast takes 1 (Android) or 2 (iOS)",
        )
    _check_expiry(req.expired_seconds, max_expired_seconds)
    if not req.msg_key or not req.msg_key.strip():
        raise BusinessError(3028, "INVALID_PARAM", "Msgkey is required")
    _check_ids("Msgkey", BROADCAST_TARGET, req.msg_key)
    _check_extras(req.extras)
    _check_options(req)
    choices = (
        ("PushStatus", req.push_status, (0, 1, 2)),
        ("BindPeriod", req.bind_period, tuple(PERIODS)),
        ("UnBindPeriod", req.unbind_period, tuple(PERIODS)),
        ("AndroidChannel", req.android_channel, (1, 2)),
    )
    for name, value, allowed in choices:
        if value is not None and value not in allowed:
            shown = ", ".join(map(str, allowed))
            raise BusinessError(
                3028, "INVALID_PARAM", f"{name} must be one of {shown}, got {value}"
            )
    payload = _payload(req, req.title, req.content, dict(req.extras or {}), req.uri)
    audience = {
        "platform": PLATFORMS[req.delivery_type],
        "push_status": req.push_status or 0,
        "bind_period": req.bind_period or 4,
        "unbind_period": req.unbind_period or 4,
        "android_channel": req.android_channel or 2,
    }
    return _ValidatedBroadcast(
        req.delivery_type,
        req.msg_key,
        req.expired_seconds or 0,
        payload,
        audience,
        req.task_name or None,
        req.template_name,
    )


def _check_expiry(expired_seconds: int | None, maximum: int) -> None:
    if expired_seconds is None or expired_seconds <= 0:
        raise BusinessError(
            3020, "EXPIREDSECONDS_WRONG", "ExpiredSeconds is required and must be at least 1"
        )
    if expired_seconds > maximum:
        raise BusinessError(
            3026,
            "EXPIREDTIME_TOO_LONG",
            f"ExpiredSeconds {expired_seconds} exceeds the maximum {maximum}",
        )


def _check_ids(field_name: str, target: str, key: str) -> None:
    if not target.strip() or not key.strip():
        raise BusinessError(3028, "INVALID_PARAM", f"{field_name} has an empty target or msgKey")
    if not (target + key).isprintable():
        raise BusinessError(
            3028,
            "INVALID_PARAM",
            f"a target or msgKey in {field_name} contains a control or invisible character",
        )
    if len(target) > MAX_ID_CHARS or len(key) > MAX_ID_CHARS:
        raise BusinessError(
            3028,
            "INVALID_PARAM",
            f"a target or msgKey in {field_name} is longer than {MAX_ID_CHARS} characters",
        )


def _check_extras(extras: dict[str, str] | None) -> None:
    if extras is not None and len(extras) > MAX_EXTENDED_PARAMS:
        raise BusinessError(
            3035,
            "EXTEND_PARAM_TO_MUCH",
            f"ExtendedParams has {len(extras)} keys; at most {MAX_EXTENDED_PARAMS}",
        )


def _check_options(req: PushRequest | BroadcastRequest) -> None:
    for name, value in (("Silent", req.silent), ("PushAction", req.push_action)):
        if value not in (None, 0, 1):
            raise BusinessError(3028, "INVALID_PARAM", f"{name} must be 0 or 1, got {value}")
    if req.push_style not in (None, 0, 1, 2):
        raise BusinessError(3028, "INVALID_PARAM", "PushStyle must be 0, 1 or 2")
    if req.task_name is not None and len(req.task_name) > 256:
        raise BusinessError(3028, "INVALID_PARAM", "TaskName is longer than 256 characters")


def _payload(
    req: PushRequest | BroadcastRequest,
    title: str | None,
    content: str | None,
    extras: dict[str, str],
    uri: str | None,
) -> dict[str, Any]:
    """What a device (or vendor) is sent: checked for presence and size (3024, 3050)."""
    if not title or not title.strip():
        raise BusinessError(3024, "PAYLOAD_NOT_ENOUGH", "Title is required")
    if not content or not content.strip():
        raise BusinessError(3024, "PAYLOAD_NOT_ENOUGH", "Content is required")
    payload: dict[str, Any] = {
        "title": title,
        "content": content,
        "extras": extras,
        "silent": req.silent or 0,
        "push_action": req.push_action or 0,
        "push_style": req.push_style or 0,
        "uri": uri or None,
    }
    size = len(json.dumps(payload, ensure_ascii=False).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise BusinessError(
            3050,
            "MSG_PAYLOAD_TOO_LONG",
            f"Title, Content and ExtendedParams take {size} bytes; at most {MAX_PAYLOAD_BYTES}",
        )
    return payload


class Pushes:
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatch,
        vendors: VendorSettings,
        *,
        max_expired_seconds: int,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._vendors = vendors
        self._max_expired_seconds = max_expired_seconds
        self._intake: asyncio.Queue[_Intake | None] = asyncio.Queue()  # pushes to write
        self._intake_task: asyncio.Task[None] | None = None  # the group-commit writer

    def start(self) -> None:
        """Start the intake writer; pushes wait for it (``push`` needs it running)."""
        self._intake_task = asyncio.create_task(self._intake_loop(), name="push-intake")

    async def stop(self) -> None:
        """Write what is queued, then stop the intake writer."""
        if self._intake_task is None:
            return
        await self._intake.put(None)
        await self._intake_task
        self._intake_task = None

    @property
    def queued(self) -> int:
        return self._intake.qsize()  # pushes waiting for the intake writer (for /metrics)

    def validate(self, req: PushRequest) -> None:
        """Refuse a push that breaks a rule (BusinessError), without storing anything."""
        validate(req, max_expired_seconds=self._max_expired_seconds)

    async def push(self, app_pk: int, req: PushRequest, *, schedule_id: str | None = None) -> int:
        """Validate, store durably, dispatch; returns the task id. Nothing is stored on error.

        Concurrent pushes are committed together (group commit): the intake writer takes every
        push waiting, writes them in one transaction, and only then answers each of them.
        """
        v = validate(req, max_expired_seconds=self._max_expired_seconds)
        if self._intake_task is None:
            raise RuntimeError("Pushes.start() was not called")
        answer: asyncio.Future[tuple[int, list[AnyJob]]] = (
            asyncio.get_running_loop().create_future()
        )
        await self._intake.put(_Intake(app_pk, v, answer, schedule_id))
        task_id, jobs = await answer
        vendor_jobs = sum(isinstance(job, VendorJob) for job in jobs)
        logger.info(
            "push accepted: task=%d targets=%d to_vendors=%d to_gateway=%d",
            task_id,
            len(v.targets),
            vendor_jobs,
            len(jobs) - vendor_jobs,
        )
        await self._dispatcher.submit(jobs)
        return task_id

    async def _intake_loop(self) -> None:
        stopping = False
        while not stopping:
            item = await self._intake.get()
            batch: list[_Intake] = []
            while item is not None:
                batch.append(item)
                if len(batch) >= INTAKE_BATCH or self._intake.empty():
                    break
                item = self._intake.get_nowait()
            stopping = item is None
            if not batch:
                continue
            results = await self._write_isolated(batch)
            for entry, result in zip(batch, results, strict=True):
                if entry.answer.done():  # the caller went away; the push is stored anyway
                    continue
                if isinstance(result, BaseException):
                    entry.answer.set_exception(result)
                else:
                    entry.answer.set_result(result)

    async def _write_isolated(
        self, batch: list[_Intake]
    ) -> list[tuple[int, list[AnyJob]] | BaseException]:
        """Write a batch in one transaction; if the store refuses it, write each push alone, so
        that one push the store cannot take fails only its own caller (regression: a NUL in one
        TaskName on PostgreSQL failed 92 valid pushes of other clients)."""
        try:
            return list(await self._write(batch))
        except Exception as exc:  # the whole transaction failed: nothing of it was stored
            if len(batch) == 1:
                logger.exception("push intake write failed")
                return [exc]
            logger.warning(
                "push intake write failed for %d pushes (%s); writing them one by one",
                len(batch),
                type(exc).__name__,
            )
        out: list[tuple[int, list[AnyJob]] | BaseException] = []
        for entry in batch:
            out.extend(await self._write_isolated([entry]))
        return out

    async def _write(self, batch: list[_Intake]) -> list[tuple[int, list[AnyJob]] | BusinessError]:
        """Store a batch of pushes in one transaction, with a handful of statements whatever
        its size; a refused push (msgKey already used) is skipped, not stored."""
        now = datetime.now(UTC)
        out: list[tuple[int, list[AnyJob]] | BusinessError | None] = []
        async with self._store.write() as session:
            stored = await _used_keys(session, batch)
            taken = set(stored)
            accepted: list[_Intake] = []
            for entry in batch:
                keys = {(entry.app_pk, key, target) for target, key in entry.push.targets.items()}
                if keys & taken:
                    replay = None
                    if keys <= stored.keys():
                        replay = await _replay_of(
                            session, entry.push, {k[2]: stored[k] for k in keys}
                        )
                    if replay is not None:
                        out.append((replay, []))
                        continue
                    out.append(
                        BusinessError(
                            3028,
                            "INVALID_PARAM",
                            "a msgKey in TargetMsgkey was already used for that target in this "
                            "app by a different push; msgKeys must be unique (an exact repeat of "
                            "a push answers its first task id)",
                        )
                    )
                    continue
                taken |= keys
                accepted.append(entry)
                out.append(None)
            written = iter(await self._write_accepted(session, accepted, now) if accepted else [])
        return [next(written) if result is None else result for result in out]

    async def _write_accepted(
        self, session: Any, batch: list[_Intake], now: datetime
    ) -> list[tuple[int, list[AnyJob]]]:
        expiries = [now + timedelta(seconds=e.push.expired_seconds) for e in batch]
        # RETURNING rows come back in no promised order, and asking SQLAlchemy to sort them
        # makes it insert row by row; so each insert returns a unique key to match rows by.
        request_ids = [uuid.uuid4().hex for _ in batch]
        rules = await review_rules(session, {e.app_pk for e in batch})
        held = [needs_review(rules[e.app_pk], e.push.kind) for e in batch]
        task_rows = (
            await session.execute(
                insert(Task).returning(Task.request_id, Task.id),
                [
                    {
                        "request_id": rid,
                        "app_pk": e.app_pk,
                        "kind": e.push.kind,
                        "task_name": e.push.task_name,
                        "delivery_type": e.push.delivery_type,
                        "created_at": now,
                        "expires_at": expires,
                        "template_name": e.push.template_name,
                        "review": REVIEW_PENDING if hold else None,
                        "schedule_id": e.schedule_id,
                    }
                    for rid, e, expires, hold in zip(
                        request_ids, batch, expiries, held, strict=True
                    )
                ],
            )
        ).all()
        by_request = dict(task_rows)
        task_ids = [by_request[rid] for rid in request_ids]
        # One message row per (push, target).
        plan = [(i, target) for i, e in enumerate(batch) for target in e.push.targets]
        message_rows = (
            await session.execute(
                insert(Message).returning(
                    Message.app_pk, Message.msg_key, Message.target, Message.id
                ),
                [
                    {
                        "task_pk": task_ids[i],
                        "app_pk": batch[i].app_pk,
                        "msg_key": batch[i].push.targets[target],
                        "target": target,
                        "delivery_type": batch[i].push.delivery_type,
                        "payload": batch[i].push.payloads[target],
                        "created_at": now,
                        "expires_at": expiries[i],
                    }
                    for i, target in plan
                ],
            )
        ).all()
        message_ids = {(a, k, t): m_id for a, k, t, m_id in message_rows}
        resolved = await _resolve(session, batch)
        routing = {a: await self._vendors.routing(a) for a in {e.app_pk for e in batch}}
        # Whether a device is online matters only to a device with a vendor token whose app
        # puts the own channel first.
        online_set = await self._dispatcher.online_among(
            {
                device.device_pk
                for (app_pk, _, _), (devices, _) in resolved.items()
                if routing[app_pk][0] == "own_first"
                for device in devices
                if device.third_token
            }
        )
        rows: list[dict[str, Any]] = []
        owner_of: dict[int, tuple[int, str]] = {}  # message pk -> (push index, target)
        device_of: dict[tuple[int, int], DeviceRoute] = {}  # (message pk, device pk) -> device
        for i, target in plan:
            push = batch[i].push
            message_pk = message_ids[(batch[i].app_pk, push.targets[target], target)]
            owner_of[message_pk] = (i, target)
            devices, detail = resolved[(batch[i].app_pk, push.delivery_type, target)]
            policy, configured = routing[batch[i].app_pk]
            routed = []
            for device in devices:
                device_of[(message_pk, device.device_pk)] = device
                online = device.device_pk in online_set
                routed.append(
                    (
                        device.device_pk,
                        choose_route(device, policy=policy, configured=configured, online=online),
                    )
                )
            rows.extend(
                _delivery_rows(
                    message_pk, routed, detail, push.delivery_type, expiries[i], now, held[i]
                )
            )
        delivered = (
            await session.execute(
                insert(Delivery).returning(
                    Delivery.id, Delivery.message_pk, Delivery.device_pk, Delivery.route
                ),
                rows,
            )
        ).all()
        bodies = {
            (i, target): message_body(
                batch[i].push.payloads[target],
                msg_key=batch[i].push.targets[target],
                task_id=task_ids[i],
                expires_ms=int(expiries[i].timestamp() * 1000),
            )
            for i, target in plan
        }
        results: list[tuple[int, list[AnyJob]]] = [(task_id, []) for task_id in task_ids]
        for d_id, message_pk, d_pk, route in sorted(delivered):
            i, target = owner_of[message_pk]
            if d_pk is None or held[i]:
                continue
            if route == ROUTE_OWN:
                job: AnyJob = Job(d_id, d_pk, message_frame(d_id, bodies[(i, target)]))
            else:
                push = batch[i].push
                token = device_of[(message_pk, d_pk)].third_token or ""
                job = VendorJob(
                    batch[i].app_pk,
                    route,
                    d_pk,
                    outbound(
                        d_id,
                        token,
                        push.payloads[target],
                        msg_key=push.targets[target],
                        task_id=task_ids[i],
                        expires_at=expiries[i],
                    ),
                )
            results[i][1].append(job)
        return results

    async def revoke_message(self, app_pk: int, msg_key: str, target: str) -> int:
        """Revoke one message; returns how many pending deliveries it stopped."""
        if not msg_key.strip():
            raise BusinessError(3028, "INVALID_PARAM", "MessageId is required")
        if not target.strip():
            raise BusinessError(3021, "TOKEN_OR_USERID_NULL", "TargetId is required")
        now = datetime.now(UTC)
        async with self._store.write() as session:
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
        await self._dispatcher.revoke([(d, i) for i, d in sent if d is not None])
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

    async def message_status(
        self, app_pk: int, msg_key: str, target: str
    ) -> tuple[Message, list[StatusRow]] | None:
        """One message of the app (its msgKey and target) and a row per delivery of it, or
        None if the app has no such message. The rows are those ``task_status`` gives."""
        async with self._store.session() as session:
            message = await session.scalar(
                select(Message).where(
                    Message.app_pk == app_pk, Message.msg_key == msg_key, Message.target == target
                )
            )
        if message is None:
            return None
        rows = await self.task_status(message.task_pk, app_pk=app_pk) or []
        return message, [r for r in rows if r.msg_key == msg_key and r.target == target]

    async def pending(self, device_pk: int) -> list[Job]:
        """What the device should get on connect: valid, unrevoked, unacked; oldest first."""
        now = datetime.now(UTC)
        async with self._store.session() as session:
            return await own_jobs(
                session, Delivery.device_pk == device_pk, Delivery.expires_at > now
            )

    async def vendor_pending(self) -> list[VendorJob]:
        """Every non-final vendor delivery still valid: what a restart sends again."""
        now = datetime.now(UTC)
        async with self._store.session() as session:
            return await vendor_jobs(session, Delivery.expires_at > now)

    def _route(
        self, device: DeviceRoute, *, policy: str, configured: frozenset[str], online: set[int]
    ) -> str:
        is_online = device.device_pk in online
        return choose_route(device, policy=policy, configured=configured, online=is_online)

    async def dispatch_task(self, task_pk: int, *, vendors: bool = True) -> int:
        """Send what a stored task has pending: to its devices connected here, and through the
        vendors. Devices not connected get theirs when they connect. Returns the jobs made.

        Used where a task's deliveries were written without jobs: a broadcast (expanded in
        bulk) and an approved review. Reads only the deliveries of connected devices, so a
        broadcast to a million devices with fifty thousand online reads fifty thousand rows.
        """
        now = datetime.now(UTC)
        online = sorted(await self._dispatcher.online_devices())
        jobs: list[AnyJob] = []
        async with self._store.session() as session:
            # By message pk, not by a join on the task: (message, device) is one index seek.
            messages = list(
                (await session.scalars(select(Message.id).where(Message.task_pk == task_pk))).all()
            )
            valid = (Delivery.message_pk.in_(messages), Delivery.expires_at > now)
            for at in range(0, len(online), ONLINE_CHUNK):
                chunk = online[at : at + ONLINE_CHUNK]
                jobs.extend(await own_jobs(session, *valid, Delivery.device_pk.in_(chunk)))
            if vendors:  # a broadcast knows whether any of its rows go to a vendor
                jobs.extend(await vendor_jobs(session, *valid))
        await self._dispatcher.submit(jobs)
        return len(jobs)

    async def revoke_task(self, app_pk: int, task_id: int) -> int:
        """Revoke every message of a task (RevokePushTask); returns the deliveries it stopped."""
        now = datetime.now(UTC)
        async with self._store.write() as session:
            task = await session.get(Task, task_id)
            if task is None or task.app_pk != app_pk:
                raise BusinessError(3028, "INVALID_PARAM", f"this app has no task {task_id}")
            if task.created_at < now - REVOKE_WINDOW:
                raise BusinessError(
                    3028, "INVALID_PARAM", "only tasks of the last 7 days can be revoked"
                )
            messages = select(Message.id).where(Message.task_pk == task_id).scalar_subquery()
            await session.execute(
                update(Message)
                .where(Message.task_pk == task_id, Message.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            result = await session.execute(
                update(Delivery)
                .where(Delivery.message_pk.in_(messages), Delivery.final.is_(False))
                .values(final=True, detail="revoked", updated_at=now)
            )
            online = sorted(await self._dispatcher.online_devices())
            sent: list[tuple[int, int]] = []
            for at in range(0, len(online), ONLINE_CHUNK):
                rows = await session.execute(
                    select(Delivery.device_pk, Delivery.id).where(
                        Delivery.message_pk.in_(messages),
                        Delivery.device_pk.in_(online[at : at + ONLINE_CHUNK]),
                    )
                )
                sent.extend((d, i) for d, i in rows.all() if d is not None)
        await self._dispatcher.revoke(sent)
        stopped = int(getattr(result, "rowcount", 0) or 0)
        logger.info("task revoked: task=%d deliveries_stopped=%d", task_id, stopped)
        return stopped

    async def broadcast(
        self, app_pk: int, req: BroadcastRequest, *, schedule_id: str | None = None
    ) -> int:
        """Store a broadcast and its deliveries in one transaction, then dispatch; the task id.

        Targets are expanded in bulk by the store (openmps.broadcast): one INSERT ... SELECT
        for devices without a vendor token, batched inserts for the rest, never a row at a
        time. An exact repeat (same Msgkey, message and audience) answers the first task id.
        """
        v = validate_broadcast(req, max_expired_seconds=self._max_expired_seconds)
        started = time.monotonic()
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=v.expired_seconds)
        policy, configured = await self._vendors.routing(app_pk)
        # The own channel comes first for an online device only under own_first.
        online: set[int] = set()
        if policy == "own_first" and configured:
            online = set(await self._dispatcher.online_devices())
        async with self._store.write() as session:
            first = await replay(session, app_pk, v.msg_key, v.payload, v.audience)
            if first is not None:
                return first
            held = needs_review((await review_rules(session, [app_pk]))[app_pk], "broadcast")
            task_pk = await session.scalar(
                insert(Task).returning(Task.id),
                {
                    "request_id": uuid.uuid4().hex,
                    "app_pk": app_pk,
                    "kind": "broadcast",
                    "task_name": v.task_name,
                    "delivery_type": v.delivery_type,
                    "created_at": now,
                    "expires_at": expires,
                    "template_name": v.template_name,
                    "review": REVIEW_PENDING if held else None,
                    "schedule_id": schedule_id,
                    "audience": v.audience,
                },
            )
            assert task_pk is not None
            message_pk = await session.scalar(
                insert(Message).returning(Message.id),
                {
                    "task_pk": task_pk,
                    "app_pk": app_pk,
                    "msg_key": v.msg_key,
                    "target": BROADCAST_TARGET,
                    "delivery_type": v.delivery_type,
                    "payload": v.payload,
                    "created_at": now,
                    "expires_at": expires,
                },
            )
            assert message_pk is not None
            targets, to_vendors = await expand(
                session,
                app_pk,
                v.audience,
                message_pk=message_pk,
                status=WAITING_FOR_VERIFY if held else DEVICE_NOT_ONLINE,
                expires=expires,
                now=now,
                route=partial(self._route, policy=policy, configured=configured, online=online),
            )
        if targets >= ANALYZE_AFTER_ROWS:
            # The dispatch below reads this task's rows of the connected devices: with the
            # statistics of the table before the expansion, PostgreSQL took minutes for it.
            await self._store.analyze(Delivery.__tablename__)
        expanded_s = time.monotonic() - started
        sent = 0 if held else await self.dispatch_task(task_pk, vendors=to_vendors > 0)
        logger.info(
            "broadcast accepted: task=%d devices=%d held=%s sent_now=%d expand_s=%.2f",
            task_pk,
            targets,
            held,
            sent,
            expanded_s,
        )
        return int(task_pk)

    async def expire(self) -> dict[tuple[str, str, int], int]:
        """Make every delivery whose message ran out of validity final; returns how many, by
        (route, status channel, code) as they stay stored.

        In transactions of ``EXPIRY_BATCH`` rows, each read with its rows locked (rows another
        transaction holds are left to the next sweep), so the counts are exact and a million
        expired deliveries do not make one huge transaction.
        """
        now = datetime.now(UTC)
        counts: dict[tuple[str, str, int], int] = {}
        while True:
            async with self._store.write() as session:
                rows = (
                    await session.execute(
                        select(Delivery.id, Delivery.route, Delivery.status_channel, Delivery.code)
                        .where(Delivery.final.is_(False), Delivery.expires_at <= now)
                        .limit(EXPIRY_BATCH)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                if rows:
                    await session.execute(
                        update(Delivery)
                        .where(Delivery.id.in_([row[0] for row in rows]))
                        .values(final=True, detail="expired", updated_at=now)
                    )
            for _, route, status_channel, code in rows:
                key = (route, status_channel, code)
                counts[key] = counts.get(key, 0) + 1
            if len(rows) < EXPIRY_BATCH:
                break
        if counts:
            logger.info("deliveries expired: %d", sum(counts.values()))
        return counts


Stored = dict[tuple[int, str, str], tuple[int, int, dict[str, Any]]]


async def _used_keys(session: Any, batch: list[_Intake]) -> Stored:
    """(app, msgKey, target) of the batch already stored -> (task, delivery type, payload)."""
    apps = {e.app_pk for e in batch}
    keys = {key for e in batch for key in e.push.targets.values()}
    rows = (
        await session.execute(
            select(
                Message.app_pk,
                Message.msg_key,
                Message.target,
                Message.task_pk,
                Message.delivery_type,
                Message.payload,
            ).where(Message.app_pk.in_(apps), Message.msg_key.in_(keys))
        )
    ).all()
    return {(a, k, t): (task, dt, payload) for a, k, t, task, dt, payload in rows}


async def _replay_of(
    session: Any, push: _Validated, stored: dict[str, tuple[int, int, dict[str, Any]]]
) -> int | None:
    """The task this push repeats exactly (same targets, msgKeys and content), if any.

    A client that lost the answer to a push (a timeout, a dropped connection) can send it again
    and gets the first push's task id, instead of a refusal or a second message.
    """
    tasks = {task for task, _, _ in stored.values()}
    if len(tasks) != 1:
        return None
    for target, (_, dt, payload) in stored.items():
        if dt != push.delivery_type or payload != push.payloads[target]:
            return None
    (task_pk,) = tasks
    count = await session.scalar(
        select(func.count()).select_from(Message).where(Message.task_pk == task_pk)
    )
    return task_pk if count == len(push.targets) else None


_ROUTE_COLUMNS = (Device.id, Device.platform, Device.third_channel, Device.third_token)
Resolved = dict[tuple[int, int, str], tuple[list[DeviceRoute], str | None]]


async def _resolve(session: Any, batch: list[_Intake]) -> Resolved:
    """(app, delivery type, target) -> (device pks, why none), for every target of the batch.

    One query per (app, delivery type) in the batch: user ids through bindings, device
    tokens through the device table (a token of another app or platform reaches nothing).
    """
    groups: dict[tuple[int, int], set[str]] = {}
    for e in batch:
        groups.setdefault((e.app_pk, e.push.delivery_type), set()).update(e.push.targets)
    out: Resolved = {}
    for (app_pk, delivery_type), targets in groups.items():
        if delivery_type == 3:
            for target in targets:
                out[(app_pk, 3, target)] = ([], None)
            rows = (
                await session.execute(
                    select(Binding.user_id, *_ROUTE_COLUMNS)
                    .join(Device, Device.id == Binding.device_pk)
                    .where(Binding.app_pk == app_pk, Binding.user_id.in_(targets))
                    .order_by(Binding.id)
                )
            ).all()
            for user_id, *route in rows:
                out[(app_pk, 3, user_id)][0].append(DeviceRoute(*route))
            continue
        rows = (
            await session.execute(
                select(Device.delivery_token, *_ROUTE_COLUMNS).where(
                    Device.app_pk == app_pk, Device.delivery_token.in_(targets)
                )
            )
        ).all()
        found = {token: DeviceRoute(*route) for token, *route in rows}
        wanted = SUPPORTED_DELIVERY_TYPES[delivery_type]
        for target in targets:
            key = (app_pk, delivery_type, target)
            if target not in found:
                out[key] = ([], "unknown_device")
            elif found[target].platform != wanted:
                out[key] = ([], f"platform_mismatch: device is {found[target].platform}")
            else:
                out[key] = ([found[target]], None)
    return out


def _delivery_rows(
    message_pk: int,
    devices: list[tuple[int, str]],
    detail: str | None,
    delivery_type: int,
    expires: datetime,
    now: datetime,
    held: bool,
) -> list[dict[str, Any]]:
    """Rows for one message: one per (device pk, route), or one for an unresolved target.

    A push held for review gets status -1 (WaitingForVerify) wherever it would have waited for
    its device or its user's binding; approval gives those rows the status they would have had.
    """
    waiting = WAITING_FOR_VERIFY if held else DEVICE_NOT_ONLINE
    unbound = WAITING_FOR_VERIFY if held else NO_BIND_INFO
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
                "route": route,
                "status_channel": waiting.channel.value,
                "code": waiting.code,
                "final": False,
            }
            for pk, route in devices
        ]
    if delivery_type == 3:
        # No binding yet: status 1, not final; a later PushBind before expiry sends it.
        return [
            {
                **base,
                "device_pk": None,
                "status_channel": unbound.channel.value,
                "code": unbound.code,
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
