"""REST: analytics (docs/analytics.md), the same numbers as the MPS analytics actions.

Times are ms since the epoch; ``start`` and ``end`` count whole days, as StartTime and EndTime
do. Refusals are ``400 {"error": "invalid_param", "message"}`` naming the query parameter; a
task of another app, or none, is ``404 {"error": "unknown_task"}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from openmps.analytics import Counts, Names, TaskEntry, page_of, task_number, to_ms
from openmps.errors import BusinessError
from openmps.ids import parse_id
from openmps.rest import OwnerDep, RestError, RuntimeDep

router = APIRouter(tags=["analytics"])

NAMES = Names(
    start="start",
    end="end",
    platform="platform",
    channel="channel",
    type="type",
    task_id="task_id",
    page="page",
    page_size="page_size",
)


def _invalid(exc: BusinessError) -> RestError:
    return RestError(400, exc.name.lower(), exc.detail)


def _counts(counts: Counts) -> dict[str, Any]:
    return {
        "push_total": counts.total,
        "push_success": counts.success,
        "arrivals": counts.arrivals,
        "opens": counts.opens,
        "ignores": counts.ignores,
        "arrival_rate": float(counts.arrival_rate),
        "open_rate": float(counts.open_rate),
        "ignore_rate": float(counts.ignore_rate),
    }


def _task(entry: TaskEntry) -> dict[str, Any]:
    return {
        "task_id": str(entry.task_id),
        "task_name": entry.task_name,
        "template_id": None if entry.template_id is None else str(entry.template_id),
        "template_name": entry.template_name,
        "type": entry.kind.upper(),
        "created_at": to_ms(entry.created_at),
    }


@router.get("/v1/analytics/core")
async def core_index(
    owner: OwnerDep,
    runtime: RuntimeDep,
    start: int | None = None,
    end: int | None = None,
    platform: str | None = None,
    channel: str | None = None,
    type: str | None = None,
    task_id: str | None = None,
) -> Any:
    """Pushed, succeeded, arrived, opened and ignored messages of the tasks created from
    ``start``'s day to ``end``'s day (at most 90 days apart), with the rates in percent."""
    analytics = runtime.analytics
    try:
        window = analytics.window(start, end, NAMES)
        scope = analytics.scope(
            platform=platform, channel=channel, type_=type, task_id=task_id, names=NAMES
        )
    except BusinessError as exc:
        raise _invalid(exc) from None
    counts = await analytics.core(owner.app_pk, window, scope)
    return {"start": window.start_ms, "end": window.end_ms, **_counts(counts)}


@router.get("/v1/analytics/tasks")
async def task_list(
    owner: OwnerDep,
    runtime: RuntimeDep,
    start: int | None = None,
    task_id: str | None = None,
    task_name: str | None = None,
    page: int | None = None,
    page_size: int | None = None,
) -> Any:
    """The batch tasks (multiple, broadcast) created from ``start``'s day on, newest first;
    ``fired`` holds the later tasks of the same cyclic push."""
    analytics = runtime.analytics
    try:
        if start is None:
            raise BusinessError(3028, "INVALID_PARAM", "start is required")
        since = analytics.day_start(start, "start")
        number, size = page_of(page, page_size, NAMES)
        wanted = task_number(task_id, "task_id")
    except BusinessError as exc:
        raise _invalid(exc) from None
    entries = await analytics.task_list(
        owner.app_pk,
        since=since,
        task_id=wanted,
        task_name=task_name or None,
        page=number,
        page_size=size,
    )
    return {
        "tasks": [
            {**_task(entry), "fired": [_task(later) for later in entry.fired]} for entry in entries
        ]
    }


@router.get("/v1/analytics/tasks/{task_id}")
async def task_detail(task_id: str, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """One task's numbers; ``end`` is when the last of its messages was pushed successfully."""
    number = parse_id(task_id)
    detail = None
    if number is not None:
        detail = await runtime.analytics.task_detail(owner.app_pk, number)
    if detail is None:
        raise RestError(404, "unknown_task", f"this app has no task {task_id!r}")
    return {
        "task_id": task_id,
        "type": detail.kind.upper(),
        "start": to_ms(detail.start),
        "end": to_ms(detail.end),
        "duration_ms": detail.duration_ms,
        **_counts(detail.counts),
    }
