"""Analytics: how many messages were pushed, arrived, opened and ignored, over an app's tasks.

Every number is computed in the store by one aggregate query (``COUNT`` and ``SUM(CASE ...)``
over the deliveries of the tasks in scope): a broadcast can have a million deliveries, and
none of them is read into memory. The definitions are in docs/analytics.md; in short, a
delivery to a device of a task in scope counts once in ``total`` unless it waits for review or
was held by it (status (common, -1)); ``success`` when the own channel wrote it to the device or
the device acked it, or a vendor accepted it; ``arrivals`` when the device acked it or a vendor
accepted it; ``opens`` and ``ignores`` from the device's receipts.

Both front doors use this module: the MPS actions (openmps.mps.analytics_actions) and the REST
API (openmps.rest_analytics). Parameters are checked here; a refusal is a
:class:`~openmps.errors.BusinessError` 3028 ``INVALID_PARAM`` naming the caller's field.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    false,
    func,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.orm import aliased

from openmps.errors import BusinessError
from openmps.ids import parse_id
from openmps.statuses import ACKED, WAITING_FOR_VERIFY
from openmps.store import Delivery, Device, Message, Schedule, Store, Task, Template
from openmps.store.models import UTCDateTime
from openmps.vendors import ROUTE_OWN

__all__ = [
    "CHANNELS",
    "MAX_WINDOW_DAYS",
    "PLATFORMS",
    "TYPES",
    "Analytics",
    "Counts",
    "Names",
    "Scope",
    "TaskDetail",
    "TaskEntry",
    "Window",
    "rate",
    "to_ms",
]

MAX_WINDOW_DAYS = 90  # reference 7.2: EndTime - StartTime at most 90 days
_MS_PER_DAY = 86_400_000
_MAX_MS = 253_370_764_800_000  # 9998-12-31T00:00:00Z: later days cannot be counted to their end
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 20

# MPS Platform value -> devices.platform
PLATFORMS: dict[str, str] = {"IOS": "ios", "ANDROID": "android", "HARMONYOS": "harmonyos"}
# MPS Channel value -> the delivery routes it covers. The own channel is "ANDROID" whatever the
# device's platform: MPS calls its self-built persistent connection so. No route of ours is a
# HarmonyOS push service (yet): that channel counts nothing.
CHANNELS: dict[str, tuple[str, ...]] = {
    "ANDROID": (ROUTE_OWN,),
    "IOS": ("apns",),
    "FCM": ("fcm",),
    "HMS": ("hms",),
    "MIUI": ("xiaomi",),
    "OPPO": ("oppo",),
    "VIVO": ("vivo",),
    "HARMONYOS": (),
}
# MPS Type value -> tasks.kind; and the number QueryPushAnalysisTaskList gives each kind (the
# numbering of the scheduler list's Type, reference 5.4).
TYPES: dict[str, str] = {
    "SIMPLE": "simple",
    "TEMPLATE": "template",
    "MULTIPLE": "multiple",
    "BROADCAST": "broadcast",
}
TYPE_NUMBERS: dict[str, int] = {"simple": 0, "template": 1, "multiple": 2, "broadcast": 3}
# The task list covers batch pushes only (reference 7.3); detail and counts take any task.
BATCH_KINDS = ("multiple", "broadcast")
_CYCLIC = 2  # StrategyType of a cyclic push

_HUNDRED = Decimal(100)
_CENT = Decimal("0.01")


def rate(part: int, whole: int) -> Decimal:
    """``part`` as a percentage of ``whole``, 0-100 rounded half up to 2 decimals; 0 when
    ``whole`` is 0."""
    if whole <= 0:
        return Decimal(0).quantize(_CENT)
    return (Decimal(part) * _HUNDRED / Decimal(whole)).quantize(_CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Names:
    """How the caller names each parameter, for refusals (MPS names by default)."""

    start: str = "StartTime"
    end: str = "EndTime"
    platform: str = "Platform"
    channel: str = "Channel"
    type: str = "Type"
    task_id: str = "TaskId"
    page: str = "PageNumber"
    page_size: str = "PageSize"


MPS_NAMES = Names()


def _invalid(detail: str) -> BusinessError:
    return BusinessError(3028, "INVALID_PARAM", detail)


@dataclass(frozen=True)
class Window:
    """Whole days of task creation times: ``start`` counted, ``end`` (a later day start) not."""

    start: datetime
    end: datetime

    @property
    def start_ms(self) -> int:
        return to_ms(self.start)

    @property
    def end_ms(self) -> int:
        """The last millisecond counted."""
        return to_ms(self.end) - 1


@dataclass(frozen=True)
class Scope:
    """Filters on the deliveries counted; None means "any"."""

    platform: str | None = None  # devices.platform
    routes: tuple[str, ...] | None = None  # deliveries.route
    kind: str | None = None  # tasks.kind
    task_id: int | None = None


@dataclass(frozen=True)
class Counts:
    """The core index of reference 7.2 (see the module docstring for what each counts)."""

    total: int
    success: int
    arrivals: int
    opens: int
    ignores: int

    @property
    def arrival_rate(self) -> Decimal:
        """Arrivals per message pushed successfully, in percent."""
        return rate(self.arrivals, self.success)

    @property
    def open_rate(self) -> Decimal:
        """Opens per arrival, in percent."""
        return rate(self.opens, self.arrivals)

    @property
    def ignore_rate(self) -> Decimal:
        """Ignores per arrival, in percent."""
        return rate(self.ignores, self.arrivals)


@dataclass(frozen=True)
class TaskEntry:
    """A row of the task list; ``fired`` holds the later tasks of the same cyclic push."""

    task_id: int
    task_name: str | None
    template_id: int | None
    template_name: str | None
    kind: str
    created_at: datetime
    fired: list[TaskEntry] = field(default_factory=list)

    @property
    def type_number(self) -> int:
        return TYPE_NUMBERS.get(self.kind, -1)


@dataclass(frozen=True)
class TaskDetail:
    """One task's numbers: ``start`` is its creation, ``end`` the last successful push of one
    of its messages (``start`` while there is none)."""

    task_id: int
    kind: str
    start: datetime
    end: datetime
    counts: Counts

    @property
    def duration_ms(self) -> int:
        return to_ms(self.end) - to_ms(self.start)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(at: datetime) -> int:
    """An aware datetime as whole ms since the epoch (exact: no float on the way)."""
    return (at - _EPOCH) // timedelta(milliseconds=1)


def _sum(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """How many rows meet ``condition`` (0 over no rows)."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


