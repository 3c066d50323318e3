"""Scheduled (StrategyType 1) and cyclic (StrategyType 2) pushes: checked and stored as jobs
before the API answers, and fired by a loop that claims each due job once, even with several
processes on one store. How jobs are stored, listed and cancelled: openmps.schedule_jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update

from openmps.errors import BusinessError
from openmps.push import MAX_ID_CHARS, BroadcastRequest, Pushes, validate_broadcast
from openmps.schedule_jobs import (
    EXECUTED,
    FAILED,
    FIRES,
    MISSED,
    PENDING,
    AnyRequest,
    JobBook,
    close_cycles,
    for_occurrence,
    msg_keys,
    request_from,
    request_json,
    rowcount,
)
from openmps.schedule_rules import (
    CYCLIC,
    SUFFIX_CHARS,
    invalid,
    iso_utc,
    occurrence_suffix,
    parse_strategy,
    zone_named,
)
from openmps.store import Schedule, Store, Task

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5  # how often the loop looks for due jobs
CLAIM_BATCH = 500  # due jobs claimed per transaction
STOP_TIMEOUT_S = 10.0  # how long stop() waits for pushes being made before cancelling them


@dataclass(frozen=True)
class _Claimed:
    """A due job this process claimed and now fires."""

    row_id: int
    unique_id: str
    app_pk: int
    fire_at: datetime
    request: dict[str, Any]  # the push (the main row's, for a sub-job)
    local_date: date | None  # a cyclic occurrence's date


class Scheduler(JobBook):
    """Stores scheduled and cyclic pushes and fires them when they are due."""

    def __init__(
        self,
        store: Store,
        pushes: Pushes,
        *,
        default_zone: str,
        max_expired_seconds: int,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        zone_named(default_zone, "the setting schedule_time_zone")
        super().__init__(store)
        self._pushes = pushes
        self._default_zone = default_zone
        self._max_expired_seconds = max_expired_seconds
        self._poll_interval_s = poll_interval_s
        self._stopping = asyncio.Event()  # set by stop(): the loop ends after its round
        self._task: asyncio.Task[None] | None = None  # the firing loop

    # -- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take back jobs a killed process had claimed, then start the firing loop, whose
        first round fires (or marks missed) what fell due while the server was down."""
        await self.recover()
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        """End the loop after the round it is in: pushes being made are finished first."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_S)
        except TimeoutError:
            logger.warning("scheduler still firing after %.0fs; cancelling it", STOP_TIMEOUT_S)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                while await self.run_due() >= CLAIM_BATCH and not self._stopping.is_set():
                    pass
            except Exception:
                logger.exception("scheduler round failed; next try in %.1fs", self._poll_interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._poll_interval_s)

    # -- accepting ----------------------------------------------------------------------------

    async def schedule(self, app_pk: int, request: AnyRequest) -> str:
        """Check a StrategyType 1 or 2 push and store its jobs durably; the job id (the main
        row's ``unique_id``) that ``PushResult.Data`` carries. A refusal stores nothing."""
        now = datetime.now(UTC)
        plan = parse_strategy(
            request.strategy_type,
            request.strategy_content,
            now=now,
            default_zone=self._default_zone,
        )
        push = for_occurrence(request, "")
        self._validate(push)
        if plan.strategy_type == CYCLIC:
            room = MAX_ID_CHARS - SUFFIX_CHARS
            if any(len(key) > room for key in msg_keys(push)):
                raise invalid(
                    f"a msgKey of a cyclic push may have at most {room} characters: each "
                    "occurrence sends it with #YYYYMMDD (its date) appended"
                )

        main_id = uuid.uuid4().hex
        kind = "broadcast" if isinstance(push, BroadcastRequest) else push.kind
        common = {
            "app_pk": app_pk,
            "kind": kind,
            "delivery_type": push.delivery_type,
            "strategy_type": plan.strategy_type,
            "title": push.title,
            "content": push.content,
            "time_zone": plan.time_zone,
            "created_at": now,
        }
        rows = [
            {
                **common,
                "unique_id": main_id,
                "parent_id": main_id,
                "fire_at": plan.occurrences[0].fire_at,
                "state": PENDING,
                "request": request_json(push),
            }
        ]
        if plan.strategy_type == CYCLIC:
            rows.extend(
                {
                    **common,
                    "unique_id": uuid.uuid4().hex,
                    "parent_id": main_id,
                    "fire_at": occurrence.fire_at,
                    "state": PENDING,
                    "request": {"occurrence": str(occurrence.local_date)},
                }
                for occurrence in plan.occurrences
            )
        async with self._store.write() as session:
            await session.execute(insert(Schedule), rows)
        logger.info(
            "push scheduled: job=%s strategy=%d occurrences=%d first=%s",
            main_id,
            plan.strategy_type,
            len(plan.occurrences),
            iso_utc(plan.occurrences[0].fire_at),
        )
        return main_id

    def _validate(self, push: AnyRequest) -> None:
        if isinstance(push, BroadcastRequest):
            validate_broadcast(push, max_expired_seconds=self._max_expired_seconds)
        else:
            self._pushes.validate(push)

    # -- firing -------------------------------------------------------------------------------

    async def run_due(self) -> int:
        """One round: claim the due jobs, mark missed ones, fire the rest; how many it handled.

        Of the due occurrences of one push only the latest may fire, and only while the push
        is still valid (fire time + ExpiredSeconds after now); the others become "missed".
        A claim is a conditional UPDATE (pending to executed or missed), so a job is handled
        by one process only; on PostgreSQL the rows are also locked with SKIP LOCKED, so two
        processes do not even try the same ones.
        """
        now = datetime.now(UTC)
        due_now = (Schedule.state == PENDING, Schedule.fire_at <= now, FIRES)
        # A plain read first: most rounds find nothing and should not take the write lock.
        async with self._store.session() as session:
            if await session.scalar(select(Schedule.id).where(*due_now).limit(1)) is None:
                return 0
        claimed: list[_Claimed] = []
        async with self._store.write() as session:
            due = (
                await session.execute(
                    select(
                        Schedule.id,
                        Schedule.unique_id,
                        Schedule.parent_id,
                        Schedule.app_pk,
                        Schedule.strategy_type,
                        Schedule.fire_at,
                        Schedule.request,
                    )
                    .where(*due_now)
                    .order_by(Schedule.fire_at, Schedule.id)
                    .limit(CLAIM_BATCH)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not due:
                return 0
            parents = {row.parent_id for row in due}
            latest = dict(
                (
                    await session.execute(
                        select(Schedule.parent_id, func.max(Schedule.fire_at))
                        .where(Schedule.parent_id.in_(parents), Schedule.fire_at <= now, FIRES)
                        .group_by(Schedule.parent_id)
                    )
                ).all()
            )
            requests: dict[str, dict[str, Any]] = dict(
                (
                    await session.execute(
                        select(Schedule.unique_id, Schedule.request).where(
                            Schedule.unique_id.in_(parents)
                        )
                    )
                ).all()
            )
            for row in due:
                request = requests[row.parent_id]
                expired_seconds = int(request["fields"]["expired_seconds"])
                valid_until = row.fire_at + timedelta(seconds=expired_seconds)
                missed = None
                if row.fire_at < latest[row.parent_id]:
                    missed = (
                        f"missed: due at {iso_utc(row.fire_at)}; a later occurrence (due at "
                        f"{iso_utc(latest[row.parent_id])}) was also due when the server got "
                        "to it, and only the latest one may be sent"
                    )
                elif valid_until <= now:
                    missed = (
                        f"missed: due at {iso_utc(row.fire_at)}; its validity (ExpiredSeconds "
                        f"{expired_seconds}) ended at {iso_utc(valid_until)}, before the server "
                        "could send it"
                    )
                values: dict[str, Any] = (
                    {"state": MISSED, "detail": missed}
                    if missed
                    else {"state": EXECUTED, "executed_at": now}
                )
                result = await session.execute(
                    update(Schedule)
                    .where(Schedule.id == row.id, Schedule.state == PENDING)
                    .values(**values)
                )
                if rowcount(result) != 1:
                    continue  # another process had it
                if missed:
                    logger.info("scheduled push missed: job=%s %s", row.unique_id, missed)
                    continue
                occurrence = None
                if row.unique_id != row.parent_id:
                    occurrence = date.fromisoformat(row.request["occurrence"])
                claimed.append(
                    _Claimed(row.id, row.unique_id, row.app_pk, row.fire_at, request, occurrence)
                )
            await close_cycles(session, parents)
        await asyncio.gather(*(self._fire(job) for job in claimed))
        return len(due)

    async def _fire(self, job: _Claimed) -> None:
        """Make the push of a claimed job and record its task, or why it was refused."""
        request = request_from(job.request)
        expired_seconds = request.expired_seconds or 0
        late = datetime.now(UTC) - job.fire_at
        left = max(1, math.ceil(expired_seconds - late.total_seconds()))
        suffix = occurrence_suffix(job.local_date) if job.local_date else ""
        push = for_occurrence(request, suffix, expired_seconds=min(left, expired_seconds))
        values: dict[str, Any]
        try:
            if isinstance(push, BroadcastRequest):
                task_id = await self._pushes.broadcast(job.app_pk, push, schedule_id=job.unique_id)
            else:
                task_id = await self._pushes.push(job.app_pk, push, schedule_id=job.unique_id)
        except BusinessError as exc:
            detail = f"refused when it fired: {exc.result_code} {exc.name}: {exc.detail}"
            logger.warning(
                "scheduled push refused: job=%s code=%d %s",
                job.unique_id,
                exc.result_code,
                exc.name,
            )
            values = {"state": FAILED, "detail": detail}
        except Exception:
            logger.exception("scheduled push failed: job=%s", job.unique_id)
            values = {"state": FAILED, "detail": "openmps failed to make the push; see its log"}
        else:
            logger.info("scheduled push fired: job=%s task=%d", job.unique_id, task_id)
            values = {"task_pk": task_id}
        try:
            async with self._store.write() as session:
                await session.execute(
                    update(Schedule).where(Schedule.id == job.row_id).values(**values)
                )
        except Exception:
            # The task carries the job id (tasks.schedule_id); recover() links it on start.
            logger.exception("could not record the outcome of job=%s", job.unique_id)

    async def recover(self) -> int:
        """Jobs claimed by a process that was killed before it recorded their task: link the
        task if the push was stored, else make the job pending again (the firing rules then
        send it or mark it missed). Returns how many jobs were made pending again.

        Should another process still be making that push, the second attempt repeats the
        first exactly (same targets, msgKeys, content), and an exact repeat answers the first
        task instead of storing a second one.
        """
        async with self._store.write() as session:
            orphans = (
                await session.execute(
                    select(Schedule.id, Schedule.unique_id).where(
                        Schedule.state == EXECUTED,
                        Schedule.task_pk.is_(None),
                        Schedule.detail.is_(None),
                        FIRES,
                    )
                )
            ).all()
            if not orphans:
                return 0
            ids = [unique_id for _, unique_id in orphans]
            tasks = dict(
                (
                    await session.execute(
                        select(Task.schedule_id, func.min(Task.id))
                        .where(Task.schedule_id.in_(ids))
                        .group_by(Task.schedule_id)
                    )
                ).all()
            )
            again = 0
            for row_id, unique_id in orphans:
                values: dict[str, Any] = (
                    {"task_pk": tasks[unique_id]}
                    if unique_id in tasks
                    else {"state": PENDING, "executed_at": None}
                )
                result = await session.execute(
                    update(Schedule)
                    .where(
                        Schedule.id == row_id,
                        Schedule.state == EXECUTED,
                        Schedule.task_pk.is_(None),
                    )
                    .values(**values)
                )
                again += rowcount(result) if unique_id not in tasks else 0
        logger.info("scheduler recovered %d claimed jobs: %d to fire again", len(orphans), again)
        return again
