"""The jobs of scheduled and cyclic pushes as the ``schedules`` table keeps them: their states,
the push request a job holds until it fires, and reading and cancelling jobs (``JobBook``; the
``Scheduler``, which also accepts and fires jobs, is one).

Rows (docs/scheduling.md):

- a StrategyType 1 push is one job whose ``parent_id`` is its own ``unique_id``; it holds the
  push to make in ``request``;
- a cyclic push is a main row (``parent_id == unique_id``, never fired itself: it holds the
  push and the state of the whole cycle) and one sub-job per occurrence, whose ``parent_id``
  is the main row's ``unique_id`` and whose ``request`` names only its local date.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import defer

from openmps.errors import BusinessError
from openmps.push import BroadcastRequest, PushRequest, TargetContent
from openmps.schedule_rules import CYCLIC, invalid, iso_utc, utc_instant
from openmps.store import Schedule, Store

logger = logging.getLogger(__name__)

PENDING, EXECUTED, CANCELLED = "pending", "executed", "cancelled"
MISSED, FAILED = "missed", "failed"
# ExecutedStatus of the MPS listing: MPS documents 0 (not executed) and 1 (executed); the other
# three are ours (docs/scheduling.md).
EXECUTED_STATUS = {PENDING: "0", EXECUTED: "1", CANCELLED: "2", MISSED: "3", FAILED: "4"}
# The MPS ``Type`` of a push kind (reference 5.4).
KIND_TYPES = {"simple": 0, "template": 1, "multiple": 2, "broadcast": 3}

AnyRequest = PushRequest | BroadcastRequest

MAX_OFFSET = 2**62  # a listing offset beyond this is past any end

# Rows that fire: every row except the main row of a cyclic push.
FIRES = or_(Schedule.strategy_type != CYCLIC, Schedule.unique_id != Schedule.parent_id)


class UnknownJob(BusinessError):
    """No job with that id in the caller's app (3028)."""

    def __init__(self, unique_id: str) -> None:
        super().__init__(
            3028, "INVALID_PARAM", f"this app has no scheduled push with UniqueId {unique_id!r}"
        )


class JobNotPending(BusinessError):
    """The job already ran, was missed or was cancelled (3028)."""

    def __init__(self, unique_id: str, state: str) -> None:
        why = {
            EXECUTED: "already executed",
            CANCELLED: "already cancelled",
            MISSED: "already missed (it was due while the server could not send it)",
            FAILED: "already executed (the push was refused when it fired)",
        }.get(state, state)
        super().__init__(
            3028,
            "INVALID_PARAM",
            f"the scheduled push {unique_id!r} cannot be cancelled: it is {why}",
        )
        self.state = state


@dataclass(frozen=True)
class ScheduledJob:
    """One row of ``schedules`` as the listings show it."""

    unique_id: str
    parent_id: str
    kind: str
    delivery_type: int
    strategy_type: int
    fire_at: datetime
    state: str
    title: str | None
    content: str | None
    time_zone: str | None
    task_id: int | None
    detail: str | None
    created_at: datetime
    executed_at: datetime | None

    @property
    def is_cycle(self) -> bool:
        """The main row of a cyclic push (it never fires itself)."""
        return self.strategy_type == CYCLIC and self.unique_id == self.parent_id

    @classmethod
    def of(cls, row: Schedule) -> ScheduledJob:
        return cls(
            row.unique_id,
            row.parent_id,
            row.kind,
            row.delivery_type,
            row.strategy_type,
            row.fire_at,
            row.state,
            row.title,
            row.content,
            row.time_zone,
            row.task_pk,
            row.detail,
            row.created_at,
            row.executed_at,
        )


def request_json(req: AnyRequest) -> dict[str, Any]:
    """A push request as the JSON ``schedules.request`` keeps until the job fires."""
    kind = "broadcast" if isinstance(req, BroadcastRequest) else "push"
    return {"class": kind, "fields": dataclasses.asdict(req)}