# What counts, per delivery (the definitions of docs/analytics.md).
_OWN = Delivery.route == ROUTE_OWN
_VENDOR_ACCEPTED = and_(
    Delivery.route != ROUTE_OWN,
    Delivery.status_channel == ACKED.channel.value,
    Delivery.code == ACKED.code,
)
_SUCCESS = or_(
    and_(_OWN, or_(Delivery.sent_at.is_not(None), Delivery.acked_at.is_not(None))),
    _VENDOR_ACCEPTED,
)
_ARRIVAL = or_(and_(_OWN, Delivery.acked_at.is_not(None)), _VENDOR_ACCEPTED)
# Held for review, rejected, or expired while held: never attempted.
_ATTEMPTED = or_(
    Delivery.status_channel != WAITING_FOR_VERIFY.channel.value,
    Delivery.code != WAITING_FOR_VERIFY.code,
)
_SUCCESS_AT = type_coerce(
    func.max(
        case(
            (and_(_OWN, _SUCCESS), func.coalesce(Delivery.sent_at, Delivery.acked_at)),
            (_VENDOR_ACCEPTED, Delivery.updated_at),
            else_=None,
        )
    ),
    UTCDateTime(),
)


class Analytics:
    """Counts over an app's tasks; see the module docstring."""

    def __init__(self, store: Store, *, time_zone: str = "UTC") -> None:
        self._store = store  # where the deliveries are
        # Whose days StartTime and EndTime are rounded to: the schedule_time_zone setting.
        self._tz = ZoneInfo(time_zone)

    # -- parameters --------------------------------------------------------------------------

    def day_start(self, ms: int, name: str) -> datetime:
        """The start of the day (in this service's time zone) holding ``ms``."""
        if not 0 <= ms <= _MAX_MS:
            raise _invalid(f"{name} must be a time in ms since 1970-01-01 UTC, got {ms}")
        local = (_EPOCH + timedelta(milliseconds=ms)).astimezone(self._tz)
        return local.replace(hour=0, minute=0, second=0, microsecond=0)

    def window(self, start_ms: int | None, end_ms: int | None, names: Names = MPS_NAMES) -> Window:
        """The whole days from ``start_ms``'s to ``end_ms``'s, both in; at most 90 days apart."""
        if start_ms is None:
            raise _invalid(f"{names.start} is required")
        if end_ms is None:
            raise _invalid(f"{names.end} is required")
        start = self.day_start(start_ms, names.start)
        last = self.day_start(end_ms, names.end)
        if end_ms < start_ms:
            raise _invalid(f"{names.end} ({end_ms}) is before {names.start} ({start_ms})")
        if end_ms - start_ms > MAX_WINDOW_DAYS * _MS_PER_DAY:
            raise _invalid(
                f"{names.end} - {names.start} must be at most {MAX_WINDOW_DAYS} days "
                f"({MAX_WINDOW_DAYS * _MS_PER_DAY} ms), got {end_ms - start_ms} ms"
            )
        # Wall-clock arithmetic: the next local midnight, even across a DST change.
        return Window(start, last + timedelta(days=1))

    @staticmethod
    def scope(
        *,
        platform: str | None = None,
        channel: str | None = None,
        type_: str | None = None,
        task_id: str | None = None,
        names: Names = MPS_NAMES,
    ) -> Scope:
        """Check the filters (values are case-insensitive); blank means "any"."""
        return Scope(
            platform=_choice(platform, PLATFORMS, names.platform),
            routes=_choice(channel, CHANNELS, names.channel),
            kind=_choice(type_, TYPES, names.type),
            task_id=task_number(task_id, names.task_id),
        )

    # -- queries -----------------------------------------------------------------------------

    async def core(self, app_pk: int, window: Window, scope: Scope) -> Counts:
        """The core index of the app's tasks created in ``window``, within ``scope``."""
        counts, _ = await self._aggregate(
            app_pk,
            scope,
            Task.created_at >= window.start,
            Task.created_at < window.end,
        )
        return counts

    async def task_detail(self, app_pk: int, task_id: int) -> TaskDetail | None:
        """One task's numbers, or None if the app has no such task."""
        async with self._store.session() as session:
            row = (
                await session.execute(
                    select(Task.kind, Task.created_at).where(
                        Task.id == task_id, Task.app_pk == app_pk
                    )
                )
            ).first()
        if row is None:
            return None
        kind, created_at = row
        counts, last = await self._aggregate(app_pk, Scope(task_id=task_id))
        end = created_at if last is None else max(created_at, last)
        return TaskDetail(task_id, kind, created_at, end, counts)

    async def _aggregate(
        self, app_pk: int, scope: Scope, *where: ColumnElement[bool]
    ) -> tuple[Counts, datetime | None]:
        """One aggregate query: the counts, and when the last successful push happened."""
        stmt = (
            select(
                func.count(),
                _sum(_SUCCESS),
                _sum(_ARRIVAL),
                _sum(Delivery.opened_at.is_not(None)),
                _sum(Delivery.ignored_at.is_not(None)),
                _SUCCESS_AT,
            )
            .select_from(Delivery)
            .join(Message, Message.id == Delivery.message_pk)
            .join(Task, Task.id == Message.task_pk)
            .where(Task.app_pk == app_pk, Delivery.device_pk.is_not(None), _ATTEMPTED, *where)
        )
        if scope.platform is not None:
            stmt = stmt.join(Device, Device.id == Delivery.device_pk).where(
                Device.platform == scope.platform
            )
        if scope.routes is not None:
            stmt = stmt.where(Delivery.route.in_(scope.routes) if scope.routes else false())
        if scope.kind is not None:
            stmt = stmt.where(Task.kind == scope.kind)
        if scope.task_id is not None:
            stmt = stmt.where(Task.id == scope.task_id)
        async with self._store.session() as session:
            row = (await session.execute(stmt)).one()
        total, success, arrivals, opens, ignores, last = row
        counts = Counts(int(total), int(success), int(arrivals), int(opens), int(ignores))
        return counts, last

    async def task_list(
        self,
        app_pk: int,
        *,
        since: datetime,
        task_id: int | None = None,
        task_name: str | None = None,
        page: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> list[TaskEntry]:
        """The app's batch tasks (multiple, broadcast) created from ``since`` on, newest first.

        The tasks a cyclic push fired are one entry: its first task in the list, the later ones
        in ``fired``, oldest first. ``task_id`` and ``task_name`` (a case-insensitive part of
        the name) filter the entries, not what they hold in ``fired``.
        """
        outer = aliased(Schedule)
        inner_task, inner = aliased(Task), aliased(Schedule)
        in_list = (Task.app_pk == app_pk, Task.kind.in_(BATCH_KINDS), Task.created_at >= since)
        first_of_cycle = (
            select(func.min(inner_task.id))
            .join(inner, inner.unique_id == inner_task.schedule_id)
            .where(
                inner_task.app_pk == app_pk,
                inner_task.kind.in_(BATCH_KINDS),
                inner_task.created_at >= since,
                inner.strategy_type == _CYCLIC,
                _cycle_of(inner) == _cycle_of(outer),
            )
            .scalar_subquery()
        )
        cycle = case((outer.strategy_type == _CYCLIC, _cycle_of(outer)), else_=None)
        stmt = (
            select(*_ENTRY_COLUMNS, cycle)
            .outerjoin(outer, outer.unique_id == Task.schedule_id)
            .outerjoin(
                Template, and_(Template.app_pk == Task.app_pk, Template.name == Task.template_name)
            )
            .where(
                *in_list,
                or_(
                    outer.id.is_(None),
                    outer.strategy_type != _CYCLIC,
                    Task.id == first_of_cycle,
                ),
            )
            .order_by(Task.created_at.desc(), Task.id.desc())
            .limit(page_size)
            .offset((page - 1) * page_size)
        )
        if task_id is not None:
            stmt = stmt.where(Task.id == task_id)
        if task_name:
            # As given, or ignoring case (SQLite's lower() folds ASCII letters only).
            stmt = stmt.where(
                or_(
                    Task.task_name.contains(task_name, autoescape=True),
                    func.lower(Task.task_name).contains(task_name.lower(), autoescape=True),
                )
            )
        async with self._store.session() as session:
            rows = (await session.execute(stmt)).all()
            entries = [(_entry(row[:-1]), row[-1]) for row in rows]
            cycles = {key for _, key in entries if key is not None}
            fired: dict[str, list[TaskEntry]] = {key: [] for key in cycles}
            if cycles:
                later = (
                    select(*_ENTRY_COLUMNS, _cycle_of(outer))
                    .join(outer, outer.unique_id == Task.schedule_id)
                    .outerjoin(
                        Template,
                        and_(Template.app_pk == Task.app_pk, Template.name == Task.template_name),
                    )
                    .where(
                        *in_list,
                        outer.strategy_type == _CYCLIC,
                        _cycle_of(outer).in_(cycles),
                        Task.id.not_in([entry.task_id for entry, _ in entries]),
                    )
                    .order_by(Task.id)
                )
                for row in (await session.execute(later)).all():
                    fired[row[-1]].append(_entry(row[:-1]))
        return [
            replace(entry, fired=fired[key]) if key is not None else entry for entry, key in entries
        ]


_ENTRY_COLUMNS = (
    Task.id,
    Task.task_name,
    Template.id,
    Task.template_name,
    Task.kind,
    Task.created_at,
)


def _entry(row: Any) -> TaskEntry:
    task_id, task_name, template_id, template_name, kind, created_at = row
    return TaskEntry(task_id, task_name, template_id, template_name, kind, created_at)


def _cycle_of(schedule: Any) -> ColumnElement[str]:
    """The cyclic push a schedule row belongs to: its main job (the row itself for a main job)."""
    return func.coalesce(func.nullif(schedule.parent_id, ""), schedule.unique_id)


def _choice(value: str | None, allowed: dict[str, Any], name: str) -> Any:
    if value is None or not value.strip():
        return None
    key = value.strip().upper()
    if key not in allowed:
        raise _invalid(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return allowed[key]


def task_number(value: str | None, name: str = "TaskId") -> int | None:
    """A task id given as text: None when blank, else digits (3028 otherwise)."""
    if value is None or not value.strip():
        return None
    number = parse_id(value.strip())
    if number is None:
        raise _invalid(f"{name} must be a task id (digits), got {value[:40]!r}")
    return number


def page_of(page: int | None, page_size: int | None, names: Names = MPS_NAMES) -> tuple[int, int]:
    """Check paging: page from 1 (default 1), size 1 to 500 (default 20)."""
    number = 1 if page is None else page
    size = DEFAULT_PAGE_SIZE if page_size is None else page_size
    if number < 1:
        raise _invalid(f"{names.page} must be at least 1, got {number}")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise _invalid(f"{names.page_size} must be from 1 to {MAX_PAGE_SIZE}, got {size}")
    return number, size
