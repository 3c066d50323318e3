"""Review (status -1): which pushes of an app wait for approval before they go out.

An app's ``review_rule`` names the kinds of push that are held (docs/review.md):

- ``none``: nothing is held (the default);
- ``broadcast``: every PushBroadcast;
- ``batch``: every PushMultiple and PushBroadcast;
- ``all``: every push.

A held push is stored like any other, with status -1 (WaitingForVerify) on each of its
targets, and nothing is sent. Approval gives the targets the status they would have had and
sends; rejection makes them final (status -1 kept, detail ``rejected``); a held push whose
validity runs out expires like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select, update

from openmps.errors import BusinessError
from openmps.statuses import DEVICE_NOT_ONLINE, NO_BIND_INFO, WAITING_FOR_VERIFY
from openmps.store import App, Delivery, Message, Store, Task

if TYPE_CHECKING:
    from openmps.push import Pushes

logger = logging.getLogger(__name__)

REVIEW_RULES = ("none", "broadcast", "batch", "all")
REVIEW_PENDING = "pending"
REVIEW_APPROVED = "approved"
REVIEW_REJECTED = "rejected"
# Approved from the command line: the running server makes the approval (and sends) on its
# next sweep, because only it holds the device connections.
REVIEW_APPROVING = "approving"

_HELD_KINDS = {
    "none": frozenset(),
    "broadcast": frozenset({"broadcast"}),
    "batch": frozenset({"multiple", "broadcast"}),
    "all": frozenset({"simple", "template", "multiple", "broadcast"}),
}


def needs_review(rule: str, kind: str) -> bool:
    """Whether a push of ``kind`` waits for approval under ``rule``."""
    return kind in _HELD_KINDS.get(rule, frozenset())


async def review_rules(session: Any, apps: Iterable[int]) -> dict[int, str]:
    """The review rule of each app (one query)."""
    rows = (await session.execute(select(App.id, App.review_rule).where(App.id.in_(apps)))).all()
    return {app_pk: rule or "none" for app_pk, rule in rows}


@dataclass(frozen=True)
class Held:
    """A task waiting for review."""

    task_id: int
    kind: str
    task_name: str | None
    created_at: datetime
    expires_at: datetime
    targets: int

    def as_json(self) -> dict[str, Any]:
        return {
            "task_id": str(self.task_id),
            "kind": self.kind,
            "task_name": self.task_name,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "targets": self.targets,
        }


def _refusal(name: str, detail: str) -> BusinessError:
    return BusinessError(3028, name, detail)


class Reviews:
    """Approve or reject held pushes; set an app's rule. Both front doors and the CLI call it."""

    def __init__(self, store: Store, pushes: Pushes | None) -> None:
        self._store = store
        self._pushes = pushes  # None in the CLI: approvals are then left to the server

    async def set_rule(self, app_pk: int, rule: str) -> None:
        if rule not in REVIEW_RULES:
            raise _refusal(
                "INVALID_PARAM", f"unknown review rule {rule!r}; one of: {', '.join(REVIEW_RULES)}"
            )
        async with self._store.write() as session:
            await session.execute(update(App).where(App.id == app_pk).values(review_rule=rule))

    async def rule(self, app_pk: int) -> str:
        return (await review_rules_of(self._store, [app_pk])).get(app_pk, "none")

    async def held(self, app_pk: int) -> list[Held]:
        """The app's tasks waiting for review, oldest first."""
        async with self._store.session() as session:
            tasks = (
                await session.scalars(
                    select(Task)
                    .where(
                        Task.app_pk == app_pk,
                        Task.review.in_([REVIEW_PENDING, REVIEW_APPROVING]),
                        Task.expires_at > datetime.now(UTC),  # expired: nothing left to decide
                    )
                    .order_by(Task.id)
                )
            ).all()
            out = []
            for task in tasks:
                count = await session.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .join(Message, Message.id == Delivery.message_pk)
                    .where(Message.task_pk == task.id)
                )
                out.append(
                    Held(
                        task.id,
                        task.kind,
                        task.task_name,
                        task.created_at,
                        task.expires_at,
                        count or 0,
                    )
                )
        return out

    async def approve(self, app_pk: int | None, task_id: int) -> int:
        """Release a held task: its targets get the status they would have had, and it is sent.
        Returns the deliveries released. Without a running server (the CLI) the task is marked
        for the server to release on its next sweep, and 0 is returned."""
        now = datetime.now(UTC)
        async with self._store.write() as session:
            await self._claim(
                session,
                app_pk,
                task_id,
                REVIEW_APPROVING if self._pushes is None else REVIEW_APPROVED,
                now,
            )
            if self._pushes is None:
                return 0
            released = await _release(session, task_id, now)
        await self._pushes.dispatch_task(task_id)
        logger.info("review approved: task=%d deliveries=%d", task_id, released)
        return released

    async def reject(self, app_pk: int | None, task_id: int) -> int:
        """Refuse a held task: its targets become final (status -1, detail ``rejected``) and
        nothing is ever sent. Returns the deliveries stopped."""
        now = datetime.now(UTC)
        async with self._store.write() as session:
            await self._claim(session, app_pk, task_id, REVIEW_REJECTED, now)
            result = await session.execute(
                update(Delivery)
                .where(
                    Delivery.message_pk.in_(_messages_of(task_id)),
                    Delivery.final.is_(False),
                )
                .values(final=True, detail="rejected", updated_at=now)
            )
        stopped = int(getattr(result, "rowcount", 0) or 0)
        logger.info("review rejected: task=%d deliveries=%d", task_id, stopped)
        return stopped

    async def release_approving(self) -> int:
        """Approve the tasks the CLI marked (server side); returns how many."""
        async with self._store.session() as session:
            waiting = (
                await session.scalars(select(Task.id).where(Task.review == REVIEW_APPROVING))
            ).all()
        for task_id in waiting:
            try:
                await self.approve(None, task_id)
            except BusinessError:  # another process took it, or it was rejected meanwhile
                continue
        return len(waiting)

    async def _claim(
        self, session: Any, app_pk: int | None, task_id: int, state: str, now: datetime
    ) -> None:
        """Move the task out of review, once: a second decision is refused."""
        task = await session.get(Task, task_id)
        if task is None or (app_pk is not None and task.app_pk != app_pk):
            raise _refusal("TASK_NOT_FOUND", f"this app has no task {task_id}")
        if task.review in (REVIEW_PENDING, REVIEW_APPROVING) and task.expires_at <= now:
            raise _refusal(
                "NOT_PENDING",
                f"task {task_id} expired before it was reviewed; its targets are final",
            )
        allowed = [REVIEW_PENDING]
        if state in (REVIEW_APPROVED, REVIEW_REJECTED):
            allowed.append(REVIEW_APPROVING)
        result = await session.execute(
            update(Task)
            .where(Task.id == task_id, Task.review.in_(allowed))
            .values(review=state, reviewed_at=now)
        )
        if not getattr(result, "rowcount", 0):
            shown = task.review or "not held for review"
            raise _refusal("NOT_PENDING", f"task {task_id} is not waiting for review ({shown})")


def _messages_of(task_id: int) -> Any:
    return select(Message.id).where(Message.task_pk == task_id).scalar_subquery()


async def _release(session: Any, task_id: int, now: datetime) -> int:
    """Held targets of a task take the status they would have had without review."""
    held = and_(
        Delivery.message_pk.in_(_messages_of(task_id)),
        Delivery.final.is_(False),
        Delivery.status_channel == WAITING_FOR_VERIFY.channel.value,
        Delivery.code == WAITING_FOR_VERIFY.code,
    )
    released = 0
    for has_device, status in ((True, DEVICE_NOT_ONLINE), (False, NO_BIND_INFO)):
        device = Delivery.device_pk.is_not(None) if has_device else Delivery.device_pk.is_(None)
        result = await session.execute(
            update(Delivery)
            .where(held, device)
            .values(status_channel=status.channel.value, code=status.code, updated_at=now)
        )
        released += int(getattr(result, "rowcount", 0) or 0)
    return released


async def review_rules_of(store: Store, apps: Iterable[int]) -> dict[int, str]:
    async with store.session() as session:
        return await review_rules(session, apps)