def request_from(data: dict[str, Any]) -> AnyRequest:
    """The push request back from :func:`request_json` (fields unknown today are dropped)."""
    cls: type[AnyRequest] = BroadcastRequest if data["class"] == "broadcast" else PushRequest
    names = {f.name for f in dataclasses.fields(cls)}
    values = {key: value for key, value in data["fields"].items() if key in names}
    if values.get("per_target") is not None:
        values["per_target"] = {
            target: TargetContent(**own) for target, own in values["per_target"].items()
        }
    return cls(**values)


def for_occurrence(
    req: AnyRequest, suffix: str, *, expired_seconds: int | None = None
) -> AnyRequest:
    """The push one occurrence makes: msgKeys with ``suffix`` appended, immediate, and with
    ``expired_seconds`` when given (what is left of the validity of a late job)."""
    changes: dict[str, Any] = {"strategy_type": 0, "strategy_content": None}
    if expired_seconds is not None:
        changes["expired_seconds"] = expired_seconds
    if suffix and isinstance(req, BroadcastRequest):
        changes["msg_key"] = (req.msg_key or "") + suffix
    elif suffix and isinstance(req, PushRequest):
        changes["targets"] = {t: f"{k}{suffix}" for t, k in (req.targets or {}).items()}
    return dataclasses.replace(req, **changes)


def msg_keys(req: AnyRequest) -> list[str]:
    if isinstance(req, BroadcastRequest):
        return [req.msg_key or ""]
    return [str(key) for key in (req.targets or {}).values()]


def rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class JobBook:
    """Reads and cancels the jobs of a store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def query(
        self,
        app_pk: int,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        push_type: int | None = None,
        unique_id: str | None = None,
        page: int = 1,
        page_size: int = 500,
    ) -> tuple[int, list[ScheduledJob]]:
        """Jobs that fire (not the main rows of cycles), by fire time; (total, one page).

        ``unique_id`` of a cyclic push's main row lists its occurrences; any other job id
        lists that job. ``start``/``end`` bound the fire time, both included; an ``end``
        before ``start`` is refused (3028). A page past the end is empty.
        """
        if start is not None and end is not None and end < start:
            raise invalid("EndTime is before StartTime")
        # The store compares UTC times: one of an offset that leaves the years 1 to 9999 in
        # UTC is refused, not an OverflowError (500).
        start = None if start is None else utc_instant(start, "StartTime")
        end = None if end is None else utc_instant(end, "EndTime")
        conditions = [Schedule.app_pk == app_pk, FIRES]
        if start is not None:
            conditions.append(Schedule.fire_at >= start)
        if end is not None:
            conditions.append(Schedule.fire_at <= end)
        if push_type is not None:
            kinds = [kind for kind, number in KIND_TYPES.items() if number == push_type]
            conditions.append(Schedule.kind.in_(kinds))
        if unique_id is not None:
            conditions.append(or_(Schedule.unique_id == unique_id, Schedule.parent_id == unique_id))
        offset = (page - 1) * page_size
        async with self._store.session() as session:
            total = await session.scalar(
                select(func.count()).select_from(Schedule).where(*conditions)
            )
            rows: Sequence[Schedule] = []
            if offset < MAX_OFFSET:  # beyond, past any end (and past a BIGINT OFFSET)
                rows = (
                    await session.scalars(
                        select(Schedule)
                        .options(defer(Schedule.request))
                        .where(*conditions)
                        .order_by(Schedule.fire_at, Schedule.id)
                        .offset(offset)
                        .limit(page_size)
                    )
                ).all()
        return int(total or 0), [ScheduledJob.of(row) for row in rows]

    async def get(
        self, app_pk: int, unique_id: str
    ) -> tuple[ScheduledJob, list[ScheduledJob]] | None:
        """A job and, for a cyclic push's main row, its occurrences; None if there is none."""
        async with self._store.session() as session:
            rows = (
                await session.scalars(
                    select(Schedule)
                    .options(defer(Schedule.request))
                    .where(
                        Schedule.app_pk == app_pk,
                        or_(Schedule.unique_id == unique_id, Schedule.parent_id == unique_id),
                    )
                    .order_by(Schedule.fire_at, Schedule.id)
                )
            ).all()
        jobs = [ScheduledJob.of(row) for row in rows]
        found = [job for job in jobs if job.unique_id == unique_id]
        if not found:
            return None
        return found[0], [job for job in jobs if job.unique_id != unique_id]

    async def cancel(self, app_pk: int, unique_ids: list[str]) -> int:
        """Cancel jobs, all or none; how many occurrences will now not fire.

        Cancelling a cyclic push's main row cancels every occurrence still pending (those
        already sent stay as they are); the main row then becomes "cancelled" if every
        occurrence was cancelled, else "executed". An id of no job of this app, or of a job
        that is no longer pending, refuses the whole request (UnknownJob, JobNotPending).
        """
        wanted = list(dict.fromkeys(uid.strip() for uid in unique_ids if uid.strip()))
        if not wanted:
            raise invalid("UniqueIds is required: the job ids to cancel, separated by commas")
        now = datetime.now(UTC)
        detail = f"cancelled at {iso_utc(now)}"
        cancelled = 0
        async with self._store.write() as session:
            rows = (
                await session.scalars(
                    select(Schedule)
                    .options(defer(Schedule.request))
                    .where(Schedule.app_pk == app_pk, Schedule.unique_id.in_(wanted))
                )
            ).all()
            by_id = {row.unique_id: ScheduledJob.of(row) for row in rows}
            for unique_id in wanted:
                job = by_id.get(unique_id)
                if job is None:
                    raise UnknownJob(unique_id)
                if job.state != PENDING:
                    raise JobNotPending(unique_id, job.state)
            for unique_id in wanted:
                job = by_id[unique_id]
                if job.is_cycle:
                    result = await session.execute(
                        update(Schedule)
                        .where(
                            Schedule.parent_id == unique_id,
                            Schedule.unique_id != unique_id,
                            Schedule.state == PENDING,
                        )
                        .values(state=CANCELLED, detail=detail)
                    )
                    cancelled += rowcount(result)
                values: dict[str, Any] = {"detail": detail}
                if not job.is_cycle:  # a cycle's main row: its state is close_cycles' (below)
                    values["state"] = CANCELLED
                result = await session.execute(
                    update(Schedule)
                    .where(Schedule.unique_id == unique_id, Schedule.state == PENDING)
                    .values(**values)
                )
                if rowcount(result) != 1:  # fired (or cancelled) since we read it
                    raise JobNotPending(unique_id, EXECUTED)
                if not job.is_cycle:
                    cancelled += 1
            await close_cycles(session, {by_id[uid].parent_id for uid in wanted})
        logger.info("scheduled pushes cancelled: ids=%s jobs=%d", ",".join(wanted), cancelled)
        return cancelled


async def close_cycles(session: Any, parents: set[str]) -> None:
    """A cyclic main row with no occurrence left pending becomes "executed", or "cancelled"
    when every occurrence was cancelled."""
    for parent in parents:
        states = set(
            (
                await session.scalars(
                    select(Schedule.state)
                    .where(Schedule.parent_id == parent, Schedule.unique_id != parent)
                    .distinct()
                )
            ).all()
        )
        if not states or PENDING in states:
            continue  # not a cycle (a StrategyType 1 job has no sub-jobs), or not over yet
        await session.execute(
            update(Schedule)
            .where(
                Schedule.unique_id == parent,
                Schedule.state == PENDING,
                Schedule.strategy_type == CYCLIC,
            )
            .values(state=CANCELLED if states == {CANCELLED} else EXECUTED)
        )
